"""All benchmarks in one run, one JSON: `deid bench` (or `python -m deid.bench.all`).

    python -m deid.bench.all [-o bench/results/bench.json] [--device auto] [--only extract,train,convert,evaluate]
                        [--quick] [--families original,dfaker,villain] [--part-args 'extract=--video V']

Each part is its bench script (bench/extract.py, train.py, convert.py, evaluate.py) run as its own
subprocess, so one part's crash or memory peak does not touch the others. A part that fails is recorded
as {"error": <last line of its stderr>, "returncode": N} (plus "partial": whatever JSON it still wrote),
the other parts still run, and the command exits 1 after writing the JSON.

`--quick` uses the smallest settings that still time the real code (a smoke run of a few minutes on a
2-core CPU): extract 48 frames, train `original` only for 1 warm-up + 2 timed iterations on every 4th
frame of the two videos, convert 12 frames, evaluate 4 sampled frames. Quick numbers are noisier than
the full ones (short runs, more of the time is warm-up), so compare them only with other quick runs.

`--device` goes to every part.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from deid.bench.machine import machine_info
from deid.core.atomic import write_json

ALL: tuple[str, ...] = ("extract", "train", "convert", "evaluate")
# Parts run only when named in --only: quality trains for 20 minutes.
KNOWN: tuple[str, ...] = ALL + ("quality",)
QUICK_FAMILIES: tuple[str, ...] = ("original",)
DEFAULT_OUTPUT = Path("bench") / "results" / "bench.json"
DEVICE_PARTS = ("extract", "train", "convert", "evaluate", "quality")  # the scripts that take --device

# Per part: the options of the full run and of --quick (the scripts' own defaults are the full settings).
FULL_ARGS: dict[str, list[str]] = {"extract": [], "train": [], "convert": [], "evaluate": [], "quality": []}
QUICK_ARGS: dict[str, list[str]] = {
    "extract": ["--frames", "48"],
    "train": ["--iterations", "2", "--warmup", "1", "--extract-every", "4"],
    "convert": ["--frames", "12"],
    "quality": ["--minutes", "1", "--points", "2", "--width", "32", "--frames", "5", "--clip-seconds", "1"],
    "evaluate": ["--frames", "4", "--video", str(Path(__file__).resolve().parents[1] / "tests" / "data" / "video"
                                               / "talking_1.mp4")],
}
UNITS = {"extract": "frames/s", "train": "images/s", "convert": "frames/s", "evaluate": "frames/s",
         "quality": "SW-SW at the end of the budget (lower = the donor)"}


def registered_families() -> tuple[str, ...]:
    """Every registered model family (models/swap/ and any plugin in $DEID_PLUGINS): the train part's default."""
    from deid.models.swap import FAMILIES  # imports torch: only when a list is needed

    return FAMILIES.names()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"the JSON to write (default {DEFAULT_OUTPUT}, relative to the current folder)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N], for extract, train and convert")
    parser.add_argument("--only", default=",".join(ALL),
                        help=f"comma list of parts to run (default: {','.join(ALL)}; also: quality, a 20-minute "
                             "training curve)")
    parser.add_argument("--quick", action="store_true",
                        help="smallest settings that still measure the real code: a smoke run in minutes on a CPU")
    parser.add_argument("--families", default=None,
                        help=f"model families for train (default {','.join(registered_families())}; "
                             f"with --quick {','.join(QUICK_FAMILIES)})")
    parser.add_argument("--part-args", action="append", default=[], metavar="PART=OPTIONS",
                        help="extra options for one part's script, e.g. 'extract=--video my.mp4' (repeatable)")


