"""`deid batch`: manifests, shared extraction, kill/resume, per-pair failures, local and Ray executors.

Real short clips (cut from tests/data), tiny settings: a 4-iteration 16-channel model and 20
evaluation frames, so each pair takes well under a minute on a 2-core CPU.

The real batches are started the way a user starts them (the `deid` command) from a folder holding decoy
`pipeline/`, `models/`, `stages/`, `reports/` and `bench/` packages that leave a marker when imported:
deid's code must never come from the current directory, in the driver, the local workers or Ray's workers.
The Ray batch also lists the listening sockets of every process of its private Ray while it runs: all
must be on loopback.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from deid.pipeline.batch_manifest import load_batch, parse_sets
from deid.core.errors import ConfigError
from deid.core.locks import try_lock

from media_helpers import cut_clip

TINY = {
    "device": "cpu",
    "train": {"model": "original", "width": 16, "latent": 64, "iterations": 4, "batch_size": 4, "save_every": 1000,
              "preview_every": 0, "identity_every": 0},
    "evaluate": {"frames": 20, "au": "none"},
    "protect": {"min_face": 40},  # these clips have large faces only: the small-face search is tested in test_protect.py
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory, data_dir) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("batch_clips")
    video = data_dir / "video"
    return {
        "t1": cut_clip(video / "talking_1.mp4", folder / "t1.mp4", 1.5, audio=False),
        "t2": cut_clip(video / "talking_2.mp4", folder / "t2.mp4", 1.5, audio=False),
        "donor": cut_clip(video / "single_face.mp4", folder / "donor.mp4", 1.5, audio=False),
        "noface": cut_clip(video / "no_face.mp4", folder / "noface.mp4", 1.5, audio=False),
    }


def _manifest(path: Path, clips: dict[str, Path], names: list[str]) -> Path:
    import yaml

    targets = {"p1": "t1", "p2": "t2", "bad": "noface"}
    pairs = [{"name": n, "target": str(clips[targets[n]]), "donor": str(clips["donor"])} for n in names]
    path.write_text(yaml.safe_dump({"defaults": TINY, "pairs": pairs}))
    return path


def _deid(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deid.pipeline.cli", "-q", *args], capture_output=True, text=True,
                          timeout=timeout)


DECOYS = ("deid", "core", "pipeline", "models", "stages", "reports", "bench")


@pytest.fixture
def decoy_cwd(tmp_path) -> Path:
    """A folder a user might start a batch from, with packages named like deid's that must never be imported."""
    folder = tmp_path / "cwd"
    for name in DECOYS:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"import pathlib\n(pathlib.Path(__file__).parents[1] / 'DECOY_IMPORTED').open('a').write('{name}\\n')\n"
            f"raise ImportError('decoy {name} imported from the current directory')\n")
    return folder


def _deid_command() -> list[str]:
    """The installed `deid` command: its sys.path has no current directory, like a user's shell has."""
    script = Path(sys.executable).with_name("deid")
    if not script.exists():
        pytest.skip(f"the deid command is not installed next to {sys.executable}")
    return [str(script), "-q"]


def _no_decoy_imported(folder: Path) -> None:
    marker = folder / "DECOY_IMPORTED"
    assert not marker.exists(), f"deid imported {marker.read_text().split()} from the current directory"


