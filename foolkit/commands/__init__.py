"""The CLI's commands, one module each; :mod:`foolkit.cli` assembles the group."""
