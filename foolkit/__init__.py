"""foolkit: fool image classifiers, and show why they can be fooled.

Sub-packages: :mod:`foolkit.models` (classifiers that own their preprocessing),
:mod:`foolkit.data`, :mod:`foolkit.images`, :mod:`foolkit.attacks`,
:mod:`foolkit.evolve`, :mod:`foolkit.retrain`, :mod:`foolkit.memorize`.
"""

__version__ = "0.1.0"

from foolkit.errors import FoolkitError

__all__ = ["FoolkitError", "__version__"]
