"""`deid ravdess ROOT`: a batch manifest pairing every RAVDESS actor with a donor, split as in the study.

RAVDESS (Livingstone & Russo 2018) keeps one folder per actor, ROOT/Actor_01 .. Actor_24, and encodes
everything about a clip in its name, MM-VV-EE-II-SS-RR-AA.mp4 (.wav for audio-only). Per actor the
study trains on all of the actor's video clips concatenated into one video, and converts one clip
(by default the strong happy statement 1, first repetition). The concatenations are cached next to the
manifest with a sidecar listing the clips they were made from, so a re-run only redoes what changed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import yaml

from deid.core.atomic import write_json, write_text
from deid.core.errors import ConfigError, DeidError
from deid.stages.concat import VIDEO_SUFFIXES, concat_clips, list_clips
from deid.stages.media import IMAGE_SUFFIXES

log = logging.getLogger("deid.ravdess")

MODALITIES = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
VOCALS = {"01": "speech", "02": "song"}
EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}
SONG_EMOTIONS = ("01", "02", "03", "04", "05", "06")
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
REPETITIONS = {"01": "1st", "02": "2nd"}
ACTORS = {f"{n:02d}": f"actor {n}" for n in range(1, 25)}
FIELDS = (("modality", MODALITIES), ("vocal channel", VOCALS), ("emotion", EMOTIONS),
          ("intensity", INTENSITIES), ("statement", STATEMENTS), ("repetition", REPETITIONS), ("actor", ACTORS))
SUFFIX_OF_MODALITY = {"01": ".mp4", "02": ".mp4", "03": ".wav"}
VIDEO_MODALITIES = ("01", "02")
DEFAULT_CONVERT_CLIP = "01-01-03-02-01-01"
NAME_HINT = "RAVDESS names are MM-VV-EE-II-SS-RR-AA.mp4 (or .wav), e.g. 01-01-03-02-01-01-01.mp4"


@dataclass(frozen=True)
class RavdessClip:
    path: Path
    modality: str  # audio-video | video-only | audio-only
    vocal: str  # speech | song
    emotion: str
    intensity: str  # normal | strong
    statement: int
    repetition: int
    actor: int
    code: str  # the 7-field stem, e.g. 01-01-03-02-01-01-01

    @property
    def gender(self) -> str:
        return "male" if self.actor % 2 else "female"

    @property
    def fields(self) -> list[str]:
        return self.code.split("-")

    @property
    def is_video(self) -> bool:
        return self.fields[0] in VIDEO_MODALITIES


def parse_name(path: Path) -> RavdessClip:
    """Decode a RAVDESS file name; a DeidError names the file, the bad field and its allowed values."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".wav"):
        raise DeidError(f"{path}: extension '{path.suffix}' is not .mp4 or .wav ({NAME_HINT}); rename or remove it")
    codes = _parse_fields(path.stem, str(path), count=7)
    if SUFFIX_OF_MODALITY[codes[0]] != suffix:
        raise DeidError(f"{path}: modality {codes[0]} ({MODALITIES[codes[0]]}) must be a "
                        f"{SUFFIX_OF_MODALITY[codes[0]]} file, not {path.suffix}; rename or remove it")
    return RavdessClip(path=path, modality=MODALITIES[codes[0]], vocal=VOCALS[codes[1]], emotion=EMOTIONS[codes[2]],
                       intensity=INTENSITIES[codes[3]], statement=int(codes[4]), repetition=int(codes[5]),
                       actor=int(codes[6]), code=path.stem)


def _parse_fields(code: str, where: str, count: int) -> list[str]:
    """Check the first `count` RAVDESS fields of `code`; `where` names the file or option in errors."""
    fix = "rename or remove it" if count == 7 else f"give {count} fields like {DEFAULT_CONVERT_CLIP}"
    codes = code.split("-")
    if len(codes) != count:
        raise DeidError(f"{where}: '{code}' has {len(codes)} fields, expected {count} ({NAME_HINT}); {fix}")
    for value, (field, allowed) in zip(codes, FIELDS):
        if not re.fullmatch(r"\d\d", value):
            raise DeidError(f"{where}: {field} '{value}' is not a two-digit number ({NAME_HINT}); {fix}")
        if value not in allowed:
            choices = "01..24" if field == "actor" else ", ".join(f"{k} {v}" for k, v in allowed.items())
            raise DeidError(f"{where}: {field} '{value}' is not one of {choices}; {fix}")
    if codes[2] == "01" and codes[3] == "02":
        raise DeidError(f"{where}: intensity 02 (strong) with emotion 01 (neutral): RAVDESS neutral has "
                        f"intensity 01 only; {fix}")
    if codes[1] == "02" and codes[2] not in SONG_EMOTIONS:
        raise DeidError(f"{where}: emotion {codes[2]} ({EMOTIONS[codes[2]]}) with vocal channel 02 (song): "
                        f"song has emotions 01 neutral .. 06 fearful only; {fix}")
    return codes


