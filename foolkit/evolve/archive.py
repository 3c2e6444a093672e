"""MAP-Elites archive over classes: one cell per evolved class, holding the best genome seen
for that class. Batch-first: :meth:`Archive.add` takes a whole scored offspring batch.

Fitness is the log-softmax of the class (monotone in the softmax confidence, so the same
ranking as the paper's, but it keeps improving past 0.99999994 where float32 softmax
saturates to 1: :func:`foolkit.evolve.scoring.log_softmax`). One genome may hold several cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from deap import base

from foolkit.evolve import operators
from foolkit.evolve.encodings import Genomes, take


class ClassFitness(base.Fitness):
    """DEAP fitness of an elite in its class's cell: one maximised value, the log-confidence."""

    weights = (1.0,)


class Elite:
    """A DEAP-style individual view of one archive cell (genome rows + :class:`ClassFitness`)."""

    def __init__(self, cell: int, genome: Genomes, log_confidence: float, generation: int):
        self.cell, self.genome, self.generation = cell, genome, generation
        self.fitness = ClassFitness((log_confidence,))


@dataclass
class ArchiveUpdate:
    """What one :meth:`Archive.add` changed.

    ``improved`` ``(K,)`` bool: cells whose elite was replaced; ``source`` ``(K,)`` long: index in
    the batch of the new elite (-1 where unchanged); ``gain`` ``(K,)``: increase in
    log-confidence (0 where unchanged; +inf for a cell filled for the first time). All on the
    archive's device: :attr:`count` reads one number back (a host sync).
    """

    improved: torch.Tensor
    source: torch.Tensor
    gain: torch.Tensor

    @property
    def count(self) -> int:
        """How many cells improved."""
        return int(self.improved.sum())


class Archive:
    """``cells`` elites; ``fitness`` ``(K,)`` log-confidences (-inf = empty), ``found`` ``(K,)``
    the generation each elite was found in (0 = empty), ``genomes`` (K rows, once any is filled)."""

    def __init__(self, cells: int, device: torch.device | str = "cpu"):
        self.cells = int(cells)
        self.fitness = torch.full((self.cells,), float("-inf"), device=device)
        self.found = torch.zeros(self.cells, dtype=torch.long, device=device)
        self.genomes: Genomes | None = None

    @property
    def occupied(self) -> torch.Tensor:
        """``(K,)`` bool: cells holding an elite."""
        return torch.isfinite(self.fitness)

    @property
    def confidence(self) -> torch.Tensor:
        """``(K,)`` softmax confidences of the elites in [0, 1] (0 where empty)."""
        return torch.exp(self.fitness)

    def add(self, genomes: Genomes, scores: torch.Tensor, generation: int) -> ArchiveUpdate:
        """Offer a batch: ``scores`` ``(B, K)`` log-confidences of each genome in each cell.

        Each cell takes the batch's best genome for it if that strictly beats the incumbent
        (ties keep the incumbent). A NaN score counts as -inf: it neither wins nor hides the
        batch's other scores from ``max``. Returns what changed.
        """
        if scores.shape[1] != self.cells:
            raise ValueError(f"scores have {scores.shape[1]} cells, archive has {self.cells}")
        # NaN as -inf (with its infinities named: by default nan_to_num turns -inf into the lowest
        # finite float, which would fill empty cells)
        best, arg = scores.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf")).max(dim=0)
        improved = best > self.fitness
        gain = torch.where(improved, best - self.fitness, 0.0)
        source = torch.where(improved, arg, -1)
        if self.genomes is None:
            self.genomes = {k: torch.zeros((self.cells, *v.shape[1:]), dtype=v.dtype, device=v.device)
                            for k, v in genomes.items()}
        if operators.sparse_on(improved.device):  # copy only the improved cells: finding them is free here
            cells = improved.nonzero().flatten()
            if cells.numel():
                for k, v in take(genomes, arg[cells]).items():
                    self.genomes[k].index_copy_(0, cells, v)
        else:  # on an accelerator that nonzero would be a host sync, stalling the queue: each cell takes
            for k, v in take(genomes, arg).items():  # the batch's best row or keeps its own, in one pass
                self.genomes[k] = torch.where(improved.view(-1, *(1,) * (v.dim() - 1)), v, self.genomes[k])
        self.fitness = torch.where(improved, best, self.fitness)
        self.found = torch.where(improved, generation, self.found)
        return ArchiveUpdate(improved=improved, source=source, gain=gain)

    def elites(self) -> list[Elite]:
        """The occupied cells as DEAP-style individuals (for inspection, not the hot loop)."""
        if self.genomes is None:
            return []
        fit, found = self.fitness.tolist(), self.found.tolist()
        return [Elite(k, take(self.genomes, slice(k, k + 1)), fit[k], found[k]) for k in range(self.cells)
                if fit[k] != float("-inf")]

    # -- checkpoints -------------------------------------------------------------
    def state_dict(self) -> dict[str, object]:
        return {"fitness": self.fitness, "found": self.found, "genomes": self.genomes or {}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        dev = self.fitness.device
        self.fitness = state["fitness"].to(dev)  # type: ignore[union-attr]
        self.found = state["found"].to(dev)  # type: ignore[union-attr]
        genomes = state["genomes"]
        self.genomes = {k: v.to(dev) for k, v in genomes.items()} or None  # type: ignore[union-attr]
