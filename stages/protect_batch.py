"""`deid protect VIDEO... -o OUT_DIR`: many clips (or folders of clips), one summary table.

Each clip goes through stages/protect.py into `OUT_DIR/<name>.mp4` (+ `<name>.frames.csv`). A clip that
fails (unreadable, or leaking) is recorded and the others still run. `OUT_DIR/summary.{csv,md,json}`
lists per clip: frames, faces found, regions hidden, leaks, output. Exit status 0 only when every clip
was published with no leak.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline.atomic import write_json, write_text
from pipeline.errors import DeidError, LeakError
from stages.protect import protect_video
from stages.protect_config import ProtectConfig

log = logging.getLogger("deid.protect")

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv")


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Files as given, folders as their video files (sorted); one line naming the problem otherwise."""
    videos: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise DeidError(f"{item}: no video files in this folder (looked for {', '.join(VIDEO_SUFFIXES)})")
            videos.extend(found)
        elif item.is_file():
            videos.append(item)
        else:
            raise DeidError(f"{item}: no such file or folder; check the path")
    stems: dict[str, Path] = {}
    for video in videos:
        if video.stem in stems:
            raise DeidError(f"{video}: same name as {stems[video.stem]}; outputs are named after the clip, so rename one")
        stems[video.stem] = video
    return videos


def protect_many(inputs: Sequence[Path], out_dir: Path, config: ProtectConfig, crf: int = 18, device: str = "auto",
                 allow_leaks: bool = False, progress: bool = True, allow_damaged: bool = False) -> int:
    videos = expand_inputs(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for video in videos:
        out = out_dir / f"{video.stem}.mp4"
        row = {"clip": str(video), "status": "", "frames": None, "faces_found": None, "regions_hidden": None,
               "leaks": None, "frames_per_second": None, "output": "", "reason": ""}
        try:
            summary = protect_video(video, out, config, device=device, crf=crf, allow_leaks=allow_leaks,
                                    progress=progress, allow_damaged=allow_damaged)
            row.update(status="published" if not summary["leak_check"]["leaks"] else "published WITH LEAKS",
                       frames=summary["frames"], faces_found=summary["faces_detected"],
                       regions_hidden=summary["regions_hidden"], leaks=summary["leak_check"]["leaks"],
                       frames_per_second=summary["frames_per_second"], output=summary["output"])
        except LeakError as exc:
            row.update(status="LEAKS: not published", output=str(out.with_name(out.stem + ".leaky.mp4")),
                       reason=str(exc))
        except DeidError as exc:
            row.update(status="failed", reason=str(exc))
        rows.append(row)
    table = pd.DataFrame(rows)
    write_text(out_dir / "summary.csv", table.to_csv(index=False))
    write_text(out_dir / "summary.md", table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    write_json(out_dir / "summary.json", {"method": config.method, "search": config.search, "checker": config.checker,
                                          "clips": rows})
    shown = table[["clip", "status", "frames", "faces_found", "regions_hidden", "leaks", "output"]]
    print(shown.to_string(index=False))
    for row in rows:
        if row["reason"]:
            print(f"{Path(row['clip']).name}: {row['reason']}")
    print(f"-> {out_dir / 'summary.csv'}")
    ok = all(r["status"] == "published" or (allow_leaks and r["status"].startswith("published")) for r in rows)
    return 0 if ok else 1


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