def parse_actors(text: str) -> list[int]:
    """'1,2,5-8' -> [1, 2, 5, 6, 7, 8]; a ConfigError says what is wrong."""
    actors: set[int] = set()
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ConfigError(f"--actors {text}: '{part}' is not a number or a range; write e.g. 1,2,5-8")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if not 1 <= first <= last <= 24:
            raise ConfigError(f"--actors {text}: '{part}' is outside 1..24 or backwards; write e.g. 1,2,5-8")
        actors.update(range(first, last + 1))
    if not actors:
        raise ConfigError(f"--actors {text!r}: no actor given; write e.g. 1,2,5-8")
    return sorted(actors)


def scan(root: Path, actors: Sequence[int] | None = None) -> dict[int, list[RavdessClip]]:
    """The .mp4/.wav clips of each Actor_XX folder under `root`, by actor, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DeidError(f"{root}: no such folder; give the RAVDESS root that holds Actor_01 .. Actor_24")
    folders = {int(p.name[6:]): p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"Actor_\d\d", p.name)}
    if not folders:
        raise DeidError(f"{root}: no Actor_XX folders{_nested_hint(root)}; give the RAVDESS root that holds "
                        "Actor_01 .. Actor_24")
    if actors is not None:
        missing = sorted(set(actors) - set(folders))
        if missing:
            names = ", ".join(f"Actor_{a:02d}" for a in missing)
            raise DeidError(f"{root}: no {names} folder; add it or leave it out of --actors")
        folders = {a: folders[a] for a in actors}
    return {actor: _scan_actor(actor, folders[actor]) for actor in sorted(folders)}


def _nested_hint(root: Path) -> str:
    # The Zenodo zips unpack to Actor_XX/ inside a folder named after the zip: a common wrong ROOT.
    nested = sorted(p.parent for p in root.glob("*/Actor_[0-9][0-9]") if p.is_dir())
    return f" (there are some in {nested[0]}: give that folder)" if nested else ""


def _scan_actor(actor: int, folder: Path) -> list[RavdessClip]:
    if actor not in range(1, 25):
        raise DeidError(f"{folder}: RAVDESS actors are Actor_01 .. Actor_24; rename or remove the folder")
    clips = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name.startswith(".") or path.suffix.lower() not in (".mp4", ".wav") or not path.is_file():
            continue
        clip = parse_name(path)
        if clip.actor != actor:
            raise DeidError(f"{path}: actor field {clip.actor:02d} does not match its folder {folder.name}; "
                            "rename or remove it")
        clips.append(clip)
    return clips


@dataclass(frozen=True)
class _Plan:
    """One actor's split and donors, all checked before any video is written."""

    actor: int
    gender: str
    training: list[RavdessClip]
    convert: RavdessClip
    donors: list[Path]


