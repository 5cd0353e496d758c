"""Model folder checkpoints: weights-only files, an atomic commit, a backup of the best, resume, signals.

    MODEL_DIR/
      model.pt        the model's state_dict (tensors only; torch.load(..., weights_only=True)); it holds
                      an `iteration` buffer, so the file alone says how far it was trained
      optimizer.pt    {"optimizer": Adam state_dict, "scaler": GradScaler state_dict, "iteration": int,
                      "grad_norms": recent gradient norms (the clipping bound's history)}
      state.json      iteration, frozen architecture and crop, config, seed, best loss, run history
      best/           the same three files at the lowest loss seen at a save

A save must never leave a model folder whose files disagree, even when killed with SIGKILL. Three
renames cannot be atomic together, so a save is a small write-ahead protocol:
  1. write `.model-<it>.pt` and `.optimizer-<it>.pt` (each complete before it gets that name);
  2. write state.json with iteration <it>: this rename is the commit;
  3. rename the two files onto model.pt and optimizer.pt.
`recover` (run by the trainer, under the folder's lock, before it loads or saves) finishes step 3 for
files of the committed iteration and deletes leftovers of a save that never committed. `load` reads
without changing anything (convert may read while training goes on): it takes the pending file of the
committed iteration when step 3 has not happened yet. best/ is written with the same protocol, from
hard links. Whatever the moment of a kill, `load` returns a model, optimizer state and state.json of one
iteration, and after `recover` the plain files model.pt, optimizer.pt and state.json agree too.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import re
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, Mapping

import torch

from models.swap import SwapModel, build_model
from pipeline.atomic import atomic_path, write_json
from pipeline.errors import DeidError

log = logging.getLogger("deid.train")

MODEL = "model.pt"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
BEST = "best"
LOCK = ".lock"
ARCH_KEYS = ("input_size", "output_size", "width", "latent")  # what build_model needs besides the family name
STATE_SCHEMA = 1
_PENDING = re.compile(r"^\.(model|optimizer)-(\d+)\.pt$")


@dataclass
class Checkpoint:
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


@contextmanager
def locked(model_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a model folder: two trainings writing one model would corrupt it."""
    model_dir = Path(model_dir)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        handle = open(model_dir / LOCK, "a+")
    except OSError as exc:
        raise DeidError(f"{model_dir}: cannot write the model folder ({exc.strerror or exc}); choose another "
                        "-o folder") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeidError(f"{model_dir} is being trained by another process; wait for it or use another "
                            "model folder") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_state(model_dir: Path) -> dict[str, Any] | None:
    """state.json of a model folder, or None when the folder holds no model yet."""
    path = Path(model_dir) / STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DeidError(f"{path}: not valid JSON (line {exc.lineno}); restore it from {BEST}/ or use a new "
                        "model folder") from None
    if not isinstance(state, dict) or state.get("schema") != STATE_SCHEMA:
        found = state.get("schema") if isinstance(state, dict) else None
        raise DeidError(f"{path}: not a deid model state (schema {found!r}, expected {STATE_SCHEMA}); "
                        "use a new model folder")
    return state


def check_frozen(state: Mapping[str, Any], frozen: Mapping[str, Any], model_dir: Path) -> None:
    """Raise a one-line error if the requested architecture/crop differs from the one the folder was trained with."""
    saved = {key: state.get("frozen", {}).get(key) for key in frozen}
    changed = [key for key in frozen if saved[key] != frozen[key]]
    if changed:
        diffs = ", ".join(f"{key} {saved[key]!r} -> {frozen[key]!r}" for key in changed)
        raise DeidError(f"{model_dir} holds a model trained with other architecture keys ({diffs}); they are frozen "
                        "for an existing model: train into a new folder, or use the settings in its state.json")


