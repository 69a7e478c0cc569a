"""faceage check: "is each person in these photos at least N?" answered pass or refer, per face."""
from __future__ import annotations

import argparse
import sys

from faceage.cli import MODEL_HELP, add_tta_argument, detector_option
from faceage.cli.predict import run_photos

HELP = "age checks: is each face at least --over N years old? pass or refer, per face"
EPILOG = """examples:
  faceage check --over 18 photo.jpg
  faceage check --over 18 -r photos/ --json > checks.jsonl
  faceage check --over 25 group.jpg --largest
  faceage check --over 20 photo.jpg --fit-on my-val/manifest.csv   # a threshold the model has no policy for

Each face gets "pass" (the calibrated probability that the person is at least N, p_over,
reaches the model's policy threshold) or "refer" (check an ID). The bundled model's policies
for 13, 16, 18, 21 and 25 were chosen on validation photos so that at most 1% of those aged
N-5 to N-1 passed; their measured pass rates by age, gender and ethnicity, and what a check
cannot promise: docs/age-checks.md. A photo without a face gives no faces (nothing passes).

Text output: one line per face: file, box, age, p_over, decision. --json: one JSON object
per image: {"path", "over", "faces": [{"box", "age", "p_over", "decision"}]}; unreadable files
give {"path", "error"}. Files are read as in 'faceage predict' (each in a worker process); the
exit status is 1 when some file could not be read, 0 otherwise."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("--over", type=int, required=True, metavar="N", help="the age to check, e.g. 18")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--largest", action="store_true", help="only the largest face of each image")
    p.add_argument("--min-face", type=int, default=0, help="ignore faces narrower than this many pixels")
    p.add_argument("--max-faces", type=int, default=0, help="only the largest N faces of each image (0: all)")
    p.add_argument("--detector-option", action="append", default=[], metavar="KEY=VALUE", type=detector_option,
                   help="a face detector option, VALUE as JSON (repeatable), as for predict")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--fit-on", metavar="DATA", default=None,
                   help="fit the policy for --over on these labelled faces instead of the model's own: a prepared "
                        "manifest (its 'val' rows if it has a split, else every row) or a folder with --format; "
                        "faces the model was not trained on, and not those you will report as a test")
    p.add_argument("--format", default=None, help="with --fit-on FOLDER: its importer (utkface, fgnet, csv, ...)")
    p.add_argument("--max-share", type=float, default=0.01,
                   help="with --fit-on: at most this share of those aged N-5..N-1 pass (default 0.01)")
    add_tta_argument(p)


def run(args: argparse.Namespace) -> int:
    def ready(record, options):
        """The policy to apply (fitted on --fit-on, else the model's for --over), or an error before any file."""
        top = record.num_classes - 1
        if not 1 <= args.over <= top:
            from faceage.errors import ConfigError

            raise ConfigError(f"--over {args.over}: an age check needs an age from 1 to {top}")
        if args.fit_on:
            from faceage.checks.fitting import policy_from_data

            policy = policy_from_data(options.estimator(), args.fit_on, args.over, fmt=args.format,
                                      max_share=args.max_share)
            band = policy.validation["band"]
            upper = band["wilson95"][1]
            short = (f", above --max-share {args.max_share}: too few faces to show it, so none of them passes"
                     if upper > args.max_share else "")
            print(f"policy fitted on {policy.validation['data']}: pass if p_over >= {policy.threshold:.4f}; "
                  f"aged {policy.band[0]}-{policy.band[1]} passed: {100 * band['share']:.1f}% of {band['n']} "
                  f"(95% upper bound {100 * upper:.1f}%{short})", file=sys.stderr)
            return policy
        from faceage.checks.policy import policy_for

        return policy_for(record, args.over)  # no policy for this threshold: one error, before any file

    return run_photos(args, ready=ready)
