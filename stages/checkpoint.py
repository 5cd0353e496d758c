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

state.json records the sha256 and size of the model and optimizer files of its iteration ("checksums"),
so `load` refuses a file damaged or changed after the save (a torn copy, bytes overwritten in place)
instead of resuming from weights that would silently turn into NaN. The message points at best/ when
best/ itself verifies. Note that best/ shares the inode of model.pt while the newest save is also the
best: bytes overwritten in place then damage both, and the message says best/ holds no good copy.
A save that meets a full disk, a read-only mount or missing permissions is one line; the previous
checkpoint stays as it was.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, Callable, Iterator, Mapping

import torch

from deid.core.atomic import atomic_path, write_json
from deid.core.errors import DeidError
from deid.core.plugins import PLUGINS_ENV
from deid.models.swap import FAMILIES, SwapModel, build_model

log = logging.getLogger("deid.train")

MODEL = "model.pt"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"
BEST = "best"
LOCK = ".lock"
ARCH_KEYS = SwapModel.ARCH_KEYS  # what build_model needs besides the family name (one source: models/swap)
STATE_SCHEMA = 1
_PENDING = re.compile(r"^\.(model|optimizer)-(\d+)\.pt$")
CHECKSUMS = "checksums"  # state.json key: {file name: {"sha256": hex digest, "size": bytes}}
LOAD_ATTEMPTS = 5         # reads of a folder a save keeps committing into before its files count as damaged
# What the user can do when the model folder cannot take a save, by errno.
_SAVE_FIXES = {
    errno.ENOSPC: "free some space or train into a folder on another disk (-o)",
    errno.EDQUOT: "free some space or train into a folder on another disk (-o)",
    errno.EROFS: "train into a folder on a writable disk (-o)",
    errno.EACCES: "fix the folder's permissions or train into a folder you can write (-o)",
    errno.EPERM: "fix the folder's permissions or train into a folder you can write (-o)",
    errno.ENOTDIR: "a file is in the way of a folder; train into another folder (-o)",
}
_unverified_warned: set[Path] = set()  # folders whose pre-checksum state.json was already logged


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
    model_dir = Path(model_dir)
    with disk_errors(model_dir):
        _commit(model_dir, {**state, "schema": STATE_SCHEMA},
                lambda path: _torch_save(model, path), lambda path: _torch_save(optimizer, path))


def backup_best(model_dir: Path) -> None:
    """Copy the committed checkpoint into best/ (hard links where possible: no extra disk space)."""
    model_dir = Path(model_dir)
    best = model_dir / BEST
    state = read_state(model_dir)
    assert state is not None, "backup_best before the first save"
    # Hashing the source rather than trusting state.json: a model.pt damaged since its save must not
    # become the copy every damage message sends the user to.
    checksums = {name: _checksum(model_dir / name) for name in (MODEL, OPTIMIZER)}
    for name, found in checksums.items():
        if state.get(CHECKSUMS) and state[CHECKSUMS].get(name) != found:
            raise DeidError(f"{model_dir / name}: checksum mismatch (file damaged or changed after the save), so it "
                            f"was not backed up to {BEST}/; train into a new folder")
    with disk_errors(model_dir):
        best.mkdir(exist_ok=True)
        _commit(best, {**state, CHECKSUMS: checksums}, lambda path: _link(model_dir / MODEL, path),
                lambda path: _link(model_dir / OPTIMIZER, path), checksums)


@contextmanager
def disk_errors(model_dir: Path) -> Iterator[None]:
    """Turn a write the user must fix on their side (full disk, read-only mount, permissions) into one line.

    Any other OSError is a bug and keeps its traceback.
    """
    try:
        yield
    except OSError as exc:
        fix = _SAVE_FIXES.get(exc.errno or -1)
        if fix is None:
            raise
        try:
            state = read_state(model_dir)
        except (DeidError, OSError):
            state = None
        kept = f"the checkpoint of iteration {state['iteration']} is intact" if state else "no checkpoint was saved yet"
        raise DeidError(f"{model_dir}: cannot save the model ({os.strerror(exc.errno)}); {fix}; {kept}") from None


