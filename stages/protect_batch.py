"""`deid protect VIDEO... -o OUT_DIR`: many clips (or folders of clips), one summary table.

Folders are searched for every file ffmpeg reads as a video (probed, not guessed from the extension:
.MTS, .m2ts and .3gp recordings count), in subfolders too with `recursive` (outputs keep the relative
path); every file passed over is listed with its reason (`skipped` in summary.json, a line each on
stdout). macOS AppleDouble companions (`._clip.mp4`) are listed and ignored.

Each clip goes through stages/protect.py into `OUT_DIR/<name>.mp4` (+ `<name>.frames.csv`). No output
may replace an input, and OUT_DIR may not be an input folder: refused before any work. One run at a time
per OUT_DIR (a lock; a second run is told who holds it). A clip that fails (unreadable, or leaking) is
recorded and the others still run. `OUT_DIR/summary.{csv,md,json}` lists per clip: frames, faces found,
regions hidden, repaired hits, leaks, output.

Exit status: 0 when every clip was published with no leak; 2 when any input was a mistake (each gets a
`deid: error:` line on stderr); otherwise 1 when any clip leaked (kept aside, not published).
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import ffmpeg
import pandas as pd

from deid.core.atomic import write_json, write_text
from deid.core.errors import DeidError, LeakError
from deid.core.locks import folder_lock
from deid.stages.media import IMAGE_SUFFIXES, ffmpeg_path, probe, require_ffmpeg
from deid.stages.protect import protect_video
from deid.stages.protect_config import ProtectConfig
from deid.stages.publish import refuse_to_replace, same_file

log = logging.getLogger("deid.protect")

# ffprobe reads still images as one-frame "videos" through these demuxers.
_IMAGE_FORMATS = ("image2", "_pipe", "gif", "tiff", "bmp")


@dataclass
class Inputs:
    """What a protect run will process: (video, output path) pairs, and every file passed over, with why."""

    videos: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def expand_inputs(inputs: Sequence[Path], out_dir: Path, recursive: bool = False) -> Inputs:
    """Files as given, folders as the videos ffmpeg can read in them; one line naming the problem otherwise."""
    require_ffmpeg()
    out_dir = Path(out_dir)
    found = Inputs()
    for item in map(Path, inputs):
        if item.is_dir():
            _refuse_output_inside(item, out_dir, recursive)
            before = len(found.videos)
            _scan_folder(item, item, out_dir, recursive, found)
            if len(found.videos) == before:
                hint = "" if recursive else " (pass --recursive to search its subfolders)"
                raise DeidError(f"{item}: no video files that ffmpeg can read in this folder{hint}")
        elif item.is_file():
            found.videos.append((item, out_dir / f"{item.stem}.mp4"))
        else:
            raise DeidError(f"{item}: no such file or folder; check the path")
    outputs: dict[Path, Path] = {}
    for video, out in found.videos:
        if out in outputs:
            raise DeidError(f"{video}: its output {out} is also {outputs[out]}'s; outputs are named after the clip, "
                            "so rename one")
        outputs[out] = video
        refuse_to_replace([v for v, _ in found.videos], out)
    return found


def _refuse_output_inside(folder: Path, out_dir: Path, recursive: bool) -> None:
    inside = same_file(folder, out_dir) or (recursive and folder.resolve() in out_dir.resolve().parents)
    if inside:
        raise DeidError(f"{out_dir}: the output folder is{'' if same_file(folder, out_dir) else ' inside'} the input "
                        f"folder {folder}; protected copies there would replace originals or be taken for inputs "
                        "next time: choose another -o")


def _scan_folder(root: Path, folder: Path, out_dir: Path, recursive: bool, found: Inputs) -> None:
    for path in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if path.name.startswith("._"):
            found.skipped.append((path, "macOS AppleDouble metadata, not a video (ignored)"))
        elif path.name.startswith("."):
            found.skipped.append((path, "hidden file"))
        elif path.is_dir():
            if recursive:
                _scan_folder(root, path, out_dir, recursive, found)
            else:
                found.skipped.append((path, "a folder; pass --recursive to protect the videos in it"))
        elif path.is_file():
            why = not_a_video(path)
            if why:
                found.skipped.append((path, why))
            else:
                found.videos.append((path, out_dir / path.relative_to(root).with_suffix(".mp4")))


def not_a_video(path: Path) -> str | None:
    """Why ffmpeg cannot use `path` as a video (a light probe, no decoding), or None when it can."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "a still image, not a video"
    try:
        info = ffmpeg.probe(ffmpeg_path(path))
    except ffmpeg.Error as exc:
        lines = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        reason = lines[-1].replace(ffmpeg_path(path) + ": ", "") if lines else "ffprobe failed"
        return f"not a file ffmpeg can read ({reason})"
    if not any(s.get("codec_type") == "video" and s.get("disposition", {}).get("attached_pic") != 1
               for s in info.get("streams", [])):
        return "no video stream (audio or data only)"
    container = str(info.get("format", {}).get("format_name", ""))
    if any(kind in container for kind in _IMAGE_FORMATS):
        return f"a still image ({container}), not a video"
    return None


