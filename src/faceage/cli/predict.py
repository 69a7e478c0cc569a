"""faceage predict: ages of the faces in photos, as text lines, JSON, or annotated copies."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceage.cli import add_tta_argument

HELP = "estimate the ages of the faces in photos (files, folders, globs)"
EPILOG = """examples:
  faceage predict photo.jpg
  faceage predict -r photos/ --json > ages.jsonl
  faceage predict 'shots/*.png' --largest --annotate annotated/
  faceage predict photo.jpg --model runs/cpu/best.safetensors
  faceage predict group.jpg --min-face 60 --max-faces 10 --detector-option cnn=false
  faceage predict -r archive/ --workers 8 --output ages.parquet

Text output: one line per face: file, box [left, top, right, bottom], age and its
80% interval. --json: one JSON object per image: {"path", "faces": [{"box", "eyes",
"age", "age_interval", "score"}]}; unreadable files give {"path", "error"}. Each file is
estimated in a worker process: a file that fails (even with a native crash), a missing
path or a dangling link is reported as that file's error and the run goes on. A face
whose model outputs are NaN or infinite is reported with no age and an error (code
bad_model_output; --json: "age": null, "error", "code"). The exit status is 4 when some
face got such an error, else 1 when some file could not be read, 0 otherwise.

--output FILE (.parquet, .csv or .jsonl): batch mode (docs/batch.md): --workers
processes (default: one per core), one row per face plus one per image without a face
or unreadable; rerunning the same command skips what is done."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--largest", action="store_true", help="only the largest face of each image")
    p.add_argument("--min-face", type=int, default=0, help="ignore faces narrower than this many pixels")
    p.add_argument("--max-faces", type=int, default=0, help="only the largest N faces of each image (0: all)")
    p.add_argument("--detector-option", action="append", default=[], metavar="KEY=VALUE", type=detector_option,
                   help="a face detector option, VALUE as JSON (repeatable), e.g. cnn=false, max_side=1024, "
                        "close_up=0 (see docs/face-frontend.md)")
    p.add_argument("--fallback", action="store_true", help="score a centre crop when no face is found")
    p.add_argument("--annotate", metavar="DIR", default=None, help="write copies with boxes and ages drawn")
    p.add_argument("--model", default=None, help="model file or run folder (default: the bundled model)")
    add_tta_argument(p)
    p.add_argument("--output", metavar="FILE", default=None,
                   help="batch mode: write one row per face to FILE (.parquet, .csv, .jsonl), resumably")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --output: worker processes, one single-threaded model each (default: one per core)")


def run(args: argparse.Namespace) -> int:
    if args.output is not None or args.workers is not None:
        from faceage.batch.run import run_cli

        return run_cli(args)
    taken: set[Path] = set()  # never write over an input, nor twice to one file
    bad_faces = 0  # faces whose model outputs were NaN or infinite (no age)

    def show(path: Path, faces: list, bar) -> None:
        nonlocal bad_faces
        bad_faces += sum(f.error is not None for f in faces)
        if args.json:
            print(json.dumps({"path": str(path), "faces": [f.to_dict() for f in faces]}, allow_nan=False), flush=True)
        elif not faces:
            bar.write(f"{path}: no face found")
        else:
            for f in faces:
                if f.error is not None:
                    bar.write(f"{path}: box {list(f.box)} error: {f.error} [{f.code}]", file=sys.stderr)
                    continue
                lo, hi = f.age_interval
                note = " (no face found: centre crop)" if f.fallback else ""
                bar.write(f"{path}: box {list(f.box)} age {f.age:.1f} (80% interval {lo:.0f}-{hi:.0f}){note}")
        if args.annotate:
            from faceage.annotate import annotate
            from faceage.imageio import load_image

            annotate(load_image(path), faces).save(annotated_path(Path(args.annotate), path, taken))

    options = {"largest": args.largest, "min_face": args.min_face, "max_faces": args.max_faces,
               "fallback": args.fallback}
    status = run_photos(args, "predict", options, show, taken=taken)
    if bad_faces:
        from faceage.cli import exit_code
        from faceage.errors import ModelOutputError

        print(f"{bad_faces} faces got NaN or infinite model outputs (no age) [{ModelOutputError.code}]",
              file=sys.stderr)
        return exit_code(ModelOutputError())
    return status


