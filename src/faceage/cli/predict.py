"""faceage predict: ages of the faces in photos, as text lines, JSON, or annotated copies."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceage.cli import EXIT_CODES, add_photo_arguments, predict_options
from faceage.errors import ImageError

HELP = "estimate the ages of the faces in photos (files, folders, globs)"
EPILOG = """examples:
  faceage predict photo.jpg
  faceage predict -r photos/ --json > ages.jsonl
  cat photo.jpg | faceage predict - --json
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
face got such an error, else 1 when some file could not be read, 5 when the only file
given could not be read, 0 otherwise.
PATH - reads one image from standard input (reported as path "-").

--annotate DIR: copies with boxes and ages drawn, in the input's format (PNG where Pillow
cannot write it) and at the input's place under the folder it was found in (DIR/sub/x.jpg
for photos/sub/x.jpg); an existing input is never overwritten (a number is added).

--output FILE (.parquet, .csv or .jsonl): batch mode (docs/batch.md): --workers
processes (default: one per core), one row per face plus one per image without a face
or unreadable (with the error's code, e.g. worker_crashed when a native crash killed the
worker process: the run goes on); rerunning the same command skips what is done, failed
files included unless --retry-errors is given."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders or glob patterns; - reads one image from standard input")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no summary on standard error (each file's error is still reported)")
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
    from faceage.errors import FaceageError

    batch = args.output is not None or args.workers is not None or args.retry_errors
    stdin = "-" in args.paths
    if stdin and (len(args.paths) > 1 or batch):
        raise FaceageError("- (one image from standard input) cannot be combined with other paths or --output")
    if batch:
        return run_batch_cli(args)
    taken: set[Path] = set()  # never write over an input, nor twice to one file
    data = sys.stdin.buffer.read() if stdin else None  # read before the worker starts: a pipe never waits on it
    bad_faces = 0  # faces whose model outputs were NaN or infinite (no age)

    def show(path: Path, result) -> None:
        nonlocal bad_faces
        faces = result.ages()
        bad_faces += sum(f.error is not None for f in faces)
        if args.annotate:
            from faceage.annotate import annotate
            from faceage.core.imageio import load_image

            source = data if stdin else path
            save_annotated(annotate(load_image(source), faces), source, Path(args.annotate),
                           Path("stdin") if stdin else place(path, args.paths), taken)

    status = run_photos(args, show, taken=taken, stdin=data)
    if bad_faces:
        from faceage.cli import exit_code
        from faceage.errors import ModelOutputError

        print(f"{bad_faces} faces got NaN or infinite model outputs (no age) [{ModelOutputError.code}]",
              file=sys.stderr)
        return exit_code(ModelOutputError())
    return status


def run_batch_cli(args: argparse.Namespace) -> int:
    """``faceage predict --output FILE [--workers N]`` (batch mode, :mod:`faceage.batch`): exit status 1
    when some image could not be read."""
    from faceage.batch.run import run_batch
    from faceage.errors import FaceageError

    if args.output is None:
        raise FaceageError("--workers needs --output FILE (.parquet, .csv or .jsonl)")
    for flag, given in (("--annotate", args.annotate), ("--json", args.json)):
        if given:
            raise FaceageError(f"{flag} cannot be combined with --output (the output file holds the results)")
    quiet = getattr(args, "quiet", False)
    report = run_batch(args.paths, args.output, options=predict_options(args), recursive=args.recursive,
                       workers=args.workers, retry_errors=args.retry_errors, progress=not quiet)
    if not quiet:  # --quiet: the exit status and the output file's error rows say what failed
        print(report.summary(), file=sys.stderr)
    return 1 if report.errors else 0


def run_photos(args: argparse.Namespace, show=None, *, taken: set[Path] | None = None, ready=None,
               stdin: bytes | None = None) -> int:
    """The per-photo run shared by ``predict`` and ``check``: the files of ``args.paths``, each analysed with the
    options of ``args`` (:func:`faceage.cli.predict_options`) in an isolated worker process
    (:func:`faceage.engine.isolated_results`: a native crash costs only its file), and printed as the result's
    text lines (errors on standard error) or, with ``--json``, its JSON line; then ``show(path, result)`` if given.
    Each file's error is reported as that file's (``{"path", "error"}`` with ``--json``). Exit status 1 when some
    file failed, 5 when the only file given failed. ``ready(record, options)`` (the model's record, the
    :class:`~faceage.engine.PredictOptions`) may refuse the run before any file is read, and returns the
    age-check policy to apply (None: ages). ``stdin``: the bytes of one image read from
    standard input, reported as path "-", instead of ``args.paths``."""
    from tqdm import tqdm

    from faceage.engine import isolated_results
    from faceage.errors import FaceageError
    from faceage.core.walk import iter_images

    problems: list[tuple[str, FaceageError]] = []  # paths that match nothing, dangling links, unreadable folders
    files = [Path("-")] if stdin is not None else list(
        iter_images(args.paths, recursive=args.recursive, on_error=lambda *p: problems.append(p)))
    if not files and not problems:
        raise FaceageError(f"no image found in {' '.join(args.paths)} (use -r for sub-folders)")
    engine = predict_options(args)
    record = engine.check()  # a bad model or option: one error, first; the workers load the model
    policy = ready(record, engine) if ready is not None else None
    failed = 0
    if taken is not None:
        taken.update(p.resolve() for p in files)
    quiet = getattr(args, "quiet", False)
    bar = tqdm(total=len(files), unit="img", desc="predict" if policy is None else "check",
               disable=len(files) <= 3 or quiet, file=sys.stderr)

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
    sources = [stdin] if stdin is not None else files
    for path, (result, error, _) in zip(files, isolated_results(engine, sources)):
        bar.update(1)
        if error is not None:
            report_error(path, error)
            continue
        if args.json:
            print(json.dumps(result.to_json(str(path), policy), allow_nan=False), flush=True)
        else:
            for line, is_error in result.lines(str(path), policy):
                bar.write(line, file=sys.stderr if is_error else sys.stdout)
        if show is not None:
            show(path, result)
    bar.close()
    if not failed:
        return 0
    total = len(files) + len(problems)
    if total == 1:  # an image given alone that cannot be read: its own exit status (see faceage --help)
        return EXIT_CODES[ImageError]
    if not quiet:
        print(f"{failed} of {total} files could not be read", file=sys.stderr)
    return 1


def place(path: Path, arguments: list[str]) -> Path:
    """``path`` relative to the folder argument it was found in (``photos/sub/x.jpg`` -> ``sub/x.jpg``); its
    name alone for a file or glob argument."""
    for arg in arguments:
        root = Path(arg)
        if root.is_dir() and path.is_relative_to(root):
            return path.relative_to(root)
    return Path(path.name)


def save_annotated(img, source, folder: Path, relative: Path, taken: set[Path]) -> Path:
    """Write ``img`` to ``folder/relative`` in the source's format (Pillow's reading of its header; PNG where
    Pillow cannot write that format), numbered when the name is taken (by an input or an earlier output)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
        fmt = "JPEG" if opened.format == "MPO" else opened.format  # MPO: a camera JPEG with extra pictures
        fmt = fmt if fmt in Image.SAVE else "PNG"
    suffixes = [s for s, f in Image.registered_extensions().items() if f == fmt]
    suffix = relative.suffix if relative.suffix.lower() in suffixes else {"JPEG": ".jpg"}.get(fmt, suffixes[0])
    out, n = folder / relative.with_suffix(suffix), 1
    while out.resolve() in taken:
        out, n = out.with_name(f"{relative.stem}-{n}{suffix}"), n + 1
    taken.add(out.resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return out