def build_manifest(root: Path, manifest_path: Path, donors: Sequence[Path] = (), donor_male: Path | None = None,
                   donor_female: Path | None = None, actors: Sequence[int] | None = None,
                   convert_clip: str = DEFAULT_CONVERT_CLIP, hold_out: bool = False, work_dir: Path | None = None,
                   progress: bool = True, donor_references: Sequence[Path] = ()) -> dict:
    """Concatenate each actor's training clips (when not up to date) and write the batch manifest."""
    root, manifest_path = _absolute(root), _absolute(manifest_path)
    work_dir = _absolute(work_dir) if work_dir is not None else manifest_path.parent / "ravdess_work"
    convert_codes = _parse_fields(convert_clip, f"--convert-clip {convert_clip}", count=6)
    if convert_codes[0] not in VIDEO_MODALITIES:
        raise ConfigError(f"--convert-clip {convert_clip}: modality {convert_codes[0]} is audio-only; "
                          "give a video clip (modality 01 or 02)")
    donor_of = _donor_chooser([_absolute(d) for d in donors], _absolute(donor_male) if donor_male else None,
                              _absolute(donor_female) if donor_female else None)
    references = [_absolute(r) for r in donor_references]
    for reference in references:
        if not reference.is_file():
            raise ConfigError(f"--donor-references {reference}: no such file; check the path")
    if actors is not None:
        actors = parse_actors(",".join(str(a) for a in actors))
    clips = scan(root, actors)
    plans = [_plan(root / f"Actor_{actor:02d}", actor, actor_clips, convert_clip, hold_out, donor_of)
             for actor, actor_clips in clips.items()]
    if references and len({d for plan in plans for d in plan.donors}) > 1:
        raise ConfigError("--donor-references: the photos can show only one donor, but the pairs use several; "
                          "leave them out and add donor_references per pair in the manifest")

    concatenated = up_to_date = 0
    pairs = []
    for plan in plans:
        target = work_dir / f"Actor_{plan.actor:02d}_train.mp4"
        if _concat_training(plan.training, target, progress):
            concatenated += 1
        else:
            up_to_date += 1
        for donor in plan.donors:
            pairs.append(_pair(plan, target, donor, len(plan.donors) > 1, references, hold_out, manifest_path.parent))

    write_text(manifest_path, _header(root, convert_clip, hold_out, work_dir)
               + yaml.safe_dump({"pairs": pairs}, sort_keys=False, default_flow_style=None, width=120))
    log.info("wrote %s: %d pairs", manifest_path, len(pairs))
    return {"manifest": str(manifest_path), "pairs": len(pairs), "actors": [plan.actor for plan in plans],
            "concatenated": concatenated, "up_to_date": up_to_date}


def _absolute(path: Path | str) -> Path:
    # abspath, not resolve: keep the user's symlinks (a dataset on another disk) in the manifest.
    return Path(os.path.abspath(path))


DonorChooser = Callable[[int, str], list[Path]]


def _donor_chooser(donors: list[Path], male: Path | None, female: Path | None) -> DonorChooser:
    """Check the donor options; return gender -> list of donor paths for an actor."""
    if not donors and not (male or female):
        raise ConfigError("deid ravdess: no donor; give --donor VIDEO (every actor with each donor) or "
                          "--donor-male VIDEO and --donor-female VIDEO (matched to the actor's gender)")
    if donors and (male or female):
        raise ConfigError("deid ravdess: give either --donor or --donor-male/--donor-female, not both")
    for option, path in [*(("--donor", d) for d in donors), ("--donor-male", male), ("--donor-female", female)]:
        if path is not None:
            _check_donor(option, path)
    stems = [d.stem for d in donors]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ConfigError(f"--donor: several donors are named '{clash[0]}' and pair names come from the file "
                          "name; rename one of them")
    by_gender = {"male": [male] if male else [], "female": [female] if female else []}

    def choose(actor: int, gender: str) -> list[Path]:
        chosen = donors or by_gender[gender]
        if not chosen:
            raise ConfigError(f"Actor_{actor:02d} is {gender}: give --donor-{gender} VIDEO, or leave the actor "
                              "out with --actors")
        return chosen

    return choose


def _check_donor(option: str, path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"{option} {path}: no such file or folder; check the path")
    if path.is_dir():
        if not list_clips(path) and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            raise ConfigError(f"{option} {path}: the folder holds no video clips or images; give a video or a "
                              "folder of clips")
    elif path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"{option} {path}: not a video file ({', '.join(VIDEO_SUFFIXES)}); give a video or a "
                          "folder of clips")


def _plan(folder: Path, actor: int, clips: list[RavdessClip], convert_clip: str, hold_out: bool,
          donor_of: DonorChooser) -> _Plan:
    videos = [clip for clip in clips if clip.is_video]
    convert = next((clip for clip in videos if clip.code[:len(convert_clip)] == convert_clip), None)
    if convert is None:
        raise DeidError(f"{folder}: no conversion clip {convert_clip}-{actor:02d}.mp4; add it or choose "
                        "another with --convert-clip")
    # The video-only twin shows the same performance without sound: holding out only one would leak it.
    held = {"-".join([modality, *convert.fields[1:]]) for modality in VIDEO_MODALITIES} if hold_out else set()
    training = [clip for clip in videos if clip.code not in held]
    if not training:
        raise DeidError(f"{folder}: no video clips left for training; add clips or drop --hold-out")
    return _Plan(actor=actor, gender=convert.gender, training=training, convert=convert,
                 donors=donor_of(actor, convert.gender))


