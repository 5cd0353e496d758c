"""Checkpoint integrity: state.json records each file's sha256 and size, `load` refuses what does not match.

Real checkpoints of a real (small) `original` model written by `checkpoint.save`; the damage is done to the
files on disk the way a bad copy, an in-place write or a full disk would do it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deid.models.swap import build_model
from deid.pipeline.cli import main
from deid.core.errors import DeidError
from deid.stages import checkpoint

ARCH = {"input_size": 64, "output_size": 64, "width": 8, "latent": 16}  # ~1 MB model.pt: fast, real


def _save(model_dir: Path, iteration: int, seed: int) -> None:
    torch.manual_seed(seed)
    model = build_model("original", **ARCH)
    model.iteration.fill_(iteration)
    optimizer = torch.optim.Adam(model.parameters())
    state = {"iteration": iteration, "frozen": {**model.arch(), "centering": "face", "coverage": model.coverage},
             "best_loss": None, "best_iteration": None, "runs": []}
    checkpoint.save(model_dir, {k: v.detach() for k, v in model.state_dict().items()},
                    {"optimizer": optimizer.state_dict(), "scaler": {}, "iteration": iteration, "grad_norms": []},
                    state)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """Iteration 10 in the folder, iteration 0 in best/ (separate files, as after a save that did not improve)."""
    folder = tmp_path / "runs" / "x" / "model"
    _save(folder, 0, seed=0)
    checkpoint.backup_best(folder)
    _save(folder, 10, seed=1)
    return folder


def _state(folder: Path) -> dict:
    return json.loads((folder / "state.json").read_text())


def _refused(folder: Path, **kwargs) -> str:
    with pytest.raises(DeidError) as err:
        checkpoint.load(folder, **kwargs)
    message = str(err.value)
    assert "\n" not in message and "weights_only" not in message
    return message


def test_every_save_records_sha256_and_size_of_both_files(model_dir):
    for folder in (model_dir, model_dir / "best"):
        recorded = _state(folder)["checksums"]
        for name in ("model.pt", "optimizer.pt"):
            data = (folder / name).read_bytes()
            assert recorded[name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert _state(model_dir / "best")["iteration"] == 0


def test_bytes_overwritten_inside_model_pt_are_refused_and_best_restores(model_dir):
    path = model_dir / "model.pt"
    size = path.stat().st_size
    with open(path, "r+b") as handle:  # same size, 4 KB of noise in the middle of the tensor data
        handle.seek(size // 2)
        handle.write(os.urandom(4096))
    assert path.stat().st_size == size
    message = _refused(model_dir)
    assert message.startswith(f"{path}: checksum mismatch (file damaged or changed after the save); resume from "
                              f"the last good copy (iteration 0) with `cp {model_dir}/best/* {model_dir}/`")
    command = message.split("`")[1]
    subprocess.run(command, shell=True, check=True)  # the fix, as the user would paste it
    restored = checkpoint.load(model_dir)
    assert restored.state["iteration"] == 0
    assert all(torch.isfinite(t).all() for t in restored.model.values() if t.is_floating_point())


@pytest.mark.parametrize("name", ["model.pt", "optimizer.pt"])
def test_zero_byte_file_is_one_line(model_dir, name):
    (model_dir / name).write_bytes(b"")
    message = _refused(model_dir)
    assert message.startswith(f"{model_dir / name}: empty file (0 bytes") and "cp " in message


def test_zero_byte_model_without_checksums_is_one_line(model_dir):
    _drop_checksums(model_dir)
    (model_dir / "model.pt").write_bytes(b"")
    assert "empty file (0 bytes" in _refused(model_dir, optimizer=False)


def test_model_pt_replaced_by_random_bytes_is_one_line(model_dir):
    (model_dir / "model.pt").write_bytes(os.urandom(50_000))
    message = _refused(model_dir)
    assert message.startswith(f"{model_dir / 'model.pt'}: 50000 bytes but ") and "when saved" in message


def test_random_bytes_without_checksums_never_show_torchs_hint(model_dir):
    _drop_checksums(model_dir)
    # Which exception torch's unpickler raises depends on the bytes (UnpicklingError, IndexError, ...):
    # every seed must give the same one line, never torch's weights_only hint.
    for seed in range(4):
        (model_dir / "model.pt").write_bytes(np.random.default_rng(seed).integers(0, 256, 50_000, np.uint8).tobytes())
        message = _refused(model_dir)
        assert "model.pt: not a readable checkpoint (" in message and "damaged, or not written by deid)" in message
        assert "weights_only" not in message and "\n" not in message


def test_unreadable_model_pt_is_one_line(model_dir):
    (model_dir / "model.pt").unlink()
    (model_dir / "model.pt").mkdir()  # EISDIR even for root, who ignores permission bits
    assert "model.pt: cannot be read (Is a directory)" in _refused(model_dir)


def _drop_checksums(folder: Path) -> None:
    """What a model folder written before checksums looks like."""
    for where in (folder, folder / "best"):
        state = _state(where)
        del state["checksums"]
        (where / "state.json").write_text(json.dumps(state))


def test_a_state_json_from_before_checksums_still_loads(model_dir, caplog):
    _drop_checksums(model_dir)
    caplog.set_level(logging.INFO, logger="deid.train")
    assert checkpoint.load(model_dir).state["iteration"] == 10
    assert checkpoint.load(model_dir).state["iteration"] == 10
    assert caplog.text.count("predates checksums") == 1
    _save(model_dir, 20, seed=2)  # the next save records them
    assert set(_state(model_dir)["checksums"]) == {"model.pt", "optimizer.pt"}


def test_in_place_damage_without_checksums_is_caught_by_the_nan_it_makes(model_dir):
    _drop_checksums(model_dir)
    path = model_dir / "model.pt"
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(b"\xff" * 4096)  # 0xffffffff is a NaN as float32
    assert "holds non-finite weights" in _refused(model_dir)


def test_best_sharing_the_damaged_file_is_not_offered(tmp_path):
    """While the newest save is also the best, best/model.pt is a hard link: in-place damage hits both."""
    folder = tmp_path / "model"
    _save(folder, 0, seed=0)
    checkpoint.backup_best(folder)
    assert os.path.samefile(folder / "model.pt", folder / "best" / "model.pt")
    with open(folder / "model.pt", "r+b") as handle:
        handle.seek(100_000)
        handle.write(os.urandom(4096))
    message = _refused(folder)
    assert f"{folder / 'best'} holds no good copy either; train into a new folder" in message and "cp " not in message


def test_a_damaged_model_is_not_backed_up_as_best(model_dir):
    with open(model_dir / "model.pt", "r+b") as handle:
        handle.seek(200_000)
        handle.write(os.urandom(4096))
    best_before = (model_dir / "best" / "state.json").read_bytes()
    with pytest.raises(DeidError, match="checksum mismatch .* not backed up to best/"):
        checkpoint.backup_best(model_dir)
    assert (model_dir / "best" / "state.json").read_bytes() == best_before


def test_saves_committing_during_loads_are_read_again_not_reported(model_dir, caplog):
    """`load` may run while another process saves: a new state.json between our reads is a retry, not damage."""
    caplog.set_level(logging.DEBUG, logger="deid.train")
    stop = threading.Event()

    def keep_saving() -> None:
        iteration = 11
        while not stop.is_set():
            _save(model_dir, iteration, seed=iteration)
            iteration += 1

    saver = threading.Thread(target=keep_saving)
    saver.start()
    loads = 0
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "a save committed while reading" not in caplog.text:
            saved = checkpoint.load(model_dir)  # must never raise
            assert int(saved.model["iteration"]) == saved.state["iteration"] == saved.optimizer["iteration"]
            loads += 1
    finally:
        stop.set()
        saver.join()
    assert "a save committed while reading" in caplog.text, f"no save committed during any of {loads} loads"


def test_the_cli_prints_the_damage_as_one_line(model_dir, tmp_path, capsys):
    (model_dir / "optimizer.pt").write_bytes(os.urandom(1000))
    faces = tmp_path / "faces"  # train reads the checkpoint before any face
    assert main(["-q", "train", str(faces), str(faces), "-o", str(model_dir), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"deid: error: {model_dir / 'optimizer.pt'}: 1000 bytes but ")
    assert "\n" not in err and "Traceback" not in err and "weights_only" not in err


# --- a save that cannot be written ------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 64 KB tmpfs: room for one small checkpoint, not for a bigger one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({done.stderr.decode().strip() or 'mount failed'}); "
                    "needs root or CAP_SYS_ADMIN")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _save_tensor(folder: Path, iteration: int, values: int) -> None:
    model = {"weight": torch.full((values,), float(iteration)), "iteration": torch.tensor(iteration)}
    checkpoint.save(folder, model, {"iteration": iteration}, {"iteration": iteration, "runs": []})


@pytest.mark.parametrize("how, fix", [
    ("full", "(No space left on device); free some space or train into a folder on another disk (-o)"),
    ("read-only", "(Read-only file system); train into a folder on a writable disk (-o)"),
])
def test_a_save_that_cannot_be_written_is_one_line_and_keeps_the_last_checkpoint(small_disk, how, fix):
    folder = small_disk / "model"
    _save_tensor(folder, 1, values=1000)  # ~5 KB
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    if how == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(DeidError) as err:
        _save_tensor(folder, 2, values=40_000)  # ~160 KB: more than the disk holds
    assert str(err.value) == f"{folder}: cannot save the model {fix}; the checkpoint of iteration 1 is intact"
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert after == before  # no leftover .model-2.pt filling the disk, nothing of iteration 1 touched
    loaded = checkpoint.load(folder)
    assert loaded.state["iteration"] == 1 and float(loaded.model["weight"][0]) == 1.0
    if how == "full":
        _save_tensor(folder, 2, values=1000)  # the space came back: saves work again
        assert checkpoint.load(folder).state["iteration"] == 2
