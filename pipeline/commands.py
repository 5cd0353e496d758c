"""Stand-alone stage commands (`deid extract ...`): the same stage code and runner as `deid run`.

A stand-alone stage keeps its manifest record in `<output>/manifest.json`, so re-running the same
command is skipped and a changed argument re-runs it.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from deid.core.errors import ConfigError
from deid.pipeline.cli_settings import option_error, settings_from_args
from deid.pipeline.config import CleanConfig, ExtractConfig, PipelineConfig
from deid.pipeline.runner import Manifest, run_stage
from deid.pipeline.settings_log import log_settings
from deid.pipeline.workflow import clean_spec, extract_spec

if TYPE_CHECKING:
    from deid.stages.protect_config import ProtectConfig


def run_extract(args: argparse.Namespace, progress: bool) -> None:
    extract_config = settings_from_args(ExtractConfig, args, "extract", "extract")
    config = PipelineConfig(device=args.device, extract=extract_config, allow_damaged=args.allow_damaged)
    spec = extract_spec("extract", args.input, args.output, config, progress)
    outcome = run_stage(spec, Manifest(args.output / "manifest.json"), force=args.force)
    summary = outcome.summary
    print(f"{args.input}: {summary.get('frames_with_faces', 0)}/{summary.get('frames', 0)} frames with faces, "
          f"{summary.get('faces', 0)} faces -> {args.output / 'alignments.json'}"
          + ("" if outcome.ran else " (up to date, skipped)"))


def run_clean(args: argparse.Namespace, progress: bool) -> None:
    clean_config = settings_from_args(CleanConfig, args, "clean", "clean", blur=args.blur_ratio > 0)
    spec = clean_spec("clean", args.input, args.output, clean_config, tuple(args.reference), progress)
    outcome = run_stage(spec, Manifest(args.output / "manifest.json"), force=args.force)
    summary = outcome.summary
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("reasons", {}).items())) or "none"
    print(f"{args.input}: kept {summary.get('kept', 0)}/{summary.get('faces', 0)} faces; rejected: {reasons}; "
          f"identity: {summary.get('identity')} -> {args.output / 'alignments.json'}"
          + ("" if outcome.ran else " (up to date, skipped)"))


def run_train(args: argparse.Namespace, progress: bool) -> None:
    from deid.pipeline.config import load_config
    from deid.stages.train import train

    base = load_config(args.config).train if args.config else PipelineConfig().train
    overrides = {k: v for k, v in (("model", args.model), ("width", args.width), ("latent", args.latent),
                                   ("iterations", args.iterations), ("minutes", args.minutes),
                                   ("batch_size", args.batch_size), ("init_from", args.init_from)) if v is not None}
    try:
        config = dataclasses.replace(base, **overrides)
    except ConfigError as exc:
        raise option_error("train", exc, "train") from None
    log_settings("train", {"device": args.device, **dataclasses.asdict(config)}, f"{args.a_dir} + {args.b_dir} -> {args.output}")
    summary = train(args.a_dir, args.b_dir, args.output, config, device=args.device, progress=progress)
    print(f"{args.output}: iteration {summary.get('iteration')} ({summary.get('stopped')}), "
          f"loss A {summary.get('loss_a')}, loss B {summary.get('loss_b')}, {summary.get('images_per_second')} images/s")


def protect_config(args: argparse.Namespace, command: str) -> "ProtectConfig":
    from deid.stages.protect_config import ProtectConfig

    return settings_from_args(ProtectConfig, args, command, "protect")


def _leak_line(summary: dict) -> str:
    check = summary["leak_check"]
    return (f"leak check ({check['checker']}, {check['frames_checked']} frames read back): "
            f"{check['leaks']} leaks")


def run_convert(args: argparse.Namespace, progress: bool) -> None:
    from deid.pipeline.config import ConvertConfig
    from deid.stages.convert import convert

    config = settings_from_args(ConvertConfig, args, "convert", "convert")
    protect = protect_config(args, "convert")
    log_settings("convert", {"device": args.device, "allow_leaks": args.allow_leaks, **dataclasses.asdict(config),
                             "protect": protect}, f"{args.video} with {args.model} -> {args.output}")
    summary = convert(args.video, args.faces, args.model, args.output, config, device=args.device, progress=progress,
                      protect=protect, allow_leaks=args.allow_leaks,
                      allow_damaged=args.allow_damaged)
    status = ", ".join(f"{v} {k}" for k, v in sorted(summary["status"].items()))
    print(f"{summary['output']}: {summary['frames']} frames ({status}); {summary['faces_protected']} faces hidden "
          f"by the fallback, {summary['faces_unprotected']} left in clear; {_leak_line(summary)}")


def run_baseline(args: argparse.Namespace, progress: bool) -> None:
    from deid.stages.baseline import baseline

    config = protect_config(args, "baseline")
    log_settings("baseline", {"device": args.device, "crf": args.crf, "protect": config}, f"{args.video} -> {args.output}")
    faces = args.faces
    if faces is None:
        faces = args.output.with_name(args.output.stem + ".extract")
        spec = extract_spec("extract", args.video, faces,
                            PipelineConfig(device=args.device, allow_damaged=args.allow_damaged), progress)
        run_stage(spec, Manifest(faces / "manifest.json"))
    summary = baseline(args.video, faces, args.output, config, crf=args.crf, device=args.device,
                       allow_leaks=args.allow_leaks, progress=progress, allow_damaged=args.allow_damaged)
    print(f"{summary['output']}: {config.method} on {summary['faces_detected']} faces found and "
          f"{summary['faces_extracted']} extracted, in {summary['frames_with_faces']}/{summary['frames']} frames; "
          f"{_leak_line(summary)}")


def run_protect(args: argparse.Namespace, progress: bool) -> int:
    from deid.stages.protect_batch import protect_many

    log_settings("protect", {"device": args.device, "crf": args.crf, "protect": protect_config(args, "protect")},
                 f"{len(args.inputs)} input(s) -> {args.output}")
    return protect_many(args.inputs, args.output, protect_config(args, "protect"), crf=args.crf, device=args.device,
                        allow_leaks=args.allow_leaks, progress=progress, allow_damaged=args.allow_damaged,
                        recursive=args.recursive)


def run_evaluate(args: argparse.Namespace, progress: bool) -> None:
    from deid.stages.evaluate import evaluate
    from deid.stages.evaluate_config import EvaluateConfig

    config = settings_from_args(EvaluateConfig, args, "evaluate", "evaluate")
    from deid.reports.au_source import note_unavailable

    note_unavailable([config])
    log_settings("evaluate", {"device": args.device, **dataclasses.asdict(config)},
                 f"{args.original} vs {args.swapped} -> {args.output}")
    summary = evaluate(args.original, args.swapped, args.ref_original, args.ref_donor, args.output, config,
                       progress=progress, name=args.name, allow_damaged=args.allow_damaged, device=args.device)
    print(f"{summary.verdict.level.upper()}: {summary.verdict.text}")
    print(f"-> {args.output / 'reports' / 'report.html'}")