def recover(folder: Path) -> None:
    """Finish a save that committed (step 3) and delete the files of one that did not.

    Only the process that holds the folder's lock (`locked`) may call this: it deletes files that a
    running save is still writing. Readers use `load`, which never changes the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    state = read_state(folder)
    committed = state["iteration"] if state else None
    for path in folder.iterdir():
        match = _PENDING.match(path.name)
        if not match:
            if path.name.startswith(".") and ".part." in path.name and path.is_file():
                path.unlink(missing_ok=True)  # the temporary file of an atomic write that was killed
            continue
        kind, iteration = match.group(1), int(match.group(2))
        if iteration == committed:
            os.replace(path, folder / (MODEL if kind == "model" else OPTIMIZER))
            log.info("%s: finished an interrupted save of iteration %d", folder, iteration)
        else:
            path.unlink(missing_ok=True)


def save(model_dir: Path, model: dict[str, torch.Tensor], optimizer: dict[str, Any], state: dict[str, Any]) -> None:
    """Write a consistent checkpoint of `state["iteration"]` (the write-ahead protocol above)."""
    _commit(Path(model_dir), {**state, "schema": STATE_SCHEMA},
            lambda path: _torch_save(model, path), lambda path: _torch_save(optimizer, path))


def backup_best(model_dir: Path) -> None:
    """Copy the committed checkpoint into best/ (hard links where possible: no extra disk space)."""
    model_dir = Path(model_dir)
    best = model_dir / BEST
    best.mkdir(exist_ok=True)
    state = read_state(model_dir)
    assert state is not None, "backup_best before the first save"
    _commit(best, state, lambda path: _link(model_dir / MODEL, path), lambda path: _link(model_dir / OPTIMIZER, path))


def _commit(folder: Path, state: dict[str, Any], write_model: Callable[[Path], None],
            write_optimizer: Callable[[Path], None]) -> None:
    iteration = int(state["iteration"])
    recover(folder)
    pending = {MODEL: folder / f".model-{iteration}.pt", OPTIMIZER: folder / f".optimizer-{iteration}.pt"}
    write_model(pending[MODEL])
    write_optimizer(pending[OPTIMIZER])
    write_json(folder / STATE, state)  # the commit
    for name, path in pending.items():
        os.replace(path, folder / name)


def _torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())


def _link(source: Path, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(source, tmp)


def load(model_dir: Path, device: torch.device | str = "cpu", optimizer: bool = True) -> Checkpoint | None:
    """The committed checkpoint of a model folder, or None if it holds none yet.

    Read-only, so it is safe while another process trains into the folder: a save that commits while
    we read shows up as files of two iterations, and we read again.
    """
    model_dir = Path(model_dir)
    for attempt in range(3):
        state = read_state(model_dir)
        if state is None:
            return None
        iteration = state["iteration"]
        try:
            model = torch.load(_committed(model_dir, "model", iteration), map_location=device, weights_only=True)
            moments = torch.load(_committed(model_dir, "optimizer", iteration), map_location=device,
                                 weights_only=True) if optimizer else {"iteration": iteration}
        except FileNotFoundError as exc:
            if attempt < 2:
                continue  # renamed under us by a save finishing
            raise DeidError(f"{model_dir}: state.json without {Path(exc.filename).name}; restore the folder from "
                            f"{BEST}/ or train into a new folder") from None
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
            raise DeidError(f"{model_dir}: cannot read the checkpoint ({str(exc).splitlines()[0]}); restore it from "
                            f"{BEST}/ or train into a new folder") from None
        saved = int(model.get("iteration", torch.tensor(-1)))
        if saved == iteration and moments.get("iteration") == iteration:
            return Checkpoint(state=state, model=model, optimizer=moments)
    raise DeidError(f"{model_dir}: model.pt is at iteration {saved} but state.json at {iteration} (files copied by "
                    f"hand?); restore the folder from {BEST}/ or train into a new folder")


def _committed(folder: Path, kind: str, iteration: int) -> Path:
    """The file of the committed iteration: its pending name if the save has not renamed it yet."""
    pending = folder / f".{kind}-{iteration}.pt"
    return pending if pending.exists() else folder / (MODEL if kind == "model" else OPTIMIZER)


def load_model(model_dir: Path, device: torch.device | str = "cpu") -> tuple[SwapModel, dict[str, Any]]:
    """The trained model (eval mode, on `device`) and its state.json, for convert.

    state["frozen"] holds the crop: feed the model faces cut with
    `stages.train_data.frame_to_model(landmarks, model.input_size, frozen["centering"], frozen["coverage"])`
    and paste its output back with the same matrix at `model.output_size`.
    """
    saved = load(model_dir, device, optimizer=False)
    if saved is None:
        raise DeidError(f"{model_dir}: no trained model (no state.json); run `deid train` first")
    frozen = saved.state["frozen"]
    model = build_model(frozen["model"], **{key: frozen[key] for key in ARCH_KEYS})
    model.load_state_dict(saved.model)
    return model.to(device).eval(), saved.state


class StopSignals:
    """Turn SIGINT and SIGTERM into a flag the training loop checks, so it can save before it stops.

    A second Ctrl-C stops at once (KeyboardInterrupt): the last committed checkpoint stays valid.
    Handlers can only be installed from the main thread; elsewhere the flag simply never rises.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        log.warning("%s received: saving the model, then stopping (Ctrl-C again to stop without saving)",
                    signal.Signals(signum).name)

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
