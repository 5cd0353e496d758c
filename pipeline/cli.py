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


def _extract_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="a video file or a folder of images")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--every", type=int, default=1, help="process every N-th frame (default 1)")
    from deid.models.detectors import DETECTORS

    parser.add_argument("--detector", choices=DETECTORS.names(), default="mtcnn")
    parser.add_argument("--size", type=int, default=256, help="aligned crop size in px (default 256)")
    parser.add_argument("--centering", choices=("head", "face", "legacy"), default="head")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--detect-every", type=int, default=1,
                        help="run the detector every K processed frames, track landmarks in between (default 1)")
    parser.add_argument("--detect-scale", type=float, default=1.0,
                        help="downscale frames by this factor for detection only (default 1.0)")
    parser.add_argument("--min-face-size", type=int, default=40, help="smallest face in px (default 40)")
    parser.add_argument("--min-score", type=float, default=0.9,
                        help="mtcnn: lowest face probability kept (default 0.9)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per detector batch (default 8)")
    parser.add_argument("--identity", action="store_true", help="store the 128-d face_recognition embedding")
    parser.add_argument("--save-frames", action="store_true", help="also write every processed frame as PNG")
    parser.add_argument("--force", action="store_true", help="re-run even if the outputs are up to date")
    _damaged_arg(parser)


def _damaged_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-damaged", action="store_true",
                        help="process what decodes of a truncated or damaged input instead of stopping "
                             "(recorded in the summary)")


def _clean_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="an extract (or clean) output folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--reference", type=Path, action="append", default=[], metavar="IMG",
                        help="photo of the person to keep (repeatable); without one, the input's dominant identity")
    parser.add_argument("--reference-mode", choices=("mean", "closest"), default="mean",
                        help="distance to the mean of the references or to the closest one (default mean)")
    parser.add_argument("--threshold", type=float, default=0.6, help="identity distance threshold (default 0.6)")
    parser.add_argument("--min-size", type=int, default=40, help="smallest face box side in px (0 = off)")
    parser.add_argument("--blur", type=float, default=0.35, metavar="RATIO",
                        help="reject faces less sharp than RATIO x the input's median sharpness (0 = off)")
    parser.add_argument("--max-landmark-distance", type=float, default=0.1,
                        help="landmark misfit limit in face units (0 = off)")
    parser.add_argument("--max-yaw", type=float, default=50.0, help="degrees (0 = off)")
    parser.add_argument("--max-pitch", type=float, default=40.0, help="degrees (0 = off)")
    parser.add_argument("--dedupe", action="store_true", help="drop near-duplicate consecutive faces")
    parser.add_argument("--dedupe-threshold", type=float, default=3.0, help="mean grey-level difference")
    parser.add_argument("--max-faces", type=int, default=0, help="keep at most N, the most varied (0 = all)")
    parser.add_argument("--force", action="store_true", help="re-run even if the outputs are up to date")