def run_photos(args: argparse.Namespace, method: str, options: dict, show, *, taken: set[Path] | None = None,
               ready=None) -> int:
    """The per-photo run shared by ``predict`` and ``check``: the files of ``args.paths``, each given to
    ``AgeEstimator.<method>(path, **options)`` in an isolated worker process, ``show(path, result, bar)``
    per photo, each file's error reported as that file's (``{"path", "error"}`` with ``--json``); 1 when
    some file failed. ``ready(estimator)`` may refuse the run before any file is read."""
    from tqdm import tqdm

    from faceage.errors import FaceageError
    from faceage.estimator import AgeEstimator
    from faceage.imageio import iter_images
    from faceage.workers import imap_isolated

    problems: list[tuple[str, FaceageError]] = []  # paths that match nothing, dangling links, unreadable folders
    files = list(iter_images(args.paths, recursive=args.recursive, on_error=lambda *p: problems.append(p)))
    if not files and not problems:
        raise FaceageError(f"no image found in {' '.join(args.paths)} (use -r for sub-folders)")
    detector = dict(args.detector_option)
    est = AgeEstimator(args.model, tta=args.tta, detector_options=detector)  # a bad model or option: one error, first
    if ready is not None:
        ready(est)
    failed = 0
    if taken is not None:
        taken.update(p.resolve() for p in files)
    bar = tqdm(total=len(files), unit="img", desc=method, disable=len(files) <= 3, file=sys.stderr)

    def report_error(path, message: str) -> None:
        nonlocal failed
        failed += 1
        if args.json:
            print(json.dumps({"path": str(path), "error": message}), flush=True)
        else:
            bar.write(f"{path}: error: {message}", file=sys.stderr)

    for path, problem in problems:
        report_error(path, str(problem))
    jobs = [(str(p), method, options) for p in files]
    results = imap_isolated(_estimate, jobs, initializer=_load_estimator, initargs=(args.model, args.tta, detector),
                            on_crash=_crashed, suspect=lambda result: result[2])
    for path, (faces, error, _) in zip(files, results):
        bar.update(1)
        if error is not None:
            report_error(path, error)
            continue
        show(path, faces, bar)
    bar.close()
    if failed:
        print(f"{failed} of {len(files) + len(problems)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


def detector_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value), VALUE parsed as JSON when it is JSON (``false``, ``1024``, ``[15, -15]``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


_ESTIMATOR = None  # per worker process


def _load_estimator(model: str | None, tta: str, detector_options: dict) -> None:
    global _ESTIMATOR
    from faceage.estimator import AgeEstimator

    _ESTIMATOR = AgeEstimator(model, tta=tta, detector_options=detector_options)


def _estimate(job: tuple[str, str, dict]) -> tuple[list | None, str | None, bool]:
    """(faces, None, False) or (None, error, worker suspect?) for one file, in the worker process; never raises.
    ``job``: (path, the AgeEstimator method: predict or check, its options)."""
    from faceage.errors import FaceageError
    from faceage.workers import native_failure, one_line

    path, method, options = job
    try:
        return getattr(_ESTIMATOR, method)(path, **options), None, False
    except FaceageError as exc:
        return None, str(exc), False
    except Exception as exc:  # noqa: BLE001 - one file's failure is that file's error, never the run's
        return None, f"{path}: {one_line(exc)}", native_failure(exc)


def _crashed(job: tuple) -> tuple[None, str, bool]:
    from faceage.workers import CRASH_MESSAGE

    return None, f"{job[0]}: {CRASH_MESSAGE}", True


def annotated_path(folder: Path, source: Path, taken: set[Path]) -> Path:
    """DIR/NAME.png, numbered when the name is taken (by an input or an earlier output)."""
    folder.mkdir(parents=True, exist_ok=True)
    out, n = folder / f"{source.stem}.png", 1
    while out.resolve() in taken:
        out, n = folder / f"{source.stem}-{n}.png", n + 1
    taken.add(out.resolve())
    return out
