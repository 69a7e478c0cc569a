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
  faceage predict -r archive/ --workers 8 --output ages.parquet

Text output: one line per face: file, box [left, top, right, bottom], age and its
80% interval. --json: one JSON object per image: {"path", "faces": [{"box", "eyes",
"age", "age_interval", "score"}]}; unreadable files give {"path", "error"}. The exit
status is 1 when some file could not be read, 0 otherwise.

--output FILE (.parquet, .csv or .jsonl): batch mode (docs/batch.md): --workers
processes (default: one per core), one row per face plus one per image without a face
or unreadable; rerunning the same command skips what is done."""


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
    p.add_argument("--output", metavar="FILE", default=None,
                   help="batch mode: write one row per face to FILE (.parquet, .csv, .jsonl), resumably")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --output: worker processes, one single-threaded model each (default: one per core)")


def run(args: argparse.Namespace) -> int:
    if args.output is not None or args.workers is not None:
        from faceage.batch.run import run_cli

        return run_cli(args)
    from tqdm import tqdm

    from faceage.errors import FaceageError, ImageError
    from faceage.estimator import AgeEstimator
    from faceage.imageio import iter_images, load_image

    files = list(iter_images(args.paths, recursive=args.recursive))
    if not files:
        raise FaceageError(f"no image found in {' '.join(args.paths)} (use -r for sub-folders)")
    est = AgeEstimator(args.model, tta=args.tta)
    failed = 0
    taken = {p.resolve() for p in files}  # never write over an input, nor twice to one file
    bar = tqdm(files, unit="img", desc="predict", disable=len(files) <= 3, file=sys.stderr)
    for path in bar:
        try:
            image = load_image(path)
            faces = est.predict(image, largest=args.largest, min_face=args.min_face, fallback=args.fallback)
        except (ImageError, FaceageError, OSError) as exc:
            failed += 1
            if args.json:
                print(json.dumps({"path": str(path), "error": str(exc)}), flush=True)
            else:
                bar.write(f"{path}: error: {exc}", file=sys.stderr)
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

            annotate(image, faces).save(annotated_path(Path(args.annotate), path, taken))
    if failed:
        print(f"{failed} of {len(files)} files could not be read", file=sys.stderr)
    return 1 if failed else 0


def annotated_path(folder: Path, source: Path, taken: set[Path]) -> Path:
    """DIR/NAME.png, numbered when the name is taken (by an input or an earlier output)."""
    folder.mkdir(parents=True, exist_ok=True)
    out, n = folder / f"{source.stem}.png", 1
    while out.resolve() in taken:
        out, n = folder / f"{source.stem}-{n}.png", n + 1
    taken.add(out.resolve())
    return out
