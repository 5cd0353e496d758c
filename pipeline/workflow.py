"""`deid run`: turn a PipelineConfig into the stages of one pair and run them in order.

Layout under runs/<pair>/: extract/<video-id>/ and clean/<video-id>/ for the target, the
donor and (when it is another video) the clip to convert; sources/<id>.mp4 when a source is a folder of
clips (they are concatenated first); model/ (the trained pair), convert/<video-id>.mp4 (+ .frames.csv),
evaluate/ (reference photos when picked automatically, reports/), and manifest.json recording every stage.

`deid batch` plans the same stages with a `shared` root: concatenations, extractions and clean folders
then live under <shared>/ named by a hash of their content and parameters, each with its own manifest,
so a donor used by every pair is extracted once; the pair's extract/ and clean/ entries link to them.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from deid.core.hashing import hash_input
from deid.pipeline.config import CleanConfig, PipelineConfig, as_plain
from deid.pipeline.runner import Manifest, StageOutcome, StageSpec, run_stage

log = logging.getLogger("deid.run")


@dataclass(frozen=True)
class Source:
    """One person's footage as the stages see it."""

    id: str
    path: Path  # as configured: a video, a folder of images, or a folder of clips
    video: Path  # what extract reads: `path`, or the concatenation of its clips
    extract_dir: Path
    clean_dir: Path
    references: tuple[Path, ...]
    shared: bool = False  # concat/extract/clean records live next to their outputs, not in the pair's manifest

    @property
    def concatenated(self) -> bool:
        return self.video != self.path


@dataclass(frozen=True)
class PairLayout:
    root: Path
    target: Source
    donor: Source
    convert: Source  # the video to de-identify: the target's own footage unless `convert_video` is set

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def swapped(self) -> Path:
        return self.root / "convert" / f"{self.convert.id}.mp4"

    @property
    def evaluate_dir(self) -> Path:
        return self.root / "evaluate"

    @property
    def report(self) -> Path:
        return self.evaluate_dir / "reports" / "report.html"

    def sources(self) -> list[Source]:
        """Target, donor and convert clip, each once."""
        unique: dict[str, Source] = {}
        for source in (self.target, self.donor, self.convert):
            unique.setdefault(source.id, source)
        return list(unique.values())


def layout(config: PipelineConfig, shared: Path | None = None) -> PairLayout:
    for key in ("target", "donor"):
        config.require(key, "path/to/video.mp4 (a video, a folder of images or a folder of clips)")
    root = Path(config.runs_dir) / config.pair
    paths = {"target": Path(config.target), "donor": Path(config.donor),
             "convert": Path(config.convert_video or config.target)}
    references = {"target": config.target_references, "donor": config.donor_references,
                  "convert": config.target_references}
    ids = _unique_ids(paths)
    extract_params = {"device": config.device, **as_plain(config.extract)}
    sources: dict[str, Source] = {}
    for role, path in paths.items():
        if role == "convert" and path == paths["target"]:
            sources[role] = sources["target"]
            continue
        clean_params = {**as_plain(config.clean), "references": [hash_input(p) for p in references[role]]}
        sources[role] = _source(ids[role], path, root, shared, extract_params, clean_params, references[role])
    return PairLayout(root=root, **sources)


def _unique_ids(paths: dict[str, Path]) -> dict[str, str]:
    ids = {role: video_id(path) for role, path in paths.items()}
    for role, path in paths.items():
        if any(ids[other] == ids[role] and paths[other] != path for other in paths if other != role):
            # Two inputs with the same file name (a/clip.mp4, b/clip.mp4) must not share a folder.
            ids[role] = f"{ids[role]}-{_short_hash(path)}"
    return ids


def _source(source_id: str, path: Path, root: Path, shared: Path | None, extract_params: dict,
            clean_params: dict, references: tuple[Path, ...]) -> Source:
    clips = is_clip_folder(path)
    if shared is None:
        video = root / "sources" / f"{source_id}.mp4" if clips else path
        return Source(source_id, path, video, root / "extract" / source_id, root / "clean" / source_id, references)
    # Content addresses: the same footage with the same parameters maps to the same folders whatever
    # the pair, the file name or the path it was given by.
    content = hash_input(path)
    video = shared / "sources" / f"{content[:16]}.mp4" if clips else path
    extract_key = _digest(content, extract_params)
    return Source(source_id, path, video, shared / "extract" / extract_key,
                  shared / "clean" / _digest(extract_key, clean_params), references, shared=True)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_clip_folder(path: Path) -> bool:
    """A folder holding video files: its clips are concatenated into one video before extraction."""
    from deid.stages.concat import list_clips

    return Path(path).is_dir() and bool(list_clips(Path(path)))