def is_loopback(host: str) -> bool:
    ip = ipaddress.ip_address(host.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def listening_sockets(processes) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket in LISTEN and every unconnected UDP socket the
    processes hold (psutil, which Ray bundles)."""
    import psutil

    found = set()
    for process in processes:
        try:
            name = process.name()
            for conn in process.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr):
                    found.add((name, conn.laddr.ip, conn.laddr.port))
        except psutil.Error:  # exited meanwhile, or not ours
            continue
    return found


def watch_sockets(process: subprocess.Popen, timeout: float) -> set[tuple[str, str, int]]:
    """Every socket that `process` or any process under it listens on, sampled until it exits."""
    import psutil

    seen: set[tuple[str, str, int]] = set()
    deadline = time.monotonic() + timeout
    root = psutil.Process(process.pid)
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the batch did not finish within {timeout:.0f} s")
        try:
            seen |= listening_sockets([root, *root.children(recursive=True)])
        except psutil.Error:
            pass  # the process ended between listing and asking: nothing left to check or stop
        time.sleep(0.5)
    return seen


def _status(runs: Path) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((runs / "status.json").read_text())["pairs"]}


# --- manifests ---------------------------------------------------------------------------------------

def test_yaml_manifest_precedence_config_defaults_overrides_set(tmp_path, clips):
    base = tmp_path / "base.yaml"
    base.write_text("train: {iterations: 7, batch_size: 2}\nevaluate: {frames: 9}\nclean: {threshold: 0.5}\n")
    (tmp_path / "refs").mkdir()
    ref = tmp_path / "refs" / "a.png"
    ref.write_bytes(b"png")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "config: base.yaml\n"
        "defaults: {train: {iterations: 8}, evaluate: {frames: 10}}\n"
        "pairs:\n"
        f"  - {{name: a, target: {clips['t1']}, donor: {clips['donor']}, target_references: [refs/a.png],\n"
        "      overrides: {train: {iterations: 9}}}\n"
        f"  - {{name: b, target: {clips['t2']}, donor: {clips['donor']}, convert: {clips['t1']}}}\n")
    jobs = load_batch(manifest, tmp_path / "runs", sets=["evaluate.frames=11"])
    a, b = (job.config for job in jobs)
    assert (a.train.iterations, a.train.batch_size, a.evaluate.frames, a.clean.threshold) == (9, 2, 11, 0.5)
    assert (b.train.iterations, b.evaluate.frames) == (8, 11)
    assert a.pair == "a" and a.runs_dir == (tmp_path / "runs").resolve()
    assert a.target_references == (ref,)  # relative to the manifest's folder
    assert b.convert_video == clips["t1"] and a.convert_video is None


def test_csv_manifest_with_override_columns(tmp_path, clips):
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("name,target,donor,train.iterations,device,donor_references\n"
                        f"x,{clips['t1']},{clips['donor']},12,cpu,\n"
                        f"y,{clips['t2']},{clips['donor']},,,\n")
    x, y = (job.config for job in load_batch(manifest, tmp_path / "runs"))
    assert (x.train.iterations, x.device) == (12, "cpu")
    assert (y.train.iterations, y.device) == (100000, "auto")  # empty cells leave the defaults alone


def test_a_pair_with_bad_settings_fails_alone_and_manifest_mistakes_stop_the_batch(tmp_path, clips):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "pairs:\n"
        f"  - {{name: ok, target: {clips['t1']}, donor: {clips['donor']}}}\n"
        f"  - {{name: gone, target: {tmp_path / 'missing.mp4'}, donor: {clips['donor']}}}\n"
        f"  - {{name: typo, target: {clips['t1']}, donor: {clips['donor']}, overrides: {{train: {{iteratons: 3}}}}}}\n")
    ok, gone, typo = load_batch(manifest, tmp_path / "runs")
    assert ok.error is None and ok.config is not None
    assert gone.config is None and "missing.mp4" in gone.error and "\n" not in gone.error
    assert typo.config is None and "train.iteratons" in typo.error
    check = _deid("batch", str(manifest), "-o", str(tmp_path / "runs"), "--dry-run")
    assert check.returncode == 1 and "invalid" in check.stdout and "would run: never ran" in check.stdout
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing

    cases = {
        "pairs:\n  - {name: a, target: x, donor: y, colour: red}\n": "unknown key 'colour'",
        "pairs:\n  - {name: a/b, target: x, donor: y}\n": "plain folder name",
        "pairs:\n  - {name: a, target: x, donor: y}\n  - {name: a, target: x, donor: y}\n": "used twice",
        "defaults: {runs_dir: elsewhere}\npairs: []\n": "'runs_dir' is set by each pair",
        "pairs: []\n": "no pairs",
        "pair: [1]\n": "top-level 'pairs:'",
    }
    for text, expected in cases.items():
        manifest.write_text(text)
        with pytest.raises(ConfigError, match=expected):
            load_batch(manifest, tmp_path / "runs")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_sets(["train.iterations"])
    assert parse_sets(["train.iterations=20", "device=cpu"]) == {"train": {"iterations": 20}, "device": "cpu"}


# --- real runs -----------------------------------------------------------------------------------------

def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _ran_extract_of_donor(status: dict[str, dict]) -> list[str]:
    return [name for name, pair in status.items() if "extract:donor" in pair["ran"]]


def test_local_batch_kill_resume_failure_and_shared_donor(tmp_path, clips, decoy_cwd):
    runs = tmp_path / "runs"
    manifest = _manifest(tmp_path / "batch.yaml", clips, ["p1", "p2", "bad"])
    deid = _deid_command()

    # First run: kill the batch (the parent only, as a scheduler would) once the second pair has started.
    # Both runs start in a folder with decoy `pipeline/`, `models/`... packages: the workers must not see them.
    batch = subprocess.Popen([*deid, "batch", str(manifest), "-o", str(runs), "--workers", "1"], cwd=decoy_cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = runs / "p2" / "batch.log"
    try:
        _wait_for(lambda: log.exists() and "running" in log.read_text(), 300, "pair p2 to start a stage")
    finally:
        batch.send_signal(signal.SIGKILL)
        batch.wait()
    first = json.loads((runs / "p1" / "status.json").read_text())
    assert first["status"] == "done" and "extract:donor" in first["ran"]
    # The worker dies with the batch (no orphan keeps writing): the pair's lock is released.
    def released() -> bool:
        fd = try_lock(runs / "p2" / ".pair.lock")
        if fd is not None:
            os.close(fd)
        return fd is not None
    _wait_for(released, 30, "the killed batch's worker to exit")
    assert not (runs / "p2" / "status.json").exists()

    # Second run: p1 is skipped, p2 resumes and completes, the faceless pair fails with its reason.
    result = subprocess.run([*deid, "batch", str(manifest), "-o", str(runs), "--workers", "1"], cwd=decoy_cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr  # one pair failed
    _no_decoy_imported(decoy_cwd)
    status = _status(runs)
    assert status["p1"]["status"] == "skipped"
    assert status["p2"]["status"] == "done"
    assert status["bad"]["status"] == "failed" and "no faces" in status["bad"]["reason"]
    assert "\n" not in status["bad"]["reason"]
    assert _ran_extract_of_donor(status) == []  # the donor was extracted once, by p1 in the first run
    # p2 shares p1's donor: it started from p1's model (encoder + decoder B), p1 from scratch.
    assert "init_from" not in json.loads((runs / "p1" / "model" / "state.json").read_text())
    started = json.loads((runs / "p2" / "model" / "state.json").read_text())["init_from"]
    assert started == {"model": str(runs / "p1" / "model"), "parts": ["encoder", "decoder_b"]}

    table = pd.read_csv(runs / "status.csv")
    assert list(table["status"]) == ["skipped", "done", "failed"]
    comparison = pd.read_csv(runs / "comparison.csv")
    assert list(comparison["name"]) == ["p1", "p2"]
    assert "failed" in (runs / "comparison.html").read_text()
    # One extraction per distinct video (t1, t2, donor, noface), shared; the pairs link to them.
    assert len(list((runs / "_shared" / "extract").iterdir())) == 4
    assert (runs / "p2" / "extract" / "donor").resolve() == (runs / "p1" / "extract" / "donor").resolve()
    assert (runs / "p2" / "convert" / "t2.mp4").stat().st_size > 0
    # A batch log a person can read: no carriage-return bars, no line over 300 characters, progress lines.
    for pair in ("p1", "p2"):
        text = (runs / pair / "batch.log").read_text()
        assert "\r" not in text and max(len(line) for line in text.splitlines()) <= 300
        assert re.search(r"convert \S+: \d+/\d+ frames", text) and re.search(r"train \w+: \d+/\d+ its", text), text[-3000:]

    # A dry run reads the manifests only: the finished pairs are up to date, the failed one would retry.
    listing = _deid("batch", str(manifest), "-o", str(runs), "--dry-run")
    assert listing.returncode == 0, listing.stderr
    lines = [line.strip() for line in listing.stdout.splitlines()[1:]]
    assert len(lines) == 27 and all(line.endswith("up to date") for line in lines if line.split()[0] in ("p1", "p2"))
    assert any(line.split() == ["bad", "train", "would", "run:", "last", "run", "failed"] for line in lines)


@pytest.mark.slow  # ~2 min; by hand inside `unshare -n` (docs/install.md), the local batch test covers the same pairs in the default run
def test_ray_batch_runs_pairs_as_tasks_on_a_loopback_only_ray(tmp_path, clips, decoy_cwd):
    pytest.importorskip("ray")  # also puts Ray's bundled psutil on sys.path
    runs = tmp_path / "runs"
    manifest = _manifest(tmp_path / "batch.yaml", clips, ["p1", "p2", "bad"])
    output_file = tmp_path / "batch.out"
    with open(output_file, "w") as out:
        batch = subprocess.Popen([*_deid_command(), "batch", str(manifest), "-o", str(runs), "--executor", "ray"],
                                 cwd=decoy_cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        sockets = watch_sockets(batch, timeout=600)  # every Ray process's listening sockets, while it runs
    finally:
        if batch.poll() is None:
            batch.kill()
        batch.wait()
    output = output_file.read_text()
    assert batch.returncode == 1, output  # the faceless pair failed
    # An unauthenticated Ray reachable from the network runs any code sent to it: the private one must listen
    # on loopback only (not on the host's address, not on 0.0.0.0 or ::).
    exposed = sorted(s for s in sockets if not is_loopback(s[1]))
    assert not exposed, f"the private Ray listens beyond loopback: {exposed}"
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, f"the socket check saw too little to mean anything: {sorted(sockets)}"
    _no_decoy_imported(decoy_cwd)

    status = _status(runs)
    assert status["p1"]["status"] == "done" and status["p2"]["status"] == "done"
    assert status["bad"]["status"] == "failed" and "no faces" in status["bad"]["reason"]
    assert len(_ran_extract_of_donor(status)) == 1  # one task extracted the donor for every pair
    started = json.loads((runs / "p2" / "model" / "state.json").read_text())["init_from"]
    assert started["parts"] == ["encoder", "decoder_b"] and started["model"] == str(runs / "p1" / "model")
    assert len(list((runs / "_shared" / "extract").iterdir())) == 4
    assert list(pd.read_csv(runs / "comparison.csv")["name"]) == ["p1", "p2"]
    for pair in ("p1", "p2"):
        assert json.loads((runs / pair / "evaluate" / "reports" / "summary.json").read_text())["identity"]
        log = (runs / pair / "batch.log").read_text()
        assert "evaluate: done" in log  # each task logs into its pair's log
        assert "train ran on node " in log  # and names the Ray node it ran on
