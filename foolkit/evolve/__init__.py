"""Fooling images: unrecognisable images a classifier labels with ≥ 99.99% confidence
(Nguyen, Yosinski & Clune 2015), evolved with MAP-Elites on DEAP or made by gradient ascent.

In-process use (the retrain loop and the demo call this)::

    from foolkit.evolve import EvolveConfig, run_evolution
    from foolkit.models import load_model

    model = load_model("lenet-mnist", device="cpu")
    result = run_evolution(model, EvolveConfig(encoding="direct", generations=50, population=200, seed=0),
                           out=None, progress=False)
    result.images        # (K, C, H, W) in [0, 1], 8-bit exact: one elite per evolved class
    result.classes       # model class indices, result.names their names
    result.confidences   # (K,) softmax confidence of each elite in its class
    result.generations_done, result.evaluations, result.seconds, result.history  # one record per generation

``EvolveConfig(classes=[...])`` evolves a subset (indices or names), e.g. the 10 digit classes of
an 11-class model whose last class is ``fooling`` (the softmax is still over all 11). With
``out=DIR`` the run writes ``DIR/config.json``, ``log.jsonl``, atomic ``checkpoint.pt``,
``archive.json``, ``elites/<index>_<name>.png``, ``gallery.png`` and ``progress.png``, and
``resume=True`` continues it.

Pieces, for finer control:

- :class:`DirectEncoding`, :class:`CPPNEncoding` (``sample / decode / mutate / mate`` on batches;
  a CPPN's node functions are ``CPPNSpec.activations``, by default ``PAPER_ACTIVATIONS``, any of
  ``ACTIVATIONS``);
- :class:`Archive` (``add(genomes, scores, generation) -> ArchiveUpdate``), batch-first;
- :class:`MapElites` (``ask() -> offspring``; ``tell(offspring, scores) -> ArchiveUpdate``;
  ``toolbox.map(toolbox.evaluate, offspring) -> (P, K)`` scores), :class:`GradientAscent`.

On a CUDA GPU a generation makes no host sync: variation is dense there
(:func:`operators.sparse_on`), and mutation, crossover and the CPPN render are fused Triton
kernels (:mod:`variation_fused`, :mod:`cppn_fused`; torch's own passes where Triton is missing).
On the CPU variation and the CPPN's mutation and render are compiled loops (numba,
:mod:`variation_cpu`, :mod:`cppn_cpu`; torch's passes without numba or with ``FOOLKIT_NUMBA=0``).
"""

from foolkit.evolve.archive import Archive, ArchiveUpdate, ClassFitness, Elite
from foolkit.evolve.config import EvolveConfig, EvolveResult
from foolkit.evolve.cppn import ACTIVATIONS, PAPER_ACTIVATIONS, CPPNSpec
from foolkit.evolve.encodings import CPPNEncoding, DirectEncoding, Genomes
from foolkit.evolve.gradient import GradientAscent
from foolkit.evolve.loop import MapElites, make_encoding
from foolkit.evolve.runner import Interrupted, run_evolution
from foolkit.evolve.scoring import Scorer, ten_crops

__all__ = ["ACTIVATIONS", "Archive", "ArchiveUpdate", "CPPNEncoding", "CPPNSpec", "ClassFitness", "DirectEncoding",
           "Elite", "EvolveConfig", "EvolveResult", "Genomes", "GradientAscent", "Interrupted", "MapElites",
           "PAPER_ACTIVATIONS", "Scorer", "make_encoding", "run_evolution", "ten_crops"]
