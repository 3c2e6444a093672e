"""How often the direct encoding misses the paper's 50 generations: MNIST LeNet (bundled),
population 200, all ten digits to >= 99.99%, over many seeds, with foolkit's default operators
and with the steps fixed (``step_deficit=0``, as before steps were scaled by the parent cell's
deficit). Generation counts do not depend on the machine's speed; one torch thread, as their
last bits do depend on the thread count.

Usage: python bench/evolve_tail.py [--seeds 200]; writes bench/results/evolve-cpu-tail.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from foolkit.evolve import EvolveConfig, run_evolution
from foolkit.models import load_model
from foolkit.runs import atomic_write_json

LIMIT = 100  # generations a run gets; a seed that needs more counts as LIMIT + 1


def generations_to_fool(model, seed: int, **settings: float) -> int:
    res = run_evolution(model, EvolveConfig(generations=LIMIT, population=200, seed=seed, until=0.9999, **settings),
                        progress=False)
    return next((r["generation"] for r in res.history if r["at_9999"] == len(res.classes)), LIMIT + 1)


def summary(gens: list[int]) -> dict:
    s = sorted(gens)
    return {"median": statistics.median(s), "mean": round(statistics.mean(s), 2), "p90": s[int(0.9 * len(s)) - 1],
            "p95": s[int(0.95 * len(s)) - 1], "max": s[-1], "over_50": sum(g > 50 for g in s),
            "not_within_100": sum(g > LIMIT for g in s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lenet = load_model("lenet-mnist", device="cpu")
    out: dict = {"torch": torch.__version__, "threads": 1, "population": 200, "seeds": args.seeds,
                 "generations_limit": LIMIT, "note": f"a seed not done within {LIMIT} generations counts as {LIMIT + 1}"}
    for name, settings in (("default", {}), ("fixed_steps", {"step_deficit": 0.0})):
        gens = [generations_to_fool(lenet, s, **settings) for s in range(args.seeds)]
        out[name] = {"settings": settings, "summary": summary(gens), "generations": gens}
        print(name, out[name]["summary"], flush=True)
    atomic_write_json(Path(__file__).parent / "results" / "evolve-cpu-tail.json", out)


if __name__ == "__main__":
    main()
