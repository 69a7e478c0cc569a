"""faceage evaluate: MAE, CS(e) and error by age of a model on labelled images."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from faceage.core.ages import ESTIMATES
from faceage.cli import MODEL_HELP, add_tta_argument

HELP = "score a model on labelled images: MAE (DEX and regression), CS(0..10), MAE by decade"
EPILOG = """examples:
  faceage evaluate --data ../shared/data/fgnet --format fgnet          # raw photos: detect, align, estimate
  faceage evaluate --data data/utkface-112/manifest.csv --model runs/cpu --json
  faceage evaluate --data my_labels.csv --out reports/mine             # CSV: path,age (relative to the CSV)

A manifest written by 'faceage prepare' holds aligned crops and is scored as is;
anything else goes through the face pipeline the model was trained with. Photos
where no face is found are counted as no_face and scored on a centre crop.
Writes report.json, predictions.csv, cs_curve.png and error_by_age.png to --out."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="manifest CSV or data set folder")
    p.add_argument("--format", default=None, help="importer for a folder: utkface, fgnet, morph2, afad, csv, folder")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--split", default=None, help="only rows of this split (e.g. val, test)")
    p.add_argument("--estimate", choices=ESTIMATES, default=None, help="override the model's estimate")
    add_tta_argument(p)
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--out", default=None, help="report folder (default runs/eval-<time>)")
    p.add_argument("--json", action="store_true", help="print only the JSON report")


def run(args: argparse.Namespace) -> int:
    from faceage.estimator import AgeEstimator
    from faceage.evaluate import evaluate, load_eval_samples, write_report
    from faceage.extras import message, missing

    samples, problems, prealigned = load_eval_samples(args.data, args.format)
    if args.split:
        samples = [s for s in samples if s.split == args.split]
    if args.limit:
        samples = samples[: args.limit]
    est = AgeEstimator(args.model, tta=args.tta)
    if args.estimate:
        est.record.estimate = args.estimate
    report = evaluate(est, samples, prealigned=prealigned, quiet=args.json)
    report["skipped_rows"] = len(problems)
    report["model"] = str(est.model_path)
    report["tta"] = est.tta
    report["data"] = str(args.data)
    out = Path(args.out) if args.out else Path("runs") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    no_plots = missing("plots")  # the numbers need no matplotlib; the two plots do
    report = write_report(report, out, label=Path(str(est.model_path)).stem, plots=not no_plots)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['n']} images ({report['pipeline']}), no face: {report['no_face']}, "
          f"unreadable: {report['unreadable']}, skipped rows: {len(problems)}")
    print(f"MAE {report['mae']:.3f} ({report['estimate']})   DEX {report['mae_dex']:.3f}   "
          f"regression {report['mae_reg']:.3f}   mean {report['mae_mean']:.3f}   median {report['mae_median']:.3f}")
    print("CS(e): " + "  ".join(f"{e}:{100 * v:.1f}%" for e, v in report["cs"].items()))
    print("MAE (bias) by decade: " + "  ".join(f"{k}: {v['mae']:.2f} ({v['bias']:+.2f}, n={v['n']})"
                                             for k, v in report["mae_by_decade"].items()))
    print(f"80% interval holds the true age for {100 * report['interval_coverage']:.1f}% of images")
    if no_plots:
        print(f"report: {out}/report.json; plots skipped: {message('plots', 'the plots', no_plots)}")
    else:
        print(f"report: {out}/report.json, plots: {out}/cs_curve.png, {out}/error_by_age.png")
    return 0
