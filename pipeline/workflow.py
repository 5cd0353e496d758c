"""`deid run`: turn a PipelineConfig into the stages of one pair and run them in order.

Layout under runs/<pair>/ (DESIGN.md): extract/<video-id>/ and clean/<video-id>/ for the target and
the donor, model/ (the trained pair), convert/<target>.mp4 (+ .frames.csv), evaluate/ (reference
photos when picked automatically, reports/), and manifest.json recording every stage.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CleanConfig, PipelineConfig, as_plain
from pipeline.errors import ConfigError
from pipeline.runner import Manifest, StageOutcome, StageSpec, run_stage

log = logging.getLogger("deid.run")


@dataclass(frozen=True)
class PairLayout:
    root: Path
    target_id: str
    donor_id: str

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def extract_dir(self, video_id: str) -> Path:
        return self.root / "extract" / video_id

    def clean_dir(self, video_id: str) -> Path:
        return self.root / "clean" / video_id

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def swapped(self) -> Path:
        return self.root / "convert" / f"{self.target_id}.mp4"

    @property
    def evaluate_dir(self) -> Path:
        return self.root / "evaluate"


def layout(config: PipelineConfig) -> PairLayout:
    if config.target is None or config.donor is None:
        missing = "target" if config.target is None else "donor"
        raise ConfigError(f"pipeline config: '{missing}' is not set; give the path of a video or image folder")
    target_id, donor_id = video_id(config.target), video_id(config.donor)
    if target_id == donor_id:
        # Two inputs with the same file name (a/clip.mp4, b/clip.mp4) must not share a folder.
        target_id, donor_id = f"{target_id}-{_short_hash(config.target)}", f"{donor_id}-{_short_hash(config.donor)}"
    return PairLayout(root=Path(config.runs_dir) / config.pair, target_id=target_id, donor_id=donor_id)


def video_id(path: Path) -> str:
    return Path(path).stem if Path(path).is_file() else Path(path).name


def _short_hash(path: Path) -> str:
    return hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]


def extract_spec(key: str, source: Path, out_dir: Path, config: PipelineConfig, progress: bool = True) -> StageSpec:
    from stages.extract import extract

    return StageSpec(
        key=key,
        inputs={"video": source},
        params={"device": config.device, **as_plain(config.extract)},
        outputs=[out_dir / "alignments.json"],
        run=lambda: extract(source, out_dir, config.extract, device=config.device, progress=progress),
    )


def clean_spec(key: str, extract_dir: Path, out_dir: Path, config: CleanConfig, references: tuple[Path, ...],
               progress: bool = True) -> StageSpec:
    from stages.clean import clean

    inputs = {"alignments": Path(extract_dir) / "alignments.json"}
    inputs.update({f"reference{i}": Path(p) for i, p in enumerate(references)})
    return StageSpec(
        key=key,
        inputs=inputs,
        params={**as_plain(config), "references": [str(p) for p in references]},
        outputs=[out_dir / "alignments.json", out_dir / "rejected.csv"],
        run=lambda: clean(extract_dir, out_dir, config, references=references, progress=progress),
    )


def train_spec(key: str, a_dir: Path, b_dir: Path, model_dir: Path, config: PipelineConfig,
               progress: bool = True) -> StageSpec:
    from stages.train import train

    return StageSpec(
        key=key,
        inputs={"faces_a": Path(a_dir) / "alignments.json", "faces_b": Path(b_dir) / "alignments.json"},
        params={"device": config.device, **as_plain(config.train)},
        outputs=[model_dir / "state.json", model_dir / "model.pt"],
        run=lambda: train(a_dir, b_dir, model_dir, config.train, device=config.device, progress=progress),
    )


def convert_spec(key: str, video: Path, faces_dir: Path, model_dir: Path, out: Path, config: PipelineConfig,
                 progress: bool = True) -> StageSpec:
    from stages.convert import convert

    return StageSpec(
        key=key,
        inputs={"video": video, "faces": Path(faces_dir) / "alignments.json", "model": model_dir / "model.pt"},
        params={"device": config.device, **as_plain(config.convert)},
        outputs=[out, out.with_name(out.stem + ".frames.csv")],
        run=lambda: convert(video, faces_dir, model_dir, out, config.convert, device=config.device, progress=progress),
    )


def evaluate_spec(key: str, original: Path, swapped: Path, references: tuple[Path, Path], out_dir: Path,
                  config: PipelineConfig, progress: bool = True, name: str | None = None) -> StageSpec:
    from stages.evaluate import evaluate

    return StageSpec(
        key=key,
        inputs={"original": original, "swapped": swapped, "ref_original": references[0], "ref_donor": references[1]},
        params=as_plain(config.evaluate),
        outputs=[out_dir / "reports" / "summary.json", out_dir / "reports" / "report.html"],
        run=lambda: evaluate(original, swapped, references[0], references[1], out_dir, config.evaluate,
                             progress=progress, name=name),
    )


def _reference_stage(pair: PairLayout, video_id: str, source: Path, configured: tuple[Path, ...],
                     progress: bool) -> tuple[Path, StageSpec | None]:
    """The configured reference photo, or a stage that picks one from the person's clean faces."""
    if configured:
        return configured[0], None
    from stages.references import pick_reference

    out = pair.evaluate_dir / f"reference_{video_id}.png"
    faces = pair.clean_dir(video_id)
    return out, StageSpec(key=f"reference:{video_id}", inputs={"faces": faces / "alignments.json"}, params={},
                          outputs=[out], run=lambda: {"reference": str(pick_reference(faces, source, out))})


def plan(config: PipelineConfig, progress: bool = True) -> tuple[PairLayout, list[StageSpec]]:
    pair = layout(config)
    specs = []
    for video_id, source, references in ((pair.target_id, config.target, config.target_references),
                                         (pair.donor_id, config.donor, config.donor_references)):
        specs.append(extract_spec(f"extract:{video_id}", source, pair.extract_dir(video_id), config, progress))
        specs.append(clean_spec(f"clean:{video_id}", pair.extract_dir(video_id), pair.clean_dir(video_id),
                                config.clean, references, progress))
    specs.append(train_spec("train", pair.clean_dir(pair.target_id), pair.clean_dir(pair.donor_id), pair.model_dir,
                            config, progress))
    # Convert reads the target's clean folder: its kept face per frame is the target, every other face
    # the extract found (bystanders, rejected detections) is protected by the fallback.
    specs.append(convert_spec("convert", config.target, pair.clean_dir(pair.target_id), pair.model_dir,
                              pair.swapped, config, progress))
    ref_target, pick_target = _reference_stage(pair, pair.target_id, config.target, config.target_references, progress)
    ref_donor, pick_donor = _reference_stage(pair, pair.donor_id, config.donor, config.donor_references, progress)
    specs += [spec for spec in (pick_target, pick_donor) if spec is not None]
    specs.append(evaluate_spec("evaluate", config.target, pair.swapped, (ref_target, ref_donor), pair.evaluate_dir,
                               config, progress, name=config.pair))
    return pair, specs


def run_pipeline(config: PipelineConfig, force: bool = False, progress: bool = True) -> list[StageOutcome]:
    pair, specs = plan(config, progress)
    manifest = Manifest(pair.manifest)
    outcomes = [run_stage(spec, manifest, force=force) for spec in specs]
    ran = [o.key for o in outcomes if o.ran]
    log.info("pair %s: %d stage(s) ran, %d up to date; outputs in %s", config.pair, len(ran),
             len(outcomes) - len(ran), pair.root)
    return outcomes
