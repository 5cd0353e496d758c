"""Stand-alone stage commands (`deid extract ...`): the same stage code and runner as `deid run`.

A stand-alone stage keeps its manifest record in `<output>/manifest.json`, so re-running the same
command is skipped and a changed argument re-runs it.
"""
from __future__ import annotations

import argparse

from pipeline.config import ExtractConfig, PipelineConfig
from pipeline.runner import Manifest, run_stage
from pipeline.workflow import extract_spec


def run_extract(args: argparse.Namespace, progress: bool) -> None:
    from pipeline.errors import ConfigError

    try:
        extract_config = ExtractConfig(detector=args.detector, size=args.size, centering=args.centering,
                                       every=args.every, detect_every=args.detect_every,
                                       detect_scale=args.detect_scale, min_face_size=args.min_face_size,
                                       min_score=args.min_score,
                                       batch_size=args.batch_size, identity=args.identity,
                                       save_frames=args.save_frames)
    except ConfigError as exc:
        raise ConfigError(f"deid extract: {str(exc).replace('extract.', '--').replace('_', '-')}") from None
    config = PipelineConfig(device=args.device, extract=extract_config)
    spec = extract_spec("extract", args.input, args.output, config, progress)
    outcome = run_stage(spec, Manifest(args.output / "manifest.json"), force=args.force)
    summary = outcome.summary
    print(f"{args.input}: {summary.get('frames_with_faces', 0)}/{summary.get('frames', 0)} frames with faces, "
          f"{summary.get('faces', 0)} faces -> {args.output / 'alignments.json'}"
          + ("" if outcome.ran else " (up to date, skipped)"))