def _commit(folder: Path, state: dict[str, Any], write_model: Callable[[Path], None],
            write_optimizer: Callable[[Path], None], checksums: dict[str, dict[str, Any]] | None = None) -> None:
    iteration = int(state["iteration"])
    recover(folder)
    pending = {MODEL: folder / f".model-{iteration}.pt", OPTIMIZER: folder / f".optimizer-{iteration}.pt"}
    try:
        write_model(pending[MODEL])
        write_optimizer(pending[OPTIMIZER])
        if checksums is None:
            checksums = {name: _checksum(path) for name, path in pending.items()}
        write_json(folder / STATE, {**state, CHECKSUMS: checksums})  # the commit
    except OSError:
        # Not committed (write_json raises only before its rename), so nothing refers to these: free the
        # space now rather than at the next `recover`, which may be far away on a full disk.
        for path in pending.values():
            path.unlink(missing_ok=True)
        raise
    for name, path in pending.items():
        os.replace(path, folder / name)


def _torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            try:
                torch.save(obj, handle)
            except RuntimeError as exc:
                # torch's zip writer turns a failed write (a full disk) into a RuntimeError about file
                # positions on its way out; the OSError it hides is what the user can act on.
                if isinstance(exc.__context__, OSError):
                    raise exc.__context__ from None
                raise
            handle.flush()
            os.fsync(handle.fileno())


