"""Gradient-ascent fooling images (``foolkit evolve --method gradient``): Adam steps until every
class of a bundled LeNet reaches >= 99.99%, over seeds, with foolkit's objective (the class's
log-odds) and with the plain log-probability, whose gradient vanishes as p -> 1. Step counts do
not depend on the machine's speed; one torch thread, as their last bits do depend on the thread count.

Usage: python bench/evolve_gradient.py [--seeds 20]; writes bench/results/evolve-gradient.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from foolkit.evolve import EvolveConfig
from foolkit.evolve.gradient import GradientAscent
from foolkit.models import load_model
from foolkit.runs import atomic_write_json

LIMIT = 100  # steps a run gets; a seed that needs more counts as LIMIT + 1


class LogProbability(GradientAscent):
    """The baseline: maximise log p itself."""

    @staticmethod
    def objective(logp: torch.Tensor) -> torch.Tensor:
        return logp


def steps_to_fool(search: GradientAscent, target: float = 0.9999) -> tuple[int, int]:
    """(steps until every class is at ``target``, or LIMIT + 1; classes there after LIMIT steps)."""
    done = LIMIT + 1
    for step in range(1, LIMIT + 1):
        search.step()
        if done > LIMIT and bool((search.archive.confidence >= target).all()):
            done = step
    return done, int((search.archive.confidence >= target).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results: dict = {"limit": LIMIT, "seeds": args.seeds, "lr": EvolveConfig().lr, "models": {}}
    for name in ("lenet-mnist", "lenet-fashion"):
        model = load_model(name, device="cpu")
        classes = list(range(len(model.classes)))
        rows = {}
        for label, cls in (("log-odds", GradientAscent), ("log-probability", LogProbability)):
            runs = [steps_to_fool(cls(model, EvolveConfig(method="gradient", generations=LIMIT, seed=seed), classes))
                    for seed in range(args.seeds)]
            steps = sorted(s for s, _ in runs)
            rows[label] = {"median_steps": statistics.median(steps), "max_steps": steps[-1],
                           "not_within_limit": sum(s > LIMIT for s in steps),
                           "classes_at_9999_after_limit": [k for _, k in runs]}
            print(name, label, rows[label])
        results["models"][name] = rows
    out = Path(__file__).parent / "results" / "evolve-gradient.json"
    atomic_write_json(out, results)
    print("wrote", out)


if __name__ == "__main__":
    main()
