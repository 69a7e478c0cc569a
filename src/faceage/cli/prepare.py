"""`faceage prepare KIND SRC OUT`: import a data set, detect/align/crop faces, write a manifest."""
from __future__ import annotations

import argparse

HELP = "import a data set: detect, align and crop faces, write manifest.csv and a report"
EPILOG = """examples:
  faceage prepare utkface ../shared/data/utkface work/utkface-112
  faceage prepare fgnet ../shared/data/fgnet work/fgnet-224 --size 224 --workers 2
  faceage prepare csv labels.csv work/mine --fallback
  faceage prepare folder photos_by_age/ work/mine --margin 0.1

kinds: utkface, fgnet, morph2 (CSV index), afad (AGE/GENDER/*.jpg), csv (path,age[,subject]),
folder (one sub-folder per age). Re-running with the same OUT resumes and skips finished files."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from faceage.data.importers import IMPORTERS

    p.add_argument("kind", metavar="KIND", choices=list(IMPORTERS), help=f"data set layout: {', '.join(IMPORTERS)}")
    p.add_argument("src", metavar="SRC", help="the data set's folder (or CSV for csv/morph2)")
    p.add_argument("out", metavar="OUT", help="output folder (crops, manifest.csv, report)")
    p.add_argument("--size", type=int, default=112, help="crop size in pixels (default 112)")
    p.add_argument("--eye-distance", type=float, default=None, help="inter-ocular distance as a fraction of the width (default 0.34)")
    p.add_argument("--eye-y", type=float, default=None, help="eye line height as a fraction of the height (default 0.38)")
    p.add_argument("--margin", type=float, default=0.0, help="extra border per side, fraction of the face crop (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: number of CPUs)")
    p.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=False,
                   help="centre-crop images without a detected face (marked fallback=1) instead of skipping them")
    p.add_argument("--format", choices=["png", "jpg"], default="png", help="crop file format (default png)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (for a quick try)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from faceage.data.prepare import prepare
    from faceage.errors import ConfigError
    from faceage.face.align import CropSpec

    kw = {"size": args.size, "margin": args.margin}
    if args.eye_distance is not None:
        kw["eye_distance"] = args.eye_distance
    if args.eye_y is not None:
        kw["eye_y"] = args.eye_y
    try:
        spec = CropSpec(**kw)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    r = prepare(args.kind, args.src, args.out, spec=spec, workers=args.workers, fallback=args.fallback,
                image_format=args.format, limit=args.limit, progress=not args.quiet)
    print(
        f"{r['in_manifest']} crops in {r['out']}/manifest.csv: {r['faces_found']} faces found, "
        f"{r['fallback_crops']} centre-crop fallbacks, {len(r['no_face'])} without a face, "
        f"{len(r['unreadable'])} unreadable, {len(r['label_problems'])} unlabelled names; "
        f"{r['duplicate_groups']} duplicate groups ({r['duplicate_groups_conflicting_ages']} with conflicting ages); "
        f"{r['processed_this_run']} processed in {r['seconds_processing']} s ({r['files_per_s']} files/s), "
        f"{r['skipped_already_done']} already done. Report: {r['out']}/report.md"
    )
    if "histogram" in r:
        print(f"age histogram {r['histogram']}")
    return 0