def _link(source: Path, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(source, tmp)


def _checksum(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return {"sha256": _sha256(handle), "size": os.fstat(handle.fileno()).st_size}


def _sha256(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while block := handle.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()


class _Damaged(Exception):
    """A checkpoint file that is not what its state.json says was saved (reported by `load` as a DeidError)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


def load(model_dir: Path, device: torch.device | str = "cpu", optimizer: bool = True) -> Checkpoint | None:
    """The committed checkpoint of a model folder, or None if it holds none yet.

    Read-only, so it is safe while another process trains into the folder: a save that commits while
    we read shows up as files of two iterations, or as files that do not match the checksums of the
    state.json we read, and we read again. Only a mismatch under an unchanged state.json is damage.
    """
    model_dir = Path(model_dir)
    for attempt in range(LOAD_ATTEMPTS):
        last = attempt == LOAD_ATTEMPTS - 1
        state = read_state(model_dir)
        if state is None:
            return None
        iteration = state["iteration"]
        try:
            model = _read(model_dir, "model", state, device)
            moments = _read(model_dir, "optimizer", state, device) if optimizer else {"iteration": iteration}
        except FileNotFoundError as exc:
            if not last:
                continue  # renamed under us by a save finishing
            raise DeidError(f"{model_dir}: state.json without {Path(exc.filename).name}; "
                            f"{_way_out(model_dir, None)}") from None
        except _Damaged as exc:
            if not last and read_state(model_dir) != state:
                # A save committed while we read: the file belongs to the newer state.json.
                log.debug("%s: a save committed while reading (%s); reading again", model_dir, exc)
                continue
            raise DeidError(f"{exc}; {_way_out(model_dir, exc.path)}") from None
        saved = int(model.get("iteration", torch.tensor(-1)))
        if saved == iteration and moments.get("iteration") == iteration:
            return Checkpoint(state=state, model=model, optimizer=moments)
    raise DeidError(f"{model_dir}: model.pt is at iteration {saved} but state.json at {iteration} (files copied by "
                    f"hand?); {_way_out(model_dir, None)}")


def _read(folder: Path, kind: str, state: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """One file of the committed iteration, checked against state.json before torch sees a byte of it."""
    name = MODEL if kind == "model" else OPTIMIZER
    path = _committed(folder, kind, state["iteration"])
    expected = (state.get(CHECKSUMS) or {}).get(name)
    try:
        # One open file for the hash and the load: a save renaming a newer file onto this name meanwhile
        # cannot make us verify one file and load another.
        handle = open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _Damaged(path, f"cannot be read ({exc.strerror or exc})") from None
    with handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise _Damaged(path, "empty file (0 bytes: a save or a copy was cut short)")
            if expected is None:
                _warn_unverified(folder)
            elif size != expected.get("size"):
                raise _Damaged(path, f"{size} bytes but {expected.get('size')} when saved (file cut short or changed "
                                     "after the save)")
            elif _sha256(handle) != expected.get("sha256"):
                raise _Damaged(path, "checksum mismatch (file damaged or changed after the save)")
            handle.seek(0)
        except OSError as exc:
            raise _Damaged(path, f"cannot be read ({exc.strerror or exc})") from None
        try:
            obj = torch.load(handle, map_location=device, weights_only=True)
        except Exception as exc:  # damaged bytes make torch raise anything; its own text suggests weights_only=False
            if expected is not None:
                raise _Damaged(path, f"saved intact, but torch {torch.__version__} cannot read it "
                                     f"({type(exc).__name__}); use the torch version it was saved with") from None
            raise _Damaged(path, f"not a readable checkpoint ({type(exc).__name__}: damaged, or not written by "
                                 "deid)") from None
    if not isinstance(obj, dict):
        raise _Damaged(path, f"not a deid checkpoint (holds a {type(obj).__name__}, not a dict)")
    if expected is None and kind == "model" and not all(
            torch.isfinite(t).all() for t in obj.values() if isinstance(t, torch.Tensor) and t.is_floating_point()):
        # Without a checksum this is the one sign of bytes overwritten inside the tensor data; training
        # never saves non-finite weights (a NaN loss skips the step).
        raise _Damaged(path, "holds non-finite weights (file damaged after the save)")
    return obj


def _warn_unverified(folder: Path) -> None:
    if folder not in _unverified_warned:
        _unverified_warned.add(folder)
        log.info("%s: state.json predates checksums, so its files are not verified; the next save records them",
                 folder)


def _way_out(model_dir: Path, damaged: Path | None) -> str:
    """How to go on after damage: from best/ when its own files verify, else from scratch."""
    best = model_dir / BEST
    if not best.is_dir():
        return "train into a new folder"
    try:
        state = read_state(best)
        good = state is not None and all(_intact(best, kind, state, damaged) for kind in ("model", "optimizer"))
    except (DeidError, OSError):
        good = False
    if not good:
        return f"{best} holds no good copy either; train into a new folder"
    return (f"resume from the last good copy (iteration {state['iteration']}) with "
            f"`cp {shlex.quote(str(best))}/* {shlex.quote(str(model_dir))}/` or train into a new folder")


def _intact(folder: Path, kind: str, state: Mapping[str, Any], damaged: Path | None) -> bool:
    path = _committed(folder, kind, state["iteration"])
    if damaged is not None and damaged.exists() and path.exists() and os.path.samefile(path, damaged):
        return False  # a hard link to the damaged file: the same bytes
    expected = (state.get(CHECKSUMS) or {}).get(MODEL if kind == "model" else OPTIMIZER)
    found = _checksum(path)
    return found["size"] > 0 and (expected is None or found == expected)


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
    frozen = saved.state.get("frozen", {})
    if isinstance(frozen.get("model"), str) and frozen["model"] not in FAMILIES.names():
        # A model trained with a plugin family: the folder is fine, this process lacks the plugin.
        raise DeidError(f"{model_dir}: trained as model family {frozen['model']!r}, which is not registered here "
                        f"(registered: {', '.join(FAMILIES.names())}); name its plugin module in {PLUGINS_ENV}")
    try:
        model = build_model(frozen["model"], **{key: frozen[key] for key in ARCH_KEYS if key in frozen})
        model.load_state_dict(saved.model)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise DeidError(f"{model_dir}: model.pt does not match its state.json ({str(exc).splitlines()[0]}); "
                        "retrain or restore the folder from best/") from None
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