def _split_list(text: str | Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    items = [x.strip() for x in text.split(",")] if isinstance(text, str) else [str(x).strip() for x in text]
    items = [x for x in items if x]
    unknown = [x for x in items if x not in allowed]
    if unknown or not items:
        raise ValueError(f"{what}: {', '.join(unknown) or 'nothing given'}; choose from {', '.join(allowed)}")
    return items


def _parse_part_args(entries: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in entries:
        part, sep, options = entry.partition("=")
        if not sep or part.strip() not in KNOWN:
            raise ValueError(f"--part-args {entry!r}: expected PART=OPTIONS with PART one of {', '.join(KNOWN)}")
        out.setdefault(part.strip(), []).extend(shlex.split(options))
    return out


def run_command(args: argparse.Namespace, progress: bool) -> int:
    try:
        only = _split_list(args.only, KNOWN, "--only: unknown part")
        families = (None if args.families is None
                    else _split_list(args.families, registered_families(), "--families: unknown"))
        part_args = _parse_part_args(getattr(args, "part_args", None) or [])
    except ValueError as exc:
        print(f"deid bench: error: {exc}", file=sys.stderr)
        return 2
    result = run_all(args.output, device=args.device, only=only, quick=args.quick, families=families,
                     progress=progress, part_args=part_args)
    print(format_table(result))
    print(f"-> {args.output}")
    failed = [name for name, part in result["parts"].items() if "error" in part]
    if failed:
        print(f"deid bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def part_command(part: str, out_json: Path, device: str, quick: bool, families: Sequence[str],
                 extra: Sequence[str] = ()) -> list[str]:
    """The argv that runs one part's script, writing its JSON to `out_json`."""
    command = [sys.executable, "-m", f"deid.bench.{part}", "--out", str(out_json)]
    command += QUICK_ARGS[part] if quick else FULL_ARGS[part]
    if part in DEVICE_PARTS:
        command += ["--device", device]
    if part == "train":
        command += ["--families", ",".join(families)]
    return command + list(extra)  # last, so that they override the settings above


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_part(part: str, command: Sequence[str], out_json: Path, progress: bool) -> dict:
    """Run one part's script in its own process; its JSON, or {"error", "returncode", ...} if it failed."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore:pkg_resources is deprecated:UserWarning")
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as stderr:
        try:
            done = subprocess.run(list(command), stdout=None if progress else subprocess.DEVNULL, stderr=stderr,
                                  stdin=subprocess.DEVNULL, env=env, check=False)
            returncode = done.returncode
        except OSError as exc:  # the interpreter itself could not be started
            stderr.write(f"{type(exc).__name__}: {exc}\n")
            returncode = -1
        stderr.seek(0)
        err_text = stderr.read()
    seconds = round(time.perf_counter() - start, 1)
    data: Any = None
    if out_json.exists():
        try:
            data = json.loads(out_json.read_text())
        except (OSError, ValueError) as exc:
            err_text += f"\ncould not read {out_json.name}: {exc}"
            returncode = returncode or 1
    if returncode == 0 and isinstance(data, dict):
        data["wall_seconds"] = seconds
        return data
    if returncode == 0:
        returncode, err_text = 1, err_text + f"\n{part} wrote no JSON"
    if progress and err_text.strip():
        print("\n".join(err_text.strip().splitlines()[-20:]), file=sys.stderr)
    record: dict[str, Any] = {"error": _last_line(err_text) or f"exit status {returncode}", "returncode": returncode,
                              "command": list(command), "wall_seconds": seconds}
    if isinstance(data, dict):
        record["partial"] = data  # e.g. train: the families that did run
    return record


def _number(obj: Any, *keys: str) -> float | None:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return float(obj) if isinstance(obj, (int, float)) and not isinstance(obj, bool) else None


def _last_point(part: dict | None, key: str) -> float | None:
    curve = (part or {}).get("curve") or []
    return _number(curve[-1], key) if curve else None


def summarize(parts: Mapping[str, dict]) -> dict:
    """The headline number of each part (None where the part did not run or failed)."""
    def body(name: str) -> dict | None:
        part = parts.get(name)
        if part is None:
            return None
        return part.get("partial") if "error" in part else part

    extract, train, convert, evaluate = (body(name) for name in ALL)
    train_rates = None
    if train is not None:
        train_rates = {}
        for family in train.get("families", []):
            if isinstance(family, dict) and "family" in family:
                train_rates[family["family"]] = _number(family, "images_per_second")
    return {
        "extract_fps": _number(extract, "ours_default", "frames_per_second"),  # our stage, default settings
        "train_images_per_s": train_rates,
        "convert_fps": _number(convert, "color_avg", "frames_per_second"),  # default colour mode
        # The largest sample evaluated (1000 frames in a full run).
        "quality_sw_sw": _last_point(body("quality"), "SW-SW_mean"),
        "evaluate_fps": _number(evaluate, "identity_pass", max((evaluate or {}).get("identity_pass", {}) or {"": 0},
                                                               key=lambda k: int(k) if k.isdigit() else -1),
                                "frames_per_s"),
    }


def run_all(out: Path, device: str = "auto", only: Sequence[str] = ALL, quick: bool = False,
            families: Sequence[str] | None = None, progress: bool = True,
            part_args: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Run the chosen parts one after the other, each in its own process; write and return the JSON.

    `families` defaults to every registered family (only `original` with `quick`). `part_args` adds options to one
    part's command line, e.g. {"extract": ["--video", "my.mp4"]}.
    """
    out = Path(out)
    only = [part for part in KNOWN if part in set(only)]  # the fixed order, whatever order was given
    families = list(families) if families else list(QUICK_FAMILIES if quick else registered_families())
    part_args = dict(part_args or {})
    started = _dt.datetime.now().astimezone()
    start = time.perf_counter()
    parts: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="deid-bench-") as tmp:
        for index, part in enumerate(only, 1):
            out_json = Path(tmp) / f"{part}.json"
            command = part_command(part, out_json, device, quick, families, part_args.get(part, ()))
            if progress:
                print(f"[{index}/{len(only)}] {part}: {shlex.join(command)}", flush=True)
            parts[part] = run_part(part, command, out_json, progress)
            if progress:
                state = f"failed: {parts[part]['error']}" if "error" in parts[part] else "done"
                print(f"[{index}/{len(only)}] {part} {state} ({parts[part]['wall_seconds']} s)", flush=True)
    result = {
        "machine": machine_info(),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - start, 1),
        "quick": bool(quick),
        "device": device,
        "only": only,
        "summary": summarize(parts),
        "parts": parts,
    }
    write_json(out, result, indent=1)
    return result


