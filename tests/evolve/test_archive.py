"""The MAP-Elites archive's update rule against a brute-force oracle."""

from __future__ import annotations

import torch

from foolkit.evolve.archive import Archive, ClassFitness


def test_add_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    arch = Archive(6)
    best = [float("-inf")] * 6
    owner: list[torch.Tensor | None] = [None] * 6
    for gen in range(1, 8):
        pixels = torch.rand(10, 1, 4, 4, generator=g)
        scores = torch.log(torch.rand(10, 6, generator=g))
        scores[3, 2] = best[2] if gen > 1 else scores[3, 2]  # a tie never replaces the incumbent
        upd = arch.add({"pixels": pixels}, scores, gen)
        for k in range(6):
            i = int(scores[:, k].argmax())
            changed = float(scores[i, k]) > best[k]
            assert bool(upd.improved[k]) == changed
            assert int(upd.source[k]) == (i if changed else -1)
            if changed:
                best[k], owner[k] = float(scores[i, k]), pixels[i]
        assert torch.allclose(arch.fitness, torch.tensor(best))
        for k in range(6):
            assert torch.equal(arch.genomes["pixels"][k], owner[k])
    assert arch.occupied.all() and len(arch.elites()) == 6
    assert isinstance(arch.elites()[0].fitness, ClassFitness)


def test_one_genome_can_hold_many_cells_and_state_round_trip() -> None:
    arch = Archive(3)
    pixels = torch.arange(2 * 4, dtype=torch.float32).view(2, 1, 2, 2)
    upd = arch.add({"pixels": pixels}, torch.log(torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.1, 0.2]])), 1)
    assert upd.count == 3 and upd.source.tolist() == [0, 0, 1]
    other = Archive(3)
    other.load_state_dict(arch.state_dict())
    assert torch.equal(other.fitness, arch.fitness) and torch.equal(other.genomes["pixels"], arch.genomes["pixels"])
