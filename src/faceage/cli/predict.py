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

Text output: one line per face: file, box [left, top, right, bottom], age and its
80% interval. --json: one JSON object per image: {"path", "faces": [{"box", "eyes",
"age", "age_interval", "score"}]}; unreadable files give {"path", "error"}. Each file is
estimated in a worker process: a file that fails (even with a native crash), a missing
path or a dangling link is reported as that file's error and the run goes on. The exit
status is 1 when some file could not be read, 0 otherwise."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--largest", action="store_true", help="only the largest face of each image")
    p.add_argument("--min-face", type=int, default=0, help="ignore faces narrower than this many pixels")
    p.add_argument("--fallback", action="store_true", help="score a centre crop when no face is found")
    p.add_argument("--annotate", metavar="DIR", default=None, help="write copies with boxes and ages drawn")
    p.add_argument("--model", default=None, help="model file or run folder (default: the bundled model)")
    add_tta_argument(p)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from faceage.errors import FaceageError
    from faceage.estimator import AgeEstimator
    from faceage.imageio import iter_images, load_image
    from faceage.workers import imap_isolated

    problems: list[tuple[str, FaceageError]] = []  # paths that match nothing, dangling links, unreadable folders
    files = list(iter_images(args.paths, recursive=args.recursive, on_error=lambda *p: problems.append(p)))
    if not files and not problems:
        raise FaceageError(f"no image found in {' '.join(args.paths)} (use -r for sub-folders)")
    AgeEstimator(args.model, tta=args.tta)  # a bad model file is one error here, before any file
    failed = 0
    taken = {p.resolve() for p in files}  # never write over an input, nor twice to one file
    bar = tqdm(total=len(files), unit="img", desc="predict", disable=len(files) <= 3, file=sys.stderr)

    def report_error(path, message: str) -> None:
        nonlocal failed
        failed += 1
        if args.json:
            print(json.dumps({"path": str(path), "error": message}), flush=True)
        else:
            bar.write(f"{path}: error: {message}", file=sys.stderr)

    for path, problem in problems:
        report_error(path, str(problem))
    jobs = [(str(p), args.largest, args.min_face, args.fallback) for p in files]
    results = imap_isolated(_estimate, jobs, initializer=_load_estimator, initargs=(args.model, args.tta),
                            on_crash=_crashed, suspect=lambda result: result[2])
    for path, (faces, error, _) in zip(files, results):
        bar.update(1)
        if error is not None:
            report_error(path, error)
            continue
        if args.json:
            print(json.dumps({"path": str(path), "faces": [f.to_dict() for f in faces]}), flush=True)
        elif not faces:
            bar.write(f"{path}: no face found")
        else:
            for f in faces:
                lo, hi = f.age_interval
                note = " (no face found: centre crop)" if f.fallback else ""
                bar.write(f"{path}: box {list(f.box)} age {f.age:.1f} (80% interval {lo:.0f}-{hi:.0f}){note}")
        if args.annotate:
            from faceage.annotate import annotate

            annotate(load_image(path), faces).save(annotated_path(Path(args.annotate), path, taken))
    bar.close()
    if failed:
        print(f"{failed} of {len(files) + len(problems)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


_ESTIMATOR = None  # per worker process


def _load_estimator(model: str | None, tta: str) -> None:
    global _ESTIMATOR
    from faceage.estimator import AgeEstimator

    _ESTIMATOR = AgeEstimator(model, tta=tta)


def _estimate(job: tuple[str, bool, int, bool]) -> tuple[list | None, str | None, bool]:
    """(faces, None, False) or (None, error, worker suspect?) for one file, in the worker process; never raises."""
    from faceage.errors import FaceageError
    from faceage.workers import native_failure, one_line

    path, largest, min_face, fallback = job
    try:
        return _ESTIMATOR.predict(path, largest=largest, min_face=min_face, fallback=fallback), None, False
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