def video_id(path: Path) -> str:
    return Path(path).stem if Path(path).is_file() else Path(path).name


def _short_hash(path: Path) -> str:
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]


def _own_manifest(folder_or_file: Path, shared: bool) -> Path | None:
    if not shared:
        return None
    path = Path(folder_or_file)
    return path / "manifest.json" if path.suffix == "" else path.with_name(path.stem + ".manifest.json")


def concat_spec(key: str, folder: Path, out: Path, shared: bool = False, progress: bool = True) -> StageSpec:
    from deid.stages.concat import concat_clips, list_clips

    return StageSpec(
        key=key,
        inputs={"clips": folder},
        params={},
        outputs=[out],
        run=lambda: concat_clips(list_clips(folder), out, progress=progress),
        code=("deid.stages.concat",),
        manifest=_own_manifest(out, shared),
        record="concat" if shared else None,
    )


def extract_spec(key: str, source: Path, out_dir: Path, config: PipelineConfig, progress: bool = True,
                 shared: bool = False, needs: tuple[str, ...] = ()) -> StageSpec:
    from deid.stages.extract import extract

    return StageSpec(
        key=key,
        inputs={"video": source},
        params={"device": config.device, "allow_damaged": config.allow_damaged, **as_plain(config.extract)},
        outputs=[out_dir / "alignments.json"],
        run=lambda: extract(source, out_dir, config.extract, device=config.device, progress=progress,
                            allow_damaged=config.allow_damaged),
        needs=needs,
        # Each stage lists its module and those of the stages upstream of it (pipeline/runner.py says why);
        # not concat's: its one output video is hashed whole as extract's input.
        code=("deid.stages.extract",),
        manifest=_own_manifest(out_dir, shared),
        record="extract" if shared else None,
    )


def clean_spec(key: str, extract_dir: Path, out_dir: Path, config: CleanConfig, references: tuple[Path, ...],
               progress: bool = True, shared: bool = False, needs: tuple[str, ...] = ()) -> StageSpec:
    from deid.stages.clean import clean

    inputs = {"alignments": Path(extract_dir) / "alignments.json"}
    inputs.update({f"reference{i}": Path(p) for i, p in enumerate(references)})
    return StageSpec(
        key=key,
        inputs=inputs,
        params={**as_plain(config), "references": [str(p) for p in references]},
        outputs=[out_dir / "alignments.json", out_dir / "rejected.csv"],
        run=lambda: clean(extract_dir, out_dir, config, references=references, progress=progress),
        needs=needs,
        code=("deid.stages.clean", "deid.stages.extract"),
        manifest=_own_manifest(out_dir, shared),
        record="clean" if shared else None,
    )


def train_spec(key: str, a_dir: Path, b_dir: Path, model_dir: Path, config: PipelineConfig,
               progress: bool = True, needs: tuple[str, ...] = ()) -> StageSpec:
    from deid.stages.train import train

    return StageSpec(
        key=key,
        inputs={"faces_a": Path(a_dir) / "alignments.json", "faces_b": Path(b_dir) / "alignments.json"},
        params={"device": config.device, **as_plain(config.train)},
        outputs=[model_dir / "state.json", model_dir / "model.pt"],
        run=lambda: train(a_dir, b_dir, model_dir, config.train, device=config.device, progress=progress),
        needs=needs,
        code=("deid.stages.train", "deid.stages.clean", "deid.stages.extract"),
    )


def convert_spec(key: str, video: Path, faces_dir: Path, model_dir: Path, out: Path, config: PipelineConfig,
                 progress: bool = True, needs: tuple[str, ...] = ()) -> StageSpec:
    from deid.stages.convert import convert

    return StageSpec(
        key=key,
        inputs={"video": video, "faces": Path(faces_dir) / "alignments.json", "model": model_dir / "model.pt"},
        params={"device": config.device, "allow_damaged": config.allow_damaged, **as_plain(config.convert),
                **{f"protect.{k}": v for k, v in as_plain(config.protect).items()}},
        outputs=[out, out.with_name(out.stem + ".frames.csv")],
        run=lambda: convert(video, faces_dir, model_dir, out, config.convert, device=config.device, progress=progress,
                            protect=config.protect, allow_damaged=config.allow_damaged),
        needs=needs,
        code=("deid.stages.convert", "deid.stages.train", "deid.stages.clean", "deid.stages.extract"),
    )


def recogniser_caveats(config: PipelineConfig) -> tuple[str, ...]:
    """The report's caveat when the swap model was trained against the recogniser evaluate scores with."""
    if not config.train.identity_weight:
        return ()
    return (f"the swap model was trained against the recogniser these identity scores use "
            f"(train.identity_weight={config.train.identity_weight:g}): SW-OR, SW-SW, the re-identification "
            f"count and the parrot attack are optimistic for it; the verdict's identity findings rest on SFace, "
            f"which training never uses",)