def _protect_args(parser: argparse.ArgumentParser, method: bool = True) -> None:
    """Options of the protection pass and leak check (pipeline.yaml `protect:`), shared by protect/baseline/convert."""
    from deid.models.search import names as search_names
    from deid.stages.protect_config import ProtectConfig

    defaults = ProtectConfig()
    if method:
        from deid.stages.obfuscation import OBFUSCATIONS

        parser.add_argument("--method", choices=OBFUSCATIONS.names(), default=defaults.method,
                            help="how faces are hidden (default mask: a solid fill; blur and pixelate are defeated by "
                                 "the parrot attack)")
    parser.add_argument("--search", choices=search_names(), default=defaults.search,
                        help=f"recall-tuned detector of the protection pass (default {defaults.search})")
    parser.add_argument("--checker", choices=search_names(), default=defaults.checker,
                        help=f"leak check detector, different from --search (default {defaults.checker})")
    parser.add_argument("--min-face", type=int, default=defaults.min_face,
                        help=f"smallest face searched for, px (default {defaults.min_face})")
    parser.add_argument("--hold", type=int, default=defaults.hold,
                        help=f"keep each hidden region this many frames before/after a detection (default {defaults.hold})")
    parser.add_argument("--check-every", type=int, default=defaults.check_every,
                        help="leak check reads every N-th output frame (default 1: all)")
    parser.add_argument("--repair-rounds", type=int, default=defaults.repair_rounds,
                        help="hide every face the leak check finds, then check again, at most N rounds; what survives "
                             f"the last round fails the clip (default {defaults.repair_rounds}; 0 = never repair)")
    parser.add_argument("--audio", choices=("keep", "drop"), default=defaults.audio,
                        help="keep or drop the audio track (a voice identifies too; default keep)")
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
    train.add_argument("--device", default="auto")
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

    convert.add_argument("--fallback", choices=OBFUSCATIONS.names() + ("none",), default="black",
                         help="hiding of faces that cannot be swapped (default black: a solid fill; blur and pixelate "
                              "are defeated by the parrot attack; none leaves them in clear and the leak check fails)")
    convert.add_argument("--color", choices=COLOURS.names(), default="avg")
    convert.add_argument("--mask", choices=MASKS.names(), default="extended")
    convert.add_argument("--max-gap", type=int, default=5, help="interpolate the track over gaps up to N frames")
    convert.add_argument("--crf", type=int, default=18)
    convert.add_argument("--device", default="auto")
    convert.add_argument("--save-frames", action="store_true")
    _protect_args(convert, method=False)

    prot = sub.add_parser("protect", help="hide every face of one or many videos (no donor, no training), leak-checked")
    prot.add_argument("inputs", type=Path, nargs="+", metavar="VIDEO", help="video files or folders of videos")
    prot.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR",
                      help="folder for <name>.mp4, <name>.frames.csv and summary.csv/.md/.json (not an input folder)")
    prot.add_argument("--recursive", action="store_true",
                      help="also protect the videos in the input folders' subfolders (outputs keep their relative paths)")
    prot.add_argument("--crf", type=int, default=18)
    prot.add_argument("--device", default="auto")
    _protect_args(prot)

    base = sub.add_parser("baseline", help="naive de-identification (mask, blur, pixelate) of every face, leak-checked")
    base.add_argument("video", type=Path)
    base.add_argument("-o", "--output", type=Path, required=True, help="output .mp4")
    base.add_argument("--faces", type=Path, default=None,
                      help="extract folder of this video (default: extract it into <output>.extract/)")
    base.add_argument("--crf", type=int, default=18)
    base.add_argument("--device", default="auto")
    _protect_args(base)

    ev = sub.add_parser("evaluate", help="de-identification distance and expression preservation of a swapped video")
    ev.add_argument("--original", type=Path, required=True, help="the original video (person A)")
    ev.add_argument("--swapped", type=Path, required=True, help="the de-identified video (any tool)")
    ev.add_argument("--ref-original", type=Path, required=True, help="a photo of the original person")
    ev.add_argument("--ref-donor", type=Path, required=True, help="a photo of the donor")
    ev.add_argument("-o", "--output", type=Path, required=True, help="output folder (reports/ inside)")
    ev.add_argument("--frames", type=int, default=1000, help="frames sampled (default 1000)")
    ev.add_argument("--seed", type=int, default=0)
    from deid.reports.au_source import AU_SOURCES
    from deid.reports.metrics import METRICS

    ev.add_argument("--au", choices=AU_SOURCES.names(), default="auto",
                    help="where AU intensities come from (default auto: pyfeat where its weights are present, else "
                         "blendshapes, MediaPipe's shipped models; openface and pyfeat-csv read --au-original and "
                         "--au-swapped)")
    ev.add_argument("--au-original", type=Path, default=None, help="AU CSV of the original (openface / pyfeat-csv)")
    ev.add_argument("--au-swapped", type=Path, default=None, help="AU CSV of the swapped video")
    ev.add_argument("--gallery", type=Path, default=None, help="folder of identities (one sub-folder per person)")
    ev.add_argument("--parrot", choices=("auto", "blur", "pixelate", "none"), default="auto")
    ev.add_argument("--metric", action="append", choices=METRICS.names(), default=None, dest="metrics",
                    help="a metric of reports/metrics/ to run (repeat for more; default: all of them)")
    ev.add_argument("--pyfeat-model-dir", type=Path, default=None, help="py-feat weights in the hub cache layout")
    ev.add_argument("--name", default=None, help="label of this run in `deid compare`")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
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
                            "runs any code sent to it: keep it on a private network, with RAY_AUTH_MODE=token (README)")
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
    demo.add_argument("--device", default="auto")
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
