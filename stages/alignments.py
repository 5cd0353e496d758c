"""Reading alignments.json (schema 1): the contract between extract, clean, train and convert.

An alignments file may name `faces_root`, the folder its `face` and `masks` paths are relative to
(relative to the file's own folder, or absolute). Extract leaves it out (paths are relative to its own
folder); clean writes it so that its output lists kept faces without copying a single PNG.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from deid.core.errors import DeidError

SCHEMA = 1


@dataclass(frozen=True)
class FaceRef:
    """One face of one frame, with its paths resolved."""

    frame: int
    index: int
    record: dict[str, Any]
    image: Path
    masks: dict[str, Path]

    @property
    def landmarks(self) -> np.ndarray:
        return np.asarray(self.record["landmarks"], np.float64)

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.record["matrix"], np.float64)


@dataclass(frozen=True)
class Alignments:
    folder: Path
    data: dict[str, Any]

    @property
    def faces_root(self) -> Path:
        root = Path(self.data.get("faces_root", "."))
        return root if root.is_absolute() else (self.folder / root).resolve()

    @property
    def video(self) -> dict[str, Any]:
        return self.data["video"]

    @property
    def extractor(self) -> dict[str, Any]:
        return self.data["extractor"]

    @property
    def frames(self) -> dict[str, list[dict[str, Any]]]:
        return self.data["frames"]

    def faces(self) -> Iterator[FaceRef]:
        """Every face in frame order (largest first within a frame)."""
        root = self.faces_root
        for key in sorted(self.frames, key=int):
            for index, record in enumerate(self.frames[key]):
                yield FaceRef(frame=int(key), index=index, record=record, image=root / record["face"],
                              masks={kind: root / rel for kind, rel in record.get("masks", {}).items()})

    def count_faces(self) -> int:
        return sum(len(faces) for faces in self.frames.values())


def load_alignments(folder: Path) -> Alignments:
    """Load `<folder>/alignments.json`, or raise a one-line DeidError saying what the folder is not."""
    folder = Path(folder)
    path = folder / "alignments.json"
    if not folder.is_dir():
        raise DeidError(f"{folder}: no such folder; give the output folder of `deid extract` or `deid clean`")
    if not path.is_file():
        hint = " (an extract was interrupted; re-run it to finish)" if (folder / ".alignments.partial.json").exists() else ""
        raise DeidError(f"{folder}: no alignments.json{hint}; give the output folder of `deid extract` or `deid clean`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DeidError(f"{path}: not valid JSON (line {exc.lineno}); re-run the stage that wrote it") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise DeidError(f"{path}: alignments schema {found!r}, expected {SCHEMA}; re-extract with this version of deid")
    for key in ("video", "extractor", "frames"):
        if key not in data:
            raise DeidError(f"{path}: missing '{key}'; re-run the stage that wrote it")
    return Alignments(folder=folder, data=data)
