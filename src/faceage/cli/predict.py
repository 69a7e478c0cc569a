"""faceage predict: ages of the faces in photos, as text lines, JSON, or annotated copies."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from faceage.cli import EXIT_CODES, add_photo_arguments, predict_options
from faceage.errors import ImageError

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
path or a dangling link is reported as that file's error and the run goes on. The exit
status is 1 when some file could not be read, 5 when the only file given could not be
read, 0 otherwise.

--output FILE (.parquet, .csv or .jsonl): batch mode (docs/batch.md): --workers
processes (default: one per core), one row per face plus one per image without a face
or unreadable (with the error's code, e.g. worker_crashed when a native crash killed the
worker process: the run goes on); rerunning the same command skips what is done, failed
files included unless --retry-errors is given."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    add_photo_arguments(p)
    p.add_argument("--annotate", metavar="DIR", default=None, help="write copies with boxes and ages drawn")
    p.add_argument("--output", metavar="FILE", default=None,
                   help="batch mode: write one row per face to FILE (.parquet, .csv, .jsonl), resumably")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --output: worker processes, one single-threaded model each (default: one per core)")
    p.add_argument("--retry-errors", action="store_true",
                   help="with --output: try again the files an earlier run could not read (by default a rerun "
                        "skips every file already in the output, failed ones included)")


def run(args: argparse.Namespace) -> int:
    if args.output is not None or args.workers is not None or args.retry_errors:
        from faceage.batch.run import run_cli

        return run_cli(args)
    taken: set[Path] = set()  # never write over an input, nor twice to one file

    def show(path: Path, faces: list, bar) -> None:
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
            from faceage.imageio import load_image

            annotate(load_image(path), faces).save(annotated_path(Path(args.annotate), path, taken))

    return run_photos(args, "predict", dataclasses.asdict(predict_options(args).faces), show, taken=taken)


def run_photos(args: argparse.Namespace, method: str, options: dict, show, *, taken: set[Path] | None = None,
               ready=None) -> int:
    """The per-photo run shared by ``predict`` and ``check``: the files of ``args.paths``, each given to
    ``AgeEstimator.<method>(path, **options)`` in an isolated worker process (:func:`faceage.engine.isolated_calls`:
    a native crash costs only its file), ``show(path, result, bar)`` per photo, each file's error reported as
    that file's (``{"path", "error"}`` with ``--json``). Exit status 1 when some file failed, 5 when the only
    file given failed. ``ready(estimator)`` may refuse the run before any file is read."""
    from tqdm import tqdm

    from faceage.engine import isolated_calls
    from faceage.errors import FaceageError
    from faceage.imageio import iter_images

    problems: list[tuple[str, FaceageError]] = []  # paths that match nothing, dangling links, unreadable folders
    files = list(iter_images(args.paths, recursive=args.recursive, on_error=lambda *p: problems.append(p)))
    if not files and not problems:
        raise FaceageError(f"no image found in {' '.join(args.paths)} (use -r for sub-folders)")
    engine = predict_options(args)
    est = engine.estimator()  # a bad model or option: one error, first
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
    # one worker process running a multi-threaded model
    for path, (result, error, _) in zip(files, isolated_calls(engine, files, method, options)):
        bar.update(1)
        if error is not None:
            report_error(path, error)
            continue
        show(path, result, bar)
    bar.close()
    if not failed:
        return 0
    total = len(files) + len(problems)
    if total == 1:  # an image given alone that cannot be read: its own exit status (see faceage --help)
        return EXIT_CODES[ImageError]
    print(f"{failed} of {total} files could not be read", file=sys.stderr)
    return 1


def annotated_path(folder: Path, source: Path, taken: set[Path]) -> Path:
    """DIR/NAME.png, numbered when the name is taken (by an input or an earlier output)."""
    folder.mkdir(parents=True, exist_ok=True)
    out, n = folder / f"{source.stem}.png", 1
    while out.resolve() in taken:
        out, n = folder / f"{source.stem}-{n}.png", n + 1
    taken.add(out.resolve())
    return out
