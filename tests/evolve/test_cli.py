"""`foolkit evolve`: a real run, resume, and one-line errors for bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from foolkit.errors import FoolkitError


def test_cli_run_and_resume(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli("evolve", "--model", "lenet-mnist", "--encoding", "cppn", "-g", "2", "-p", "20", "--classes", "3,5",
            "--cppn-activations", "sine,cosine,abs", "--out", out, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert [c["index"] for c in summary["classes"]] == [3, 5] and summary["generations_done"] == 2
    assert (out / "elites" / "3_3.png").is_file() and (out / "gallery.png").is_file()
    r = cli("evolve", "--model", "lenet-mnist", "--out", out, "--resume", "-g", "4", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x)["generation"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["classes"] == [3, 5] and config["cppn_activations"] == ["sine", "cosine", "abs"]
    archive = json.loads((out / "archive.json").read_text())
    assert archive["crops"] == 1 and archive["weights"] == json.loads((out / "config.json").read_text())["weights"]


def test_a_resume_with_other_weights_is_refused(cli, one_line_error, tmp_path: Path) -> None:
    """The offspring would be scored by one network and the elites by another (the archive said
    1/10 fooled, the log 10/10)."""
    from foolkit.models.registry import WEIGHTS_DIR

    out = tmp_path / "w"
    assert cli("evolve", "-m", "lenet-mnist", "-g", "2", "-p", "8", "--out", out, "--device", "cpu").exit_code == 0
    before = (out / "log.jsonl").read_text()
    one_line_error(cli("evolve", "-m", "lenet-mnist", "--weights", WEIGHTS_DIR / "lenet-fashion.pt", "--out", out,
                       "--resume", "-g", "4", "--device", "cpu"), "other weights of lenet-mnist")
    assert (out / "log.jsonl").read_text() == before
    assert cli("evolve", "-m", "lenet-mnist", "--out", out, "--resume", "-g", "3", "--device", "cpu").exit_code == 0


@pytest.mark.parametrize("args, fragments", [
    (["-g", "-1"], ["generations"]),
    (["-g", "0"], ["generations must be >= 1"]),
    (["-p", "1"], ["population"]),
    (["--classes", "banana"], ["unknown class"]),
    (["--classes", "12"], ["out of range"]),
    (["--until", "1.5"], ["--until"]),
    (["--until", "abc"], ["--until"]),
    (["--time-limit", "soon"], ["--time-limit"]),
    (["--size", "0", "28"], ["size"]),
    (["--checkpoint-every", "0"], ["checkpoint-every"]),
    (["--encoding", "dna"], ["encoding"]),
    (["--cppn-activations", "sine,relu"], ["activations", "relu"]),
    (["--cppn-activations", "sine,sine"], ["activations"]),
    (["--resume"], ["resume"]),
    (["--method", "gradient", "-p", "50"], ["--population means nothing to --method gradient"]),  # ignored, before
    (["--method", "gradient", "--paper", "--halve-every", "5"], ["error: --halve-every, --paper mean nothing"]),
    (["--cppn-hidden", "4"], ["--cppn-hidden means nothing to the direct encoding"]),
    (["--paper", "--selection", "lagging"], ["--paper draws parents uniformly"]),
    (["--seed", "99999999999999999999"], ["seed"]),
    (["--seed", "-1"], ["seed"]),
    (["--method", "gradient", "--encoding", "cppn"], ["gradient"]),
    (["--gray"], ["--gray means nothing to lenet-mnist"]),
    (["--classes", "3,3"], ["3 given twice"]),  # accepted, before
    (["--classes", "3,,5"], ["none of them empty"]),
    (["--classes", "3,"], ["none of them empty"]),
])
def test_cli_bad_values_fail_in_one_line(cli, one_line_error, tmp_path: Path, args: list[str],
                                         fragments: list[str]) -> None:
    r = cli("evolve", "--model", "lenet-mnist", "--out", tmp_path / "x", "--device", "cpu", *args)
    one_line_error(r, *fragments)
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


def test_cli_refuses_to_overwrite_or_change_a_run(cli, one_line_error, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("evolve", "-m", "lenet-mnist", "-g", "1", "-p", "10", "--out", out, "--device", "cpu").exit_code == 0
    one_line_error(cli("evolve", "-m", "lenet-mnist", "-g", "1", "--out", out, "--device", "cpu"), "already holds a run")
    one_line_error(cli("evolve", "-m", "lenet-mnist", "-p", "50", "--resume", "--out", out, "--device", "cpu"),
                   "cannot change population")
    r = cli("evolve", "-m", "lenet-mnist", "--crops", "10", "--resume", "--out", out, "--device", "cpu")
    one_line_error(r, "cannot change crops when")  # not "size, crops": the size follows from the crops
    one_line_error(cli("evolve", "-m", "lenet-mnist", "--paper", "--resume", "--out", out, "--device", "cpu"),
                   "cannot change the paper's operators (selection, init_spread")
    one_line_error(cli("evolve", "-m", "no-such-model", "--out", tmp_path / "y"), "unknown model")
    (out / "checkpoint.pt").write_bytes(b"garbage")
    one_line_error(cli("evolve", "-m", "lenet-mnist", "--resume", "-g", "3", "--out", out, "--device", "cpu"),
                   "unreadable")


def test_cli_parsers() -> None:
    from foolkit.commands.evolve import parse_classes, parse_confidence, parse_duration

    assert parse_duration("90") == 90 and parse_duration("15m") == 900 and parse_duration("8h") == 28800
    assert parse_duration("1e3") == 1000 and parse_duration(".5h") == 1800 and parse_duration("2D") == 172800
    for bad in ("0", "-5", "1e999", "1e306d", "e3", ".", "5 min"):
        with pytest.raises(FoolkitError):
            parse_duration(bad)
    assert parse_confidence("99.99%") == pytest.approx(0.9999) and parse_confidence("0.5") == 0.5
    assert parse_classes("all") is None and parse_classes("3, cat") == ["3", "cat"]


def test_cli_paper_operators_and_until(cli, tmp_path: Path) -> None:
    out = tmp_path / "paper"
    r = cli("evolve", "-m", "lenet-mnist", "--paper", "--halve-every", "5", "-g", "3", "-p", "20", "--until", "99.99%",
            "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["selection"] == "uniform" and cfg["smooth_prob"] == 0 and cfg["halve_every"] == 5
    assert cfg["until"] == pytest.approx(0.9999)


def test_config_saved_before_the_activation_setting_keeps_all_six() -> None:
    """Runs saved before ``cppn_activations`` existed used all six activations: their genomes must
    still index the same functions when resumed."""
    from foolkit.evolve import ACTIVATIONS, EvolveConfig

    old = EvolveConfig(encoding="cppn").to_dict()
    del old["cppn_activations"]
    assert EvolveConfig.from_dict(old).cppn_activations == list(ACTIVATIONS)
    assert EvolveConfig().cppn_activations == ["sine", "sigmoid", "gaussian", "linear"]  # the paper's set


def test_kill_with_sigterm_ends_in_one_line_and_resumes(tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    base = [sys.executable, "-c", "import sys; from foolkit.cli import main; sys.exit(main())", "evolve",
            "--model", "lenet-mnist", "--device", "cpu", "-p", "20", "--checkpoint-every", "5", "--out", str(out)]
    cmd = base + ["--generations", "100000"]
    env = {**os.environ, "FOOLKIT_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    last = err.strip().splitlines()[-1]
    assert "checkpoint and elites so far saved" in last and "Traceback" not in err  # stopped after a generation
    assert f"foolkit evolve --model lenet-mnist --out {out} --resume" in last  # how to go on, as a command
    assert (out / "archive.json").is_file() and (out / "gallery.png").is_file()
    done = [json.loads(line)["generation"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert done == list(range(1, len(done) + 1))
    r = subprocess.run(base + ["--generations", str(len(done) + 2), "--resume"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    gens = [json.loads(line)["generation"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert gens == list(range(1, len(done) + 3))


def test_resume_finds_the_default_folder_and_lifts_limits(cli, tmp_path: Path, monkeypatch) -> None:
    """--resume without --out continues the folder the same options started; --until none and
    --time-limit none lift a saved limit (without them a run stopped by --until stops again at once)."""
    monkeypatch.chdir(tmp_path)
    r = cli("evolve", "-m", "lenet-mnist", "-g", "50", "-p", "20", "--until", "0.5", "--time-limit", "1h",
            "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "runs" / "evolve-lenet-mnist-direct"
    done = len((out / "log.jsonl").read_text().splitlines())
    assert done < 50 and "stopped by until" in r.stderr
    r = cli("evolve", "-m", "lenet-mnist", "--resume", "--device", "cpu")
    assert r.exit_code == 0 and len((out / "log.jsonl").read_text().splitlines()) == done  # still stopped by until
    r = cli("evolve", "-m", "lenet-mnist", "--resume", "-g", str(done + 2), "--until", "none", "--time-limit", "off",
            "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert len((out / "log.jsonl").read_text().splitlines()) == done + 2
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["until"] is None and cfg["time_limit"] is None


def test_classes_are_names_first_as_for_attack_and_resume_compares_meanings(cli, one_line_error,
                                                                             tmp_path: Path) -> None:
    """A model whose classes are named "1".."5": --classes 5 is the class named 5 (index 4), as
    `attack --target 5` would be; resuming with the same classes in another order or spelling,
    is the same run (--gray on a gray model is refused: it would change nothing)."""
    from foolkit.models import new_model, save_model

    torch.manual_seed(0)
    model = new_model("lenet", classes=["1", "2", "3", "4", "5"], input_size=(1, 28, 28), mean=[0.1], std=[0.3])
    path = save_model(model, tmp_path / "five", arch="lenet")
    out = tmp_path / "run"
    r = cli("evolve", "-m", path, "-g", "1", "-p", "6", "--classes", "5,1", "--out", out, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    assert [(c["index"], c["name"]) for c in json.loads(r.stdout)["classes"]] == [(0, "1"), (4, "5")]
    assert json.loads((out / "config.json").read_text())["config"]["classes"] == [0, 4]
    one_line_error(cli("evolve", "-m", path, "-g", "2", "--classes", "1,5", "--gray", "--resume", "--out", out,
                       "--device", "cpu"), "--gray means nothing")  # refused, not ignored
    r = cli("evolve", "-m", path, "-g", "2", "--classes", "1,5", "--resume", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    one_line_error(cli("evolve", "-m", path, "-g", "3", "--classes", "1,4", "--resume", "--out", out,
                       "--device", "cpu"), "cannot change classes")


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(cli, one_line_error, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """Out of memory in generation 1 (torch's CPU allocator raises a plain RuntimeError): one line,
    and no folder that would then block the retry the message suggests."""
    from foolkit.evolve.loop import MapElites

    def oom(self):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(MapElites, "step", oom)
    out = tmp_path / "run"
    r = cli("evolve", "-m", "lenet-mnist", "-g", "5", "--out", out, "--device", "cpu")
    one_line_error(r, "out of memory", "--batch-size")
    assert r.exit_code == 1 and not out.exists()
    kept = tmp_path / "mine"  # a folder that was there before keeps existing (empty, as it was)
    kept.mkdir()
    one_line_error(cli("evolve", "-m", "lenet-mnist", "-g", "5", "--out", kept, "--device", "cpu"), "out of memory")
    assert kept.is_dir() and not any(kept.iterdir())


def test_resume_removes_a_checkpoint_write_cut_short_and_rejects_a_foreign_config(cli, one_line_error,
                                                                                 tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("evolve", "-m", "lenet-mnist", "-g", "1", "-p", "10", "--out", out, "--device", "cpu").exit_code == 0
    stale = out / ".checkpoint.pt.abc123.tmp"  # what kill -9 during a checkpoint write leaves
    stale.write_bytes(b"x" * 1000)
    assert cli("evolve", "-m", "lenet-mnist", "-g", "2", "--resume", "--out", out, "--device", "cpu").exit_code == 0
    assert not stale.exists()
    (out / "config.json").write_text("[1, 2]")
    one_line_error(cli("evolve", "-m", "lenet-mnist", "--resume", "--out", out, "--device", "cpu"),
                   "not an evolve run's config")
    (out / "config.json").write_text(json.dumps({"model": "lenet-mnist", "config": {"generations": "many"}}))
    one_line_error(cli("evolve", "-m", "lenet-mnist", "--resume", "--out", out, "--device", "cpu"),
                   "generations must be int")


def test_gradient_needs_no_population(cli, tmp_path: Path) -> None:
    r = cli("evolve", "-m", "lenet-mnist", "--method", "gradient", "-g", "2", "--classes", "3",
            "--out", tmp_path / "g", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["method"] == "gradient" and summary["evaluations"] == 2  # one image per class and step


def test_cppn_hidden_capacity_is_an_option_and_its_use_is_logged(cli, tmp_path: Path) -> None:
    out = tmp_path / "small"
    r = cli("evolve", "-m", "lenet-mnist", "--encoding", "cppn", "--cppn-hidden", "2", "-g", "12", "-p", "20",
            "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["config"]["cppn_hidden"] == 2
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(rec["hidden_nodes"] <= 2 and 0 <= rec["hidden_full"] <= 1 for rec in log)
    assert log[-1]["hidden_full"] > 0  # twelve generations of add-node (p = 0.5) fill two slots


def test_an_out_under_a_file_is_one_line_and_exit_2(cli, one_line_error, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    r = cli("evolve", "-m", "lenet-mnist", "-g", "1", "-p", "10", "--out", tmp_path / "afile" / "sub", "--device", "cpu")
    one_line_error(r, "part of that path is a file")
    assert r.exit_code == 2 and (tmp_path / "afile").read_text() == "x"


def test_classify_crops_10_reads_ten_crop_elites_as_archive_json_does(cli, one_line_error, tmp_path: Path) -> None:
    """Elites evolved with --crops 10 fool as the ten-crop average: `classify --crops 10` gives
    archive.json's confidences, from the PNGs."""
    out = tmp_path / "run"
    r = cli("evolve", "-m", "lenet-mnist", "-g", "3", "-p", "20", "--crops", "10", "--size", "32", "32",
            "--classes", "3,7", "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    arch = json.loads((out / "archive.json").read_text())
    for c in arch["classes"]:
        r = cli("classify", out / c["image"], "-m", "lenet-mnist", "--crops", "10", "--top", "10", "--json")
        assert r.exit_code == 0, r.stderr
        row = json.loads(r.stdout)
        top = {t["label"]: t["confidence"] for t in row["top"]}
        assert abs(top[c["index"]] - c["confidence"]) < 1e-5
    small = tmp_path / "small.png"
    from foolkit.images import save_image
    save_image(torch.zeros(1, 20, 20), small)
    one_line_error(cli("classify", small, "-m", "lenet-mnist", "--crops", "10"), "only 20x20")


def test_until_keeps_its_significant_digits() -> None:
    from foolkit.commands.evolve import parse_confidence

    assert parse_confidence("99.99%") == 0.9999 and parse_confidence("1e-30") == 1e-30  # (was rounded to 0)
    assert parse_confidence("0.99999999999") == 0.99999999999


def test_resume_without_out_finds_a_run_in_the_old_default_folder(cli, tmp_path: Path, monkeypatch) -> None:
    """The default folder is named after the model's own name now, not its path's stem (which cut
    "m-lr0.05" to "m-lr0"): --resume without --out still finds a run started under the old name."""
    from foolkit.models import new_model, save_model

    torch.manual_seed(0)
    model = new_model("lenet", classes=[str(i) for i in range(10)], input_size=(1, 28, 28), mean=[0.1], std=[0.3])
    save_model(model, tmp_path / "m-lr0.05", arch="lenet")
    monkeypatch.chdir(tmp_path)
    old = Path("runs/evolve-m-lr0-direct")
    assert cli("evolve", "-m", "m-lr0.05", "-g", "1", "-p", "10", "--out", old, "--device", "cpu").exit_code == 0
    r = cli("evolve", "-m", "m-lr0.05", "-g", "2", "--resume", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    from foolkit.runs import RunDir

    assert [x["generation"] for x in RunDir(old).read_log()] == [1, 2]


@pytest.mark.parametrize("stray", ["archive.json", "gallery.png", "elites"])
def test_a_new_run_never_overwrites_outputs_left_in_its_folder(cli, one_line_error, tmp_path: Path, stray: str) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / stray).write_text("kept")
    one_line_error(cli("evolve", "-m", "lenet-mnist", "-g", "1", "-p", "10", "--out", out, "--device", "cpu"),
                   f"already holds {stray}")
    assert (out / stray).read_text() == "kept" and sorted(p.name for p in out.iterdir()) == [stray]


def test_the_resume_hint_after_ctrl_c_is_a_command_that_resumes(cli, tmp_path: Path, monkeypatch) -> None:
    """With the --weights the run was started with (without them the resume loads other weights),
    quoted for the shell."""
    import shlex
    import shutil

    from foolkit.errors import Interrupted
    from foolkit.models.registry import WEIGHTS_DIR

    def stopped(*args, **kwargs):
        raise Interrupted("interrupted after generation 3; checkpoint saved")

    monkeypatch.setattr("foolkit.evolve.run_evolution", stopped)
    weights = tmp_path / "my weights.pt"
    shutil.copy(WEIGHTS_DIR / "lenet-mnist.pt", weights)
    shutil.copy(WEIGHTS_DIR / "lenet-mnist.json", weights.with_suffix(".json"))
    out = tmp_path / "a run"
    r = cli("evolve", "-m", "lenet-mnist", "--weights", weights, "--out", out, "--device", "cpu")
    assert r.exit_code == 130
    hint = r.stderr.strip().splitlines()[-1].split("continue with `")[1].rstrip("`")
    assert shlex.split(hint) == ["foolkit", "evolve", "--model", "lenet-mnist", "--weights", str(weights),
                                 "--out", str(out), "--resume"]


def test_a_resume_without_a_checkpoint_never_overwrites_the_runs_results(cli, one_line_error, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli("evolve", "-m", "lenet-mnist", "-g", "2", "-p", "10", "--out", out, "--device", "cpu").exit_code == 0
    (out / "checkpoint.pt").unlink()
    before = (out / "archive.json").read_text()
    one_line_error(cli("evolve", "-m", "lenet-mnist", "--out", out, "--resume", "-g", "4", "--device", "cpu"),
                   "checkpoint.pt is gone", "archive.json")
    assert (out / "archive.json").read_text() == before


def test_a_run_in_use_by_another_command_is_refused_and_left_alone(cli, one_line_error, tmp_path: Path) -> None:
    """A --resume typed while the first command still runs (or still saves after Ctrl-C) would
    interleave two logs and checkpoints (generations repeated in log.jsonl)."""
    from foolkit.runs import RunDir

    out = tmp_path / "run"
    assert cli("evolve", "-m", "lenet-mnist", "-g", "2", "-p", "10", "--out", out, "--device", "cpu").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = RunDir(out)
    other.lock()  # as another process running it would hold it
    try:
        one_line_error(cli("evolve", "-m", "lenet-mnist", "--out", out, "--resume", "-g", "4", "--device", "cpu"),
                       "in use by another foolkit command")
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    finally:
        other.release()
    r = cli("evolve", "-m", "lenet-mnist", "--out", out, "--resume", "-g", "3", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(x)["generation"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_resume_makes_a_deleted_or_cut_log_whole_again(cli, tmp_path: Path) -> None:
    """The checkpoint holds every line up to it: a resume writes them back."""
    out = tmp_path / "run"
    assert cli("evolve", "-m", "lenet-mnist", "-g", "3", "-p", "10", "--out", out, "--device", "cpu").exit_code == 0
    whole = (out / "log.jsonl").read_text()
    (out / "log.jsonl").unlink()
    assert cli("evolve", "-m", "lenet-mnist", "--out", out, "--resume", "-g", "4", "--device", "cpu").exit_code == 0
    lines = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["generation"] for x in lines] == [1, 2, 3, 4] and "\n".join(lines[:3]) + "\n" == whole


def test_a_file_system_that_cannot_lock_folders_still_runs(cli, tmp_path: Path, monkeypatch) -> None:
    """(Some network mounts refuse flock on a folder: that is no other command holding the run.)"""
    import errno
    import fcntl

    def unsupported(fd, op):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    out = tmp_path / "run"
    assert cli("evolve", "-m", "lenet-mnist", "-g", "1", "-p", "10", "--out", out, "--device", "cpu").exit_code == 0
    r = cli("evolve", "-m", "lenet-mnist", "--out", out, "--resume", "-g", "2", "--device", "cpu")
    assert r.exit_code == 0, r.stderr


def test_a_size_of_another_aspect_ratio_says_what_the_model_does_not_see(cli, tmp_path: Path) -> None:
    r = cli("evolve", "-m", "lenet-mnist", "--size", "56", "40", "-g", "1", "-p", "10", "--out", tmp_path / "a",
            "--device", "cpu")
    assert r.exit_code == 0 and "sees the centre 40x40 of these 56x40 images" in r.stderr
    r = cli("evolve", "-m", "lenet-mnist", "--size", "56", "56", "-g", "1", "-p", "10", "--out", tmp_path / "b",
            "--device", "cpu")
    assert r.exit_code == 0 and "sees the centre" not in r.stderr


def test_ten_crops_at_the_models_own_size_say_they_are_the_image_and_its_mirror(cli, tmp_path: Path) -> None:
    r = cli("evolve", "-m", "lenet-mnist", "--crops", "10", "--size", "28", "28", "-g", "1", "-p", "10", "--out",
            tmp_path / "a", "--device", "cpu")
    assert r.exit_code == 0 and "five copies of the image and five of its mirror" in r.stderr
