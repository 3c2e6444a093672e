"""The MAP-Elites archive's update rule against a brute-force oracle, on the CPU's sparse update
and an accelerator's dense one (``path``)."""

from __future__ import annotations

import torch

from foolkit.evolve.archive import Archive, ClassFitness


def test_add_matches_brute_force(path: str) -> None:
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


def test_one_genome_can_hold_many_cells_and_state_round_trip(path: str) -> None:
    arch = Archive(3)
    pixels = torch.arange(2 * 4, dtype=torch.float32).view(2, 1, 2, 2)
    upd = arch.add({"pixels": pixels}, torch.log(torch.tensor([[0.9, 0.8, 0.1], [0.1, 0.1, 0.2]])), 1)
    assert upd.count == 3 and upd.source.tolist() == [0, 0, 1]
    other = Archive(3)
    other.load_state_dict(arch.state_dict())
    assert torch.equal(other.fitness, arch.fitness) and torch.equal(other.genomes["pixels"], arch.genomes["pixels"])


def test_nan_scores_neither_win_nor_block_a_cell(path: str) -> None:
    arch = Archive(3)
    scores = torch.tensor([[-1.0, -2.0, float("nan")], [float("nan"), -0.5, float("nan")]])
    upd = arch.add({"pixels": torch.arange(2.0).view(2, 1)}, scores, 1)
    assert upd.improved.tolist() == [True, True, False]
    assert arch.fitness[:2].tolist() == [-1.0, -0.5] and arch.fitness[2] == float("-inf")
    assert arch.genomes["pixels"][:2, 0].tolist() == [0.0, 1.0]


def test_minus_infinity_scores_leave_a_cell_empty(path: str) -> None:
    """Gradient ascent scores every image -inf outside its own cell: such a column must not fill
    the cell (with the lowest float and row 0's genome), whatever NaN sits beside it."""
    arch = Archive(3)
    inf = float("-inf")
    upd = arch.add({"pixels": torch.arange(3.0).view(3, 1)},
                   torch.tensor([[-0.1, inf, inf], [inf, float("nan"), inf], [inf, inf, inf]]), 1)
    assert upd.improved.tolist() == [True, False, False] and upd.count == 1
    assert arch.occupied.tolist() == [True, False, False] and arch.found.tolist() == [1, 0, 0]


def test_fitness_keeps_ranking_past_float32_softmax_saturation() -> None:
    from foolkit.evolve.scoring import log_softmax

    logits = torch.tensor([[0.0, 17.0, -3.0], [0.0, 20.0, -3.0], [0.0, 30.0, 1.0]])
    oracle = torch.log_softmax(logits.double(), dim=1)
    assert torch.softmax(logits, 1)[:, 1].eq(1.0).all()  # float32 softmax reads 1.0 for all three
    assert torch.allclose(log_softmax(logits).double(), oracle, rtol=1e-5, atol=0)  # relative: -4e-8 stays -4e-8
    arch = Archive(1)
    arch.add({"pixels": torch.zeros(1, 1)}, log_softmax(logits[:1])[:, 1:2], 1)
    upd = arch.add({"pixels": torch.ones(1, 1)}, log_softmax(logits[1:2])[:, 1:2], 2)
    assert bool(upd.improved[0])  # the gap of 20 beats the gap of 17


def test_captions_round_confidence_down() -> None:
    from foolkit.evolve.report import caption_name, format_confidence

    assert caption_name("3") == "3" and caption_name("great white shark, white shark") == "great white shark,\nwhite shark"
    assert caption_name("class number 84 with a long name indeed") == "class number 84\nwith a long name…"

    assert format_confidence(0.999858) == "99.98%"  # not a 99.99% the image did not reach
    assert format_confidence(0.99995) == "99.995%" and format_confidence(0.999995) == ">99.999%"
    assert format_confidence(0.5) == "50.00%" and format_confidence(0.0) == "0.00%"
    assert format_confidence(3e-5) == "<0.01%" and format_confidence(0.0001) == "0.01%"  # not a 0.00% it is not
