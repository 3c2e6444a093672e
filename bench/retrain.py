"""Benchmark: retrain-and-reattack rounds (Nguyen et al. 2015, sec. 3.3–3.4; Szegedy et al. 2014).

Runs the issue's settings and records every round's figures, the wall time and the device:

    python bench/retrain.py                       # all settings below
    python bench/retrain.py --only mnist-direct   # one of them

Settings (names → bench/results/retrain-<name>.json):
  mnist-direct       lenet-mnist, 3 rounds, direct encoding, 100 generations per evolution
  mnist-direct-300   the same with 300 generations per evolution (a bigger search budget)
  mnist-cppn         the same as mnist-direct with the CPPN encoding
  mnist-adversarial  --kind adversarial, PGD L∞ ε = 0.3 (the Madry et al. MNIST budget)
  fashion-direct     lenet-fashion on a 10,000-image Fashion-MNIST subset, direct encoding

Targets (issue 5): every round at least 8 of 10 digit classes fooled at ≥ 99%; the last round's
clean accuracy within 2 points of round 0's; mnist-direct within 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foolkit.retrain import RetrainConfig, run_rounds  # noqa: E402

SETTINGS: dict[str, dict] = {
    "mnist-direct": dict(model="lenet-mnist", dataset="mnist", rounds=3, encoding="direct", generations=100),
    "mnist-direct-300": dict(model="lenet-mnist", dataset="mnist", rounds=3, encoding="direct", generations=300),
    "mnist-cppn": dict(model="lenet-mnist", dataset="mnist", rounds=3, encoding="cppn", generations=100),
    "mnist-adversarial": dict(model="lenet-mnist", dataset="mnist", rounds=3, kind="adversarial", eps=0.3,
                              norm="linf", attack_steps=20),
    "fashion-direct": dict(model="lenet-fashion", dataset="fashion-mnist", rounds=3, encoding="direct",
                           generations=100, subset=10_000),
}


def device_name(dev: str) -> str:
    if dev.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=list(SETTINGS), action="append")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=None, help="override the number of rounds (GPU: 10)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    from foolkit.utils import resolve_device

    dev = str(resolve_device(args.device))
    for name in args.only or list(SETTINGS):
        cfg = RetrainConfig(**{**SETTINGS[name], "device": dev, "seed": 0,
                               **({"rounds": args.rounds} if args.rounds else {})})
        work = Path(tempfile.mkdtemp(prefix=f"retrain-{name}-"))
        t0 = time.time()
        rounds = run_rounds(cfg, work / "run", progress=False)
        seconds = time.time() - t0
        rows = [dataclasses.asdict(r) for r in rounds]
        record = {
            "setting": name, "config": dataclasses.asdict(cfg), "device": device_name(dev), "seconds": round(seconds, 1),
            "load_average": os.getloadavg(), "rounds": rows,
        }
        if cfg.kind == "fooling":
            record["targets"] = {
                "every_round_8_of_10_fooled_at_99": all((r["fooled_classes"] or 0) >= 8 for r in rows),
                "last_round_accuracy_within_2_points": rows[0]["clean_accuracy"] - rows[-1]["clean_accuracy"] <= 0.02,
                "under_10_minutes": seconds <= 600,
            }
        out = Path(args.out) / f"retrain-{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        shutil.copy(work / "run" / "rounds.png", out.with_suffix(".png"))
        print(json.dumps({"setting": name, "seconds": record["seconds"], "targets": record.get("targets"),
                          "rounds": [{k: r[k] for k in ("round", "clean_accuracy", "fooled_classes",
                                                        "median_confidence", "fooling_recall", "robust_accuracy",
                                                        "median_norm")} for r in rows]}))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