def evaluate_spec(key: str, original: Path, swapped: Path, references: tuple[Path, Path], out_dir: Path,
                  config: PipelineConfig, progress: bool = True, name: str | None = None,
                  needs: tuple[str, ...] = (), model_dir: Path | None = None) -> StageSpec:
    from deid.stages.donor_coverage import coverage_caveats
    from deid.stages.evaluate import evaluate

    return StageSpec(
        key=key,
        inputs={"original": original, "swapped": swapped, "ref_original": references[0], "ref_donor": references[1]},
        params={**as_plain(config.evaluate), "allow_damaged": config.allow_damaged},
        outputs=[out_dir / "reports" / "summary.json", out_dir / "reports" / "report.html"],
        run=lambda: evaluate(original, swapped, references[0], references[1], out_dir, config.evaluate,
                             progress=progress, name=name, allow_damaged=config.allow_damaged,
                             device=config.device,
                             trained_against_recogniser=bool(config.train.identity_weight),
                             # read when evaluate runs: train wrote the model's coverage.json by then
                             caveats=recogniser_caveats(config)
                             + (coverage_caveats(model_dir) if model_dir is not None else ())).as_json(),
        needs=needs,
        code=("deid.stages.evaluate", "deid.stages.references", "deid.stages.convert", "deid.stages.train", "deid.stages.clean",
              "deid.stages.extract"),
    )


def _reference_stage(pair: PairLayout, source: Source) -> tuple[Path, StageSpec | None]:
    """The configured reference photo, or a stage that picks one from the person's clean faces."""
    if source.references:
        return source.references[0], None
    from deid.stages.references import pick_reference

    out = pair.evaluate_dir / f"reference_{source.id}.png"
    faces, video = source.clean_dir, source.video
    return out, StageSpec(key=f"reference:{source.id}", inputs={"faces": faces / "alignments.json"}, params={},
                          outputs=[out], run=lambda: {"reference": str(pick_reference(faces, video, out))},
                          needs=(f"clean:{source.id}",),
                          code=("deid.stages.references", "deid.stages.clean", "deid.stages.extract"))


def plan(config: PipelineConfig, progress: bool = True, shared: Path | None = None) -> tuple[PairLayout, list[StageSpec]]:
    """Every stage of one pair, in an order that runs each after the stages it needs."""
    pair = layout(config, shared)
    specs = []
    for source in pair.sources():
        extract_needs: tuple[str, ...] = ()
        if source.concatenated:
            specs.append(concat_spec(f"concat:{source.id}", source.path, source.video, source.shared, progress))
            extract_needs = (f"concat:{source.id}",)
        specs.append(extract_spec(f"extract:{source.id}", source.video, source.extract_dir, config, progress,
                                  shared=source.shared, needs=extract_needs))
        specs.append(clean_spec(f"clean:{source.id}", source.extract_dir, source.clean_dir, config.clean,
                                source.references, progress, shared=source.shared,
                                needs=(f"extract:{source.id}",)))
    specs.append(train_spec("train", pair.target.clean_dir, pair.donor.clean_dir, pair.model_dir, config, progress,
                            needs=(f"clean:{pair.target.id}", f"clean:{pair.donor.id}")))
    # Convert reads the convert clip's clean folder: its kept face per frame is the target, every other
    # face the extract found (bystanders, rejected detections) is protected by the fallback.
    specs.append(convert_spec("convert", pair.convert.video, pair.convert.clean_dir, pair.model_dir, pair.swapped,
                              config, progress, needs=("train", f"clean:{pair.convert.id}")))
    ref_target, pick_target = _reference_stage(pair, pair.target)
    ref_donor, pick_donor = _reference_stage(pair, pair.donor)
    picks = [spec for spec in (pick_target, pick_donor) if spec is not None]
    specs += picks
    specs.append(evaluate_spec("evaluate", pair.convert.video, pair.swapped, (ref_target, ref_donor),
                               pair.evaluate_dir, config, progress, name=config.pair,
                               needs=("convert", *(p.key for p in picks)), model_dir=pair.model_dir))
    return pair, specs


def run_pipeline(config: PipelineConfig, force: bool = False, progress: bool = True) -> list[StageOutcome]:
    pair, specs = plan(config, progress)
    manifest = Manifest(pair.manifest)
    outcomes = [run_stage(spec, manifest, force=force) for spec in specs]
    ran = [o.key for o in outcomes if o.ran]
    log.info("pair %s: %d stage(s) ran, %d up to date; outputs in %s", config.pair, len(ran),
             len(outcomes) - len(ran), pair.root)
    return outcomes
