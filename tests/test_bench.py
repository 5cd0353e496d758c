"""`deid bench` (bench/all.py): every part in its own process, one JSON, failures recorded and not fatal."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from deid.bench import all as bench_all

DATA = Path(__file__).resolve().parent / "data" / "video"
needs_data = pytest.mark.skipif(not (DATA / "WolfgangLanger_Pexels.mp4").exists()
                                or not (DATA / "talking_1.mp4").exists(), reason="tests/data is missing")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_all.configure_parser(parser)
    return parser.parse_args(list(argv))


def _positive(value) -> bool:
    return isinstance(value, float) and value > 0


def test_parser_defaults_and_quick_commands(tmp_path):
    args = _args()
    assert args.output == Path("bench/results/bench.json") and args.device == "auto" and not args.quick
    assert args.only == "extract,train,convert,evaluate" and args.families is None
    train = bench_all.part_command("train", tmp_path / "t.json", "cpu", True, ["original"])
    assert train[:3] == [sys.executable, "-m", "deid.bench.train"]
    assert train[train.index("--iterations") + 1] == "2" and train[train.index("--warmup") + 1] == "1"
    assert train[train.index("--families") + 1] == "original" and train[train.index("--device") + 1] == "cpu"
    evaluate = bench_all.part_command("evaluate", tmp_path / "e.json", "cpu", True, ["original"], ["--frames", "9"])
    assert "--device" in evaluate and evaluate[-2:] == ["--frames", "9"]  # extra options come last and win


def test_bad_part_name_is_a_usage_error(tmp_path, capsys):
    assert bench_all.run_command(_args("--only", "extract,nope", "-o", str(tmp_path / "b.json")), False) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


@pytest.mark.slow  # ~35 s: every bench part end to end
@needs_data
def test_quick_bench_records_numbers_and_a_failing_part(tmp_path, capsys):
    """extract and evaluate succeed; convert is made to fail (unknown device) and must not stop the others."""
    out = tmp_path / "bench.json"
    code = bench_all.run_command(_args("--quick", "--only", "evaluate,extract,convert", "-o", str(out),
                                       "--part-args", "convert=--device nonsense"), progress=False)
    assert code == 1
    printed = capsys.readouterr().out
    assert "extract" in printed and "convert failed" in printed and str(out) in printed

    result = json.loads(out.read_text())
    assert result["quick"] is True and result["device"] == "auto"
    assert result["only"] == ["extract", "convert", "evaluate"]  # fixed order
    assert result["machine"]["cpu"] and isinstance(result["machine"]["cores"], int) and result["machine"]["cores"] >= 1
    assert result["seconds"] > 0 and result["started"]

    summary = result["summary"]
    assert _positive(summary["extract_fps"]) and _positive(summary["evaluate_fps"])
    assert summary["convert_fps"] is None and summary["train_images_per_s"] is None
    assert set(result["parts"]) == {"extract", "convert", "evaluate"}
    assert summary["extract_fps"] == result["parts"]["extract"]["ours_default"]["frames_per_second"]
    assert result["parts"]["extract"]["ours_default"]["frames"] == 48
    assert result["parts"]["evaluate"]["identity_pass"]["4"]["frames_sampled"] == 4  # of each of the 2 videos

    failed = result["parts"]["convert"]
    assert failed["returncode"] != 0 and "nonsense" in failed["error"]
    assert "error" not in result["parts"]["extract"] and "error" not in result["parts"]["evaluate"]


@pytest.mark.slow
@needs_data
def test_full_quick_bench(tmp_path):
    """All four parts with --quick through `python -m deid.bench.all` (about 2 minutes on a 2-core CPU)."""
    import subprocess

    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "deid.bench.all", "--quick", "-q", "-o", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert _positive(summary["extract_fps"]) and _positive(summary["convert_fps"])
    assert _positive(summary["evaluate_fps"])
    assert list(summary["train_images_per_s"]) == ["original"] and _positive(summary["train_images_per_s"]["original"])
    assert "train original" in done.stdout and str(out) in done.stdout