def protect_many(inputs: Sequence[Path], out_dir: Path, config: ProtectConfig, crf: int = 18, device: str = "auto",
                 allow_leaks: bool = False, progress: bool = True, allow_damaged: bool = False,
                 recursive: bool = False) -> int:
    out_dir = Path(out_dir)
    found = expand_inputs(inputs, out_dir, recursive)
    out_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(out_dir, f"deid protect -o {out_dir}"):
        folder = _FolderProgress([video for video, _ in found.videos], progress)
        rows = []
        for video, out in found.videos:
            rows.append(_protect_one(video, out, config, crf, device, allow_leaks, progress, allow_damaged))
            folder.clip_done(video)
        _write_summary(out_dir, rows, found.skipped, config)
    for path, why in found.skipped:
        print(f"skipped {path}: {why}")
    for row in rows:
        if row["status"] == "failed":
            print(f"deid: error: {row['reason']}", file=sys.stderr)
        elif row["reason"]:
            print(f"{Path(row['clip']).name}: {row['reason']}")
    print(f"-> {out_dir / 'summary.csv'}")
    if any(r["status"] == "failed" for r in rows):
        return 2
    ok = all(r["status"] == "published" or (allow_leaks and r["status"].startswith("published")) for r in rows)
    return 0 if ok else 1


class _FolderProgress:
    """A line per finished clip when a folder has several: clips and frames done, frames/s, ETA for the rest
    (each clip's own bar shows its frames/s and ETA)."""

    def __init__(self, videos: list[Path], enabled: bool) -> None:
        self.enabled = enabled and len(videos) > 1
        self.frames = {v: _frame_count(v) for v in videos} if self.enabled else {}
        self.done: list[Path] = []
        self.start = time.monotonic()

    def clip_done(self, video: Path) -> None:
        if not self.enabled:
            return
        self.done.append(video)
        done = sum(self.frames[v] for v in self.done)
        total = sum(self.frames.values())
        rate = done / max(time.monotonic() - self.start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        log.info("folder: %d/%d clips, %d/%d frames (%.1f frames/s, ETA %.0f s)", len(self.done), len(self.frames),
                 done, total, rate, eta)


def _frame_count(video: Path) -> int:
    try:
        return probe(video).frames
    except DeidError:
        return 0  # a clip that cannot be probed fails on its own, with its reason


def _protect_one(video: Path, out: Path, config: ProtectConfig, crf: int, device: str, allow_leaks: bool,
                 progress: bool, allow_damaged: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"clip": str(video), "status": "", "frames": None, "faces_found": None,
                           "regions_hidden": None, "repaired": None, "leaks": None, "frames_per_second": None,
                           "output": "", "reason": ""}
    try:
        summary = protect_video(video, out, config, device=device, crf=crf, allow_leaks=allow_leaks,
                                progress=progress, allow_damaged=allow_damaged)
        row.update(status="published" if not summary["leak_check"]["leaks"] else "published WITH LEAKS")
        row.update(_numbers(summary))
    except LeakError as exc:
        row.update(status="LEAKS: not published", reason=str(exc))
        row.update(_numbers(exc.summary) if exc.summary else {"output": str(out.with_name(out.stem + ".leaky.mp4"))})
    except DeidError as exc:
        row.update(status="failed", reason=str(exc))
    return row


def _numbers(summary: dict[str, Any]) -> dict[str, Any]:
    return {"frames": summary["frames"], "faces_found": summary["faces_detected"],
            "regions_hidden": summary["regions_hidden"], "repaired": summary["repair"]["repaired"],
            "leaks": summary["leak_check"]["leaks"], "frames_per_second": summary["frames_per_second"],
            "seconds_by_phase": summary.get("seconds_by_phase"), "output": summary["output"]}


def _write_summary(out_dir: Path, rows: list[dict[str, Any]], skipped: list[tuple[Path, str]],
                   config: ProtectConfig) -> None:
    columns = ["clip", "status", "frames", "faces_found", "regions_hidden", "repaired", "leaks",
               "frames_per_second", "output", "reason"]
    table = pd.DataFrame(rows, columns=columns)
    write_text(out_dir / "summary.csv", table.to_csv(index=False))
    write_text(out_dir / "summary.md", table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    write_json(out_dir / "summary.json", {"method": config.method, "search": config.search, "checker": config.checker,
                                          "repair_rounds": config.repair_rounds, "clips": rows,
                                          "skipped": [{"path": str(p), "reason": why} for p, why in skipped]})
    if rows:
        shown = table[["clip", "status", "frames", "faces_found", "regions_hidden", "repaired", "leaks", "output"]]
        print(shown.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
