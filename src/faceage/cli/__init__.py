"""The `faceage` command: one module per subcommand, each thin (parse, call, print).

Each subcommand module defines ``HELP``, ``EPILOG`` (examples), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported lazily so that ``faceage predict``
never pays for importing the training stack.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import sys

from faceage import __version__
from faceage.errors import AddressError, ConfigError, FaceageError, ImageError, ManifestError, WeightsError
from faceage.extras import MissingExtraError
from faceage.face.detect import DEFAULT_DETECTOR, DETECTOR_HELP
from faceage.models import DEFAULT, list_models

# name -> module under faceage.cli; the order is the order shown in --help.
COMMANDS = {
    "predict": "predict",
    "check": "check",
    "evaluate": "evaluate",
    "train": "train",
    "prepare": "prepare",
    "experiment": "experiment",
    "export": "export",
    "serve": "serve",
    "video": "video",
    "models": "models",
}

_SUMMARIES = {
    "predict": "estimate ages of the faces in photos",
    "check": "age checks: is each face at least N? pass or refer",
    "evaluate": "score a model on a labelled data set (MAE, CS curve, error by age)",
    "train": "train an age model from a YAML config",
    "prepare": "import a data set: detect, align and crop faces, write a manifest",
    "experiment": "research protocols: split, ablation, leave-one-person-out, compare",
    "export": "export a model to ONNX (fp32 or int8) for inference without PyTorch",
    "serve": "REST API and web page for age estimation",
    "video": "ages of the people in a video or a camera stream, tracked and fused over time",
    "models": "list the bundled models (names for --model)",
}


#: exit status per error class (the first class in an error's MRO that is listed decides); a command's
#: own run() returns 1 when some of its files failed and the rest were processed
EXIT_CODES: dict[type[BaseException], int] = {
    ConfigError: 2,  # bad options, config or usage
    ManifestError: 3,  # a data set or manifest without usable rows
    WeightsError: 4,  # a model file or checkpoint that cannot be used; ModelOutputError: NaN/inf outputs
    ImageError: 5,  # an image given alone that cannot be decoded
    AddressError: 6,  # serve: the port is in use or the address is not this machine's
    MissingExtraError: 7,  # an optional dependency is not installed (the message names the pip line)
    FaceageError: 2,
    KeyboardInterrupt: 130,
    BrokenPipeError: 141,  # the output's reader went away (``| head``): what a shell reports for SIGPIPE
}


def exit_code(exc: BaseException) -> int:
    return next(EXIT_CODES[c] for c in type(exc).__mro__ if c in EXIT_CODES)


#: the --model option's help, the same in every command
MODEL_HELP = (f"a bundled model's name ({', '.join(list_models())}: see faceage models), a model file or a training "
              f"run folder (default: {DEFAULT})")


def add_tta_argument(p: argparse.ArgumentParser) -> None:
    """``--tta``: the test-time views averaged per face (faceage.core.views), shared by predict/evaluate/serve."""
    from faceage.core.views import TTA

    p.add_argument("--tta", choices=tuple(TTA), default="zoomflip",
                   help="views of each face averaged: zoomflip = zoom 0.95 + mirrored zoom 1.05 (default), "
                        "full = zoom 0.95 and 1.05 each as is and mirrored (a little more accurate, twice "
                        "the network runs), flip = face + mirror image, none = the face only")


def detector_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value), VALUE read as JSON when it is JSON (``false``, ``1024``, ``[15, -15]``);
    the detector then checks it against its option's type (``cnn=maybe`` is refused)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def add_photo_arguments(p: argparse.ArgumentParser, *, fallback: bool = True) -> None:
    """The options that decide how a photo (or a video frame) is processed, the same for predict, batch and
    video: the model, its test-time views, the face detector and its options, and which faces are scored."""
    p.add_argument("--largest", action="store_true", help="only the largest face of each image")
    p.add_argument("--min-face", type=int, default=0, help="ignore faces narrower than this many pixels")
    p.add_argument("--max-faces", type=int, default=0, help="only the largest N faces of each image (0: all)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, help=DETECTOR_HELP)
    p.add_argument("--detector-option", action="append", default=[], metavar="KEY=VALUE", type=detector_option,
                   help="a face detector option, VALUE as JSON (repeatable), e.g. cnn=false, max_side=1024 "
                        "(see docs/face-frontend.md)")
    if fallback:
        p.add_argument("--fallback", action="store_true", help="score a centre crop when no face is found")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    add_tta_argument(p)


def predict_options(args: argparse.Namespace):
    """The :class:`faceage.engine.PredictOptions` of :func:`add_photo_arguments`' options, checked."""
    from faceage.engine import PredictOptions

    return PredictOptions(model=args.model, tta=args.tta, detector=getattr(args, "detector", DEFAULT_DETECTOR),
                          detector_options=dict(args.detector_option), largest=args.largest,
                          min_face=args.min_face, max_faces=args.max_faces, fallback=getattr(args, "fallback", False))


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceage",
        description="Estimate ages from face photos with MA-SFV2, offline.",
        epilog="examples:\n  faceage predict photo.jpg\n  faceage predict -r photos/ --json\n"
        "  faceage prepare utkface UTKFace/ crops/ --size 128\n"
        "  faceage train --config cpu data.manifest=crops/manifest.csv --out runs/cpu\n"
        "  faceage evaluate --data crops/manifest.csv --model runs/cpu\n\n"
        "Run 'faceage COMMAND --help' for the options of one command.\n\n"
        "exit status: 0 done; 1 some files failed (the others were processed); 2 bad options or config;\n"
        "3 unusable data set or manifest; 4 unusable model file or checkpoint, or NaN/infinite model outputs\n"
        "(predict: for some face); 5 unreadable image (given alone); 6 serve cannot listen on its address\n"
        "(port in use); 7 an optional dependency is missing (the message names the 'pip install' line);\n"
        "130 interrupted; 141 the output's reader went away (a closed pipe)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"faceage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module in COMMANDS.items():
        if wanted is not None and wanted != name:
            sub.add_parser(name, help=_SUMMARIES.get(name))
            continue
        mod = importlib.import_module(f"faceage.cli.{module}")
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.HELP,
            epilog=mod.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _stdout_closed() -> bool:
    """Whether standard output's reader has gone away: the write end of a pipe without a reader polls as an
    error. Where that cannot be asked (no poll, a replaced stdout), a broken pipe is taken to be stdout's."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (AttributeError, OSError, ValueError):
        return True
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if hasattr(sys.stdout, "reconfigure"):  # a file name that is not UTF-8 is printed \udcNN-escaped, never a crash
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        # KEY=VALUE overrides may come after options (``train --config cpu optim.lr=0.1``)
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    if not hasattr(args, "_run"):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError as exc:
        if not _stdout_closed():  # another pipe's failure (a worker's, say) is a real error
            raise
        try:  # point stdout at /dev/null so the flush at exit cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a replaced sys.stdout without a file descriptor
            pass
        return exit_code(exc)
    except FaceageError as exc:
        print(f"faceage {args.command}: error: {exc} [{exc.code}]", file=sys.stderr)
        return exit_code(exc)

