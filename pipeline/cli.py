"""The `deid` command line. Sub-commands map one-to-one to stages plus `run` and `demo`.

Input mistakes end in one line on stderr (`deid: error: ...`) and exit status 2; interruptions exit 130
after the stage has recorded that it was interrupted.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import warnings
from pathlib import Path
from typing import Sequence

from deid.core.errors import DeidError, disk_error
from deid.pipeline.cli_settings import add_setting


def _extract_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="a video file or a folder of images")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    from deid.models.detectors import DETECTORS
    from deid.stages.extract_config import ExtractConfig

    add_setting(parser, ExtractConfig, "every", "process every N-th frame")
    add_setting(parser, ExtractConfig, "detector", "face detector", choices=DETECTORS.names())
    add_setting(parser, ExtractConfig, "size", "aligned crop size in px")
    add_setting(parser, ExtractConfig, "centering", "what the aligned crop centres on")
    _device_arg(parser)
    add_setting(parser, ExtractConfig, "detect_every", "run the detector every K processed frames, track landmarks "
                "in between")
    add_setting(parser, ExtractConfig, "detect_scale", "downscale frames by this factor for detection only")
    add_setting(parser, ExtractConfig, "min_face_size", "smallest face in px")
    add_setting(parser, ExtractConfig, "min_score", "mtcnn: lowest face probability kept")
    add_setting(parser, ExtractConfig, "batch_size", "frames per detector batch")
    add_setting(parser, ExtractConfig, "identity", "store the 128-d face_recognition embedding")
    add_setting(parser, ExtractConfig, "save_frames", "also write every processed frame as PNG")
    parser.add_argument("--force", action="store_true", help="re-run even if the outputs are up to date")
    _damaged_arg(parser)


def _device_arg(parser: argparse.ArgumentParser) -> None:
    from deid.pipeline.config import PipelineConfig

    # A free string, not pipeline.yaml's three choices: a stand-alone command may also name cuda:N.
    default = PipelineConfig().device
    parser.add_argument("--device", default=default, help=f"auto | cpu | cuda | cuda:N (default {default})")


def _damaged_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-damaged", action="store_true",
                        help="process what decodes of a truncated or damaged input instead of stopping "
                             "(recorded in the summary)")


def _clean_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="an extract (or clean) output folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--reference", type=Path, action="append", default=[], metavar="IMG",
                        help="photo of the person to keep (repeatable); without one, the input's dominant identity")
    from deid.stages.clean_config import CleanConfig

    add_setting(parser, CleanConfig, "reference_mode", "distance to the mean of the references or to the closest one")
    add_setting(parser, CleanConfig, "threshold", "identity distance threshold")
    add_setting(parser, CleanConfig, "min_size", "smallest face box side in px (0 = off)")
    add_setting(parser, CleanConfig, "blur_ratio", "reject faces less sharp than RATIO x the input's median "
                "sharpness (0 = off)", flag="--blur", metavar="RATIO")
    add_setting(parser, CleanConfig, "max_landmark_distance", "landmark misfit limit in face units (0 = off)")
    add_setting(parser, CleanConfig, "max_yaw", "degrees (0 = off)")
    add_setting(parser, CleanConfig, "max_pitch", "degrees (0 = off)")
    add_setting(parser, CleanConfig, "dedupe", "drop near-duplicate consecutive faces")
    add_setting(parser, CleanConfig, "dedupe_threshold", "mean grey-level difference")
    add_setting(parser, CleanConfig, "max_faces", "keep at most N, the most varied (0 = all)")
    parser.add_argument("--force", action="store_true", help="re-run even if the outputs are up to date")


def _protect_args(parser: argparse.ArgumentParser, method: bool = True) -> None:
    """Options of the protection pass and leak check (pipeline.yaml `protect:`), shared by protect/baseline/convert."""
    from deid.models.search import names as search_names
    from deid.stages.protect_config import ProtectConfig

    if method:
        from deid.stages.obfuscation import OBFUSCATIONS

        add_setting(parser, ProtectConfig, "method", "how faces are hidden (mask: a solid fill; blur and pixelate are "
                    "defeated by the parrot attack)", choices=OBFUSCATIONS.names())
    add_setting(parser, ProtectConfig, "search", "recall-tuned detector of the protection pass", choices=search_names())
    add_setting(parser, ProtectConfig, "checker", "leak check detector, different from --search",
                choices=search_names())
    add_setting(parser, ProtectConfig, "min_face", "smallest face searched for, px")
    add_setting(parser, ProtectConfig, "hold", "keep each hidden region this many frames before/after a detection")
    add_setting(parser, ProtectConfig, "check_every", "leak check reads every N-th output frame (1: all)")
    add_setting(parser, ProtectConfig, "repair_rounds", "hide every face the leak check finds, then check again, at "
                "most N rounds; what survives the last round fails the clip (0 = never repair)")
    add_setting(parser, ProtectConfig, "audio", "keep or drop the audio track (a voice identifies too)")
    parser.add_argument("--allow-leaks", action="store_true",
                        help="publish under the final name even when the leak check finds faces (they are still listed)")
    _damaged_arg(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deid", description="Video de-identification: face swap with proof.")
    from deid.core.version import version_line

    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument("-v", "--verbose", action="store_true", help="deid's debug logging: each stage's settings and decisions")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _extract_args(sub.add_parser("extract", help="detect, landmark and align every face of a video or image folder"))

    _clean_args(sub.add_parser("clean", help="keep the target's good faces; log every rejection with its reason"))

    sort = sub.add_parser("sort", help="write a sorted view (symlinks + index.csv) of an extract folder")
    sort.add_argument("input", type=Path, help="an extract (or clean) output folder")
    sort.add_argument("--by", choices=("face", "blur", "yaw", "size", "hist"), default="face")
    sort.add_argument("-o", "--output", type=Path, required=True)

    train = sub.add_parser("train", help="train the per-pair autoencoder (shared encoder, decoders A and B)")
    train.add_argument("a_dir", type=Path, help="faces of A, the person to hide (extract or clean folder)")
    train.add_argument("b_dir", type=Path, help="faces of B, the donor (extract or clean folder)")
    train.add_argument("-o", "--output", type=Path, required=True, help="model folder (resumed if it exists)")
    from deid.models.swap import FAMILIES

    train.add_argument("--model", choices=FAMILIES.names(), default=None, help="model family (default original)")
    train.add_argument("--width", type=int, default=None,
                       help="base channel count (train.width; 0 = the family's default)")
    train.add_argument("--latent", type=int, default=None,
                       help="dense bottleneck size (train.latent; 0 = the family's default)")
    train.add_argument("--iterations", type=int, default=None, help="total iterations to reach")
    train.add_argument("--minutes", type=float, default=None, help="stop after this many minutes (0 = no limit)")
    train.add_argument("--batch-size", type=int, default=None)
    _device_arg(train)
    train.add_argument("--config", type=Path, default=None, help="take the train: section from this pipeline.yaml")
    train.add_argument("--init-from", type=Path, default=None, metavar="MODEL_DIR",
                       help="start a new model from a trained one: its encoder, and its decoder B when the donor is "
                            "the same person (same family and sizes)")

    convert = sub.add_parser("convert", help="swap the target's face in every frame; protect what cannot be swapped")
    convert.add_argument("video", type=Path)
    convert.add_argument("--faces", type=Path, required=True, help="extract or clean folder of THIS video (every frame)")
    convert.add_argument("--model", type=Path, required=True, help="trained model folder")
    convert.add_argument("-o", "--output", type=Path, required=True, help="output .mp4")
    from deid.stages.colour import COLOURS
    from deid.stages.masks import MASKS
    from deid.stages.obfuscation import OBFUSCATIONS

    from deid.stages.convert_config import ConvertConfig

    add_setting(convert, ConvertConfig, "fallback", "hiding of faces that cannot be swapped (black: a solid fill; "
                "blur and pixelate are defeated by the parrot attack; none leaves them in clear and the leak check "
                "fails)", choices=OBFUSCATIONS.names() + ("none",))
    add_setting(convert, ConvertConfig, "color", "colour correction of the swapped face", choices=COLOURS.names())
    add_setting(convert, ConvertConfig, "mask", "where the swapped face is blended in", choices=MASKS.names())
    add_setting(convert, ConvertConfig, "max_gap", "interpolate the track over gaps up to N frames")
    add_setting(convert, ConvertConfig, "crf", "x264 quality of the output (lower = better, bigger)")
    _device_arg(convert)
    add_setting(convert, ConvertConfig, "save_frames", "also write every output frame as PNG")
    _protect_args(convert, method=False)

    prot = sub.add_parser("protect", help="hide every face of one or many videos (no donor, no training), leak-checked")
    prot.add_argument("inputs", type=Path, nargs="+", metavar="VIDEO", help="video files or folders of videos")
    prot.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR",
                      help="folder for <name>.mp4, <name>.frames.csv and summary.csv/.md/.json (not an input folder)")
    prot.add_argument("--recursive", action="store_true",
                      help="also protect the videos in the input folders' subfolders (outputs keep their relative paths)")
    prot.add_argument("--crf", type=int, default=18)
    _device_arg(prot)
    _protect_args(prot)

    base = sub.add_parser("baseline", help="naive de-identification (mask, blur, pixelate) of every face, leak-checked")
    base.add_argument("video", type=Path)
    base.add_argument("-o", "--output", type=Path, required=True, help="output .mp4")
    base.add_argument("--faces", type=Path, default=None,
                      help="extract folder of this video (default: extract it into <output>.extract/)")
    base.add_argument("--crf", type=int, default=18)
    _device_arg(base)
    _protect_args(base)

    ev = sub.add_parser("evaluate", help="de-identification distance and expression preservation of a swapped video")
    ev.add_argument("--original", type=Path, required=True, help="the original video (person A)")
    ev.add_argument("--swapped", type=Path, required=True, help="the de-identified video (any tool)")
    ev.add_argument("--ref-original", type=Path, required=True, help="a photo of the original person")
    ev.add_argument("--ref-donor", type=Path, required=True, help="a photo of the donor")
    ev.add_argument("-o", "--output", type=Path, required=True, help="output folder (reports/ inside)")
    from deid.reports.au_source import AU_SOURCES
    from deid.reports.metrics import METRICS
    from deid.stages.evaluate_config import EvaluateConfig

    add_setting(ev, EvaluateConfig, "frames", "frames sampled")
    add_setting(ev, EvaluateConfig, "seed", "seed of the frame sample")
    add_setting(ev, EvaluateConfig, "au", "where AU intensities come from (auto: pyfeat where its weights are "
                "present, else blendshapes, MediaPipe's shipped models; openface and pyfeat-csv read --au-original "
                "and --au-swapped)", choices=AU_SOURCES.names())
    add_setting(ev, EvaluateConfig, "au_original", "AU CSV of the original (openface / pyfeat-csv)")
    add_setting(ev, EvaluateConfig, "au_swapped", "AU CSV of the swapped video")
    add_setting(ev, EvaluateConfig, "gallery", "folder of identities (one sub-folder per person)")
    add_setting(ev, EvaluateConfig, "parrot", "parrot attack: detect blur/pixelation, force one, or skip")
    ev.add_argument("--metric", action="append", choices=METRICS.names(), default=None, dest="metrics",
                    help="a metric of reports/metrics/ to run (repeat for more; default: all of them)")
    add_setting(ev, EvaluateConfig, "pyfeat_model_dir", "py-feat weights in the hub cache layout")
    ev.add_argument("--name", default=None, help="label of this run in `deid compare`")
    _device_arg(ev)
    _damaged_arg(ev)

    cmp_ = sub.add_parser("compare", help="one table across evaluated runs (CSV, Markdown, HTML)")
    cmp_.add_argument("runs", type=Path, nargs="+", help="evaluate output folders")
    cmp_.add_argument("-o", "--output", type=Path, required=True)

    run = sub.add_parser("run", help="run every stage of a pipeline.yaml that is not up to date")
    run.add_argument("config", nargs="?", type=Path, default=Path("pipeline.yaml"))
    run.add_argument("--force", action="store_true", help="re-run every stage")
    _damaged_arg(run)

    batch = sub.add_parser("batch", help="run many target/donor pairs from a manifest (YAML or CSV), then one table")
    batch.add_argument("manifest", type=Path, help="pairs: YAML (pairs: [...]) or CSV (name,target,donor,...)")
    batch.add_argument("-o", "--output", type=Path, required=True, metavar="RUNS_DIR",
                       help="one folder per pair, shared extractions, status and comparison tables")
    batch.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local: worker processes on this machine; ray: Ray tasks (pip install 'deid[ray]')")
    batch.add_argument("--address", default=None,
                       help="ray: the cluster to use (default: a private Ray on 127.0.0.1 for this run). A Ray cluster "
                            "runs any code sent to it: keep it on a private network, with RAY_AUTH_MODE=token (docs/batch.md)")
    batch.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                       help="override a pipeline.yaml key for every pair, e.g. --set train.iterations=200 (repeatable)")
    batch.add_argument("--config", type=Path, default=None,
                       help="base pipeline.yaml (default: the manifest's `config:` key, else the built-in defaults)")
    batch.add_argument("--workers", type=int, default=None,
                       help="local: pairs at once (default: sized to the machine's cores, memory and GPUs)")
    batch.add_argument("--force", action="store_true", help="re-run every pair's own stages (shared ones are kept)")
    batch.add_argument("--dry-run", action="store_true",
                       help="list every pair's stages and whether each is up to date or would run, and why; run nothing")

    from deid.pipeline.ravdess import configure_parser as ravdess_args

    ravdess_args(sub.add_parser("ravdess", help="write a batch manifest for a RAVDESS tree (the study's split per actor)"))

    from deid.bench.all import configure_parser as bench_args

    bench_args(sub.add_parser("bench", help="measure extract/train/convert/evaluate throughput into one JSON"))

    sub.add_parser("doctor", help="what this machine can do for deid: ffmpeg, GPU, py-feat and its models, Ray, Chromium")

    demo = sub.add_parser("demo", help="build the built-in example (two public-domain portraits) and run it")
    demo.add_argument("-o", "--output", type=Path, default=Path("deid-demo"))
    _device_arg(demo)
    demo.add_argument("--force", action="store_true")
    demo.add_argument("--iterations", type=int, default=300, help="training iterations for the demo model (default 300)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # face_recognition_models imports pkg_resources; the warning is about that package, not the user's run.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.verbose:
        # deid's own detail only: other libraries' DEBUG output (fonts, image plugins) would bury it.
        logging.getLogger("deid").setLevel(logging.DEBUG)
    progress = not args.quiet
    try:
        return _dispatch(args, progress)
    except DeidError as exc:
        print(f"deid: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", 2)
    except OSError as exc:
        # A full disk, a read-only mount or a file in the way, wherever a stage met it: one line, not a traceback.
        known = disk_error(exc)
        if known is None:
            raise
        print(f"deid: error: {known}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deid: interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, progress: bool) -> int:
    if args.command == "extract":
        from deid.pipeline.commands import run_extract

        run_extract(args, progress)
    elif args.command == "clean":
        from deid.pipeline.commands import run_clean

        run_clean(args, progress)
    elif args.command == "sort":
        from deid.stages.sort import sort_faces

        index = sort_faces(args.input, args.output, args.by, progress)
        print(f"sorted by {args.by}: {index}")
    elif args.command == "train":
        from deid.pipeline.commands import run_train

        run_train(args, progress)
    elif args.command == "convert":
        from deid.pipeline.commands import run_convert

        run_convert(args, progress)
    elif args.command == "protect":
        from deid.pipeline.commands import run_protect

        return run_protect(args, progress)
    elif args.command == "baseline":
        from deid.pipeline.commands import run_baseline

        run_baseline(args, progress)
    elif args.command == "evaluate":
        from deid.pipeline.commands import run_evaluate

        run_evaluate(args, progress)
    elif args.command == "compare":
        from deid.reports.compare import compare

        table = compare(args.runs, args.output)
        print(table.to_string(index=False))
        print(f"-> {args.output / 'compare.csv'}, compare.md, compare.html")
    elif args.command == "run":
        from deid.pipeline.config import load_config
        from deid.pipeline.workflow import run_pipeline

        config = load_config(args.config)
        if args.allow_damaged:
            config = dataclasses.replace(config, allow_damaged=True)
        from deid.reports.au_source import note_unavailable

        note_unavailable([config.evaluate])
        for outcome in run_pipeline(config, force=args.force, progress=progress):
            verdict = outcome.summary.get("verdict") if outcome.key == "evaluate" else None
            if verdict:
                print(f"{config.pair}: {str(verdict.get('level', '?')).upper()}: {verdict.get('text', '')}")
    elif args.command == "batch":
        from deid.pipeline.batch import dry_run, run_batch

        if args.dry_run:
            listing = dry_run(args.manifest, args.output, sets=args.sets, config=args.config)
            print(listing.to_string(index=False))
            return 1 if listing["state"].str.startswith("invalid").any() else 0
        results = run_batch(args.manifest, args.output, executor=args.executor, address=args.address,
                            sets=args.sets, config=args.config, workers=args.workers, force=args.force,
                            progress=progress)
        return 0 if all(r.status in ("done", "skipped") for r in results) else 1
    elif args.command == "ravdess":
        from deid.pipeline.ravdess import run_command

        return run_command(args, progress)
    elif args.command == "bench":
        from deid.bench.all import run_command as run_bench

        return run_bench(args, progress)
    elif args.command == "doctor":
        from deid.pipeline.doctor import run_doctor

        return run_doctor()
    elif args.command == "demo":
        from deid.pipeline.demo import run_demo

        run_demo(args.output, device=args.device, force=args.force, progress=progress, iterations=args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