def _concat_training(clips: list[RavdessClip], target: Path, progress: bool) -> bool:
    """Concatenate unless the sidecar says `target` was made from exactly these files; True if it ran."""
    sidecar = target.with_suffix(".json")
    sources = [_fingerprint(c.path) for c in clips]
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if (target.is_file() and record.get("clips") == sources
            and record.get("output_size") == target.stat().st_size):
        log.info("%s is up to date (%d clips)", target, len(clips))
        return False
    summary = concat_clips([c.path for c in clips], target, progress=progress)
    # The sidecar comes after the video: a kill in between only costs a redo, never a stale "up to date".
    write_json(sidecar, {"clips": sources, "output_size": target.stat().st_size, "summary": summary})
    return True


def _fingerprint(path: Path) -> dict:
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _pair(plan: _Plan, target: Path, donor: Path, several_donors: bool, references: list[Path],
          hold_out: bool, base: Path) -> dict:
    name = f"Actor_{plan.actor:02d}" + (f"__{donor.stem}" if several_donors else "")
    pair = {"name": name, "target": _manifest_path(target, base), "convert": _manifest_path(plan.convert.path, base),
            "donor": _manifest_path(donor, base)}
    if references:
        pair["donor_references"] = [_manifest_path(r, base) for r in references]
    pair["ravdess"] = {"actor": plan.actor, "gender": plan.gender, "training_clips": len(plan.training),
                       "convert_clip": plan.convert.path.name, "hold_out": hold_out}
    return pair


def _manifest_path(path: Path, base: Path) -> str:
    path = _absolute(path)
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def _header(root: Path, convert_clip: str, hold_out: bool, work_dir: Path) -> str:
    held = ("except the conversion clip and its video-only twin" if hold_out
            else "including the conversion clip, as in the study")
    return (f"# deid batch manifest written by `deid ravdess`\n"
            f"# root: {root}\n"
            f"# written: {datetime.now().astimezone().isoformat(timespec='seconds')}\n"
            f"# split: training = all of the actor's video clips (modality 01 and 02) in name order, {held},\n"
            f"#        concatenated into {work_dir}/Actor_XX_train.mp4; conversion = {convert_clip}-XX.mp4\n")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", type=Path, help="the RAVDESS folder holding Actor_01 .. Actor_24")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="MANIFEST.yaml",
                        help="the batch manifest to write")
    parser.add_argument("--donor", type=Path, action="append", default=[], metavar="VIDEO",
                        help="donor video or folder of clips, paired with every actor (repeatable)")
    parser.add_argument("--donor-male", type=Path, default=None, metavar="VIDEO",
                        help="donor for the male actors (odd numbers)")
    parser.add_argument("--donor-female", type=Path, default=None, metavar="VIDEO",
                        help="donor for the female actors (even numbers)")
    parser.add_argument("--donor-references", type=Path, action="append", default=[], metavar="IMG",
                        help="photo of the donor for the clean stage (repeatable; one donor only)")
    parser.add_argument("--actors", type=_actors_arg, default=None, metavar="LIST",
                        help="actors to include, e.g. 1,2,5-8 (default: every Actor_XX folder)")
    parser.add_argument("--convert-clip", default=DEFAULT_CONVERT_CLIP, metavar="CODE",
                        help=f"first six name fields of the clip to convert (default {DEFAULT_CONVERT_CLIP}: "
                             "speech, happy, strong, statement 1, repetition 1)")
    parser.add_argument("--hold-out", action="store_true",
                        help="leave the conversion clip and its video-only twin out of the training video")
    parser.add_argument("--work", type=Path, default=None, metavar="DIR",
                        help="where the training videos go (default: ravdess_work beside the manifest)")


def _actors_arg(text: str) -> list[int]:
    try:
        return parse_actors(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_command(args: argparse.Namespace, progress: bool) -> int:
    summary = build_manifest(args.root, args.output, donors=args.donor, donor_male=args.donor_male,
                             donor_female=args.donor_female, actors=args.actors, convert_clip=args.convert_clip,
                             hold_out=args.hold_out, work_dir=args.work, progress=progress,
                             donor_references=args.donor_references)
    print(f"ravdess: {summary['pairs']} pairs for {len(summary['actors'])} actors -> {summary['manifest']} "
          f"(training videos: {summary['concatenated']} concatenated, {summary['up_to_date']} up to date)")
    return 0