def format_table(result: Mapping[str, Any]) -> str:
    """part | number | unit, one row per number (train: one per family); failures say so."""
    summary, parts = result["summary"], result["parts"]
    rows: list[tuple[str, str, str]] = []
    for part in KNOWN:
        if part not in parts:
            continue
        failed = "error" in parts[part]
        if part == "train":
            rates = summary["train_images_per_s"] or {}
            for family, rate in rates.items():
                rows.append((f"train {family}", "failed" if rate is None else f"{rate:g}", UNITS[part]))
            if not rates:
                rows.append(("train", "failed", UNITS[part]))
            continue
        value = summary["quality_sw_sw"] if part == "quality" else summary[f"{part}_fps"]
        rows.append((part, "failed" if value is None or failed else f"{value:g}", UNITS[part]))
    machine = result["machine"]
    gpu = machine.get("gpu") or "no GPU"
    header = (f"deid bench{' (quick)' if result['quick'] else ''}: {machine.get('cpu') or 'unknown CPU'}, "
              f"{machine.get('cores')} cores, {gpu}; device {result['device']}; {result['seconds']} s")
    width = max([len("part")] + [len(r[0]) for r in rows])
    nwidth = max([len("number")] + [len(r[1]) for r in rows])
    lines = [header, f"{'part':<{width}}  {'number':>{nwidth}}  unit"]
    lines += [f"{name:<{width}}  {number:>{nwidth}}  {unit}" for name, number, unit in rows]
    for part, record in parts.items():
        if "error" in record:
            lines.append(f"{part} failed (exit {record['returncode']}): {record['error']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deid.bench.all", description=__doc__.split("\n\n")[0])
    configure_parser(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-part output, only the table")
    args = parser.parse_args(argv)
    return run_command(args, progress=not args.quiet)


if __name__ == "__main__":
    sys.exit(main())
