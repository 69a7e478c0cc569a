"""faceage experiment: the paper's research protocols (split, ablation, leave-one-person-out, compare)."""
from __future__ import annotations

import argparse

from faceage.cli import MODEL_HELP, add_tta_argument

HELP = "research protocols: split, ablation with repeated runs, leave-one-person-out, compare"
EPILOG = """examples:
  faceage experiment split data/utkface-128/manifest.csv --ratios 7:2:1 --seed 0
  faceage experiment ablation --aligned data/utkface-128/manifest.csv --unaligned ../shared/data/utkface \\
      --seeds 33 --config paper --out experiments/ablation
  faceage experiment ablation --aligned data/utkface-128/manifest.csv --unaligned ../shared/data/utkface \\
      --seeds 3 --limit 4300 --config cpu data.input_size=64 optim.epochs=6 run.threads=1 --out work/abl
  faceage experiment lopo data/fgnet-112/manifest.csv --init runs/cpu/best.safetensors \\
      --config cpu optim.epochs=3 optim.lr=0.0003 --out experiments/fgnet-lopo --jobs 2
  faceage experiment compare --data data/utkface-128/manifest.csv --split test runs/a runs/b --out cmp/

Every command writes OUT/report/{report.md,report.json,*.png} (compare: OUT/...) recording
the command, config, code version and a data fingerprint. Rerunning ablation or lopo
with the same arguments skips finished runs/folds and resumes interrupted ones."""


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.epochs=5")
    p.add_argument("--config", "-c", default="cpu", help="base config: preset (cpu, paper) or YAML file (default cpu)")
    p.add_argument("--out", "-o", required=True, help="experiment folder (rerun with the same folder to resume)")
    p.add_argument("--verbose", "-v", action="store_true", help="progress bars of every training run")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    fmt = argparse.RawDescriptionHelpFormatter

    s = sub.add_parser("split", help="seeded, subject-exclusive train/val/test split of a manifest",
                       description="Write a seeded train/val/test split into a manifest's split column. A subject "
                       "(or a group of byte-identical duplicates) never straddles two splits.", formatter_class=fmt,
                       epilog="examples:\n  faceage experiment split data/utk/manifest.csv            # in place, "
                       "backup manifest.csv.bak\n  faceage experiment split data/utk/manifest.csv --out "
                       "data/utk/split-s1.csv --seed 1 --ratios 7:2:1")
    s.add_argument("manifest", help="manifest CSV (path,age[,subject])")
    s.add_argument("--ratios", default="7:2:1", help="train:val:test (default 7:2:1; 7:2 for no test part)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="write a new manifest here (default: in place, after a .bak copy)")
    s.add_argument("--no-backup", action="store_true", help="in place without a backup copy")

    a = sub.add_parser("ablation", help="the paper's variant grid x N seeds; box plot, CS curves, table",
                       description="Train sfv2_l1, ma_sfv2_l1 (unaligned data), align_sfv2_l1, align_ma_sfv2_l1 and "
                       "no_augmentation (aligned data) x N seeds on one split; report test MAE mean/std/variance.",
                       formatter_class=fmt, epilog="examples:\n  faceage experiment ablation --aligned "
                       "data/utk-128/manifest.csv --unaligned ../shared/data/utkface --seeds 3 --limit 4300 "
                       "--out work/abl data.input_size=64 optim.epochs=6 run.threads=1")
    _train_options(a)
    a.add_argument("--aligned", metavar="MANIFEST", help="prepared (eye-aligned) manifest from `faceage prepare`")
    a.add_argument("--unaligned", metavar="DATA", help="unaligned images: a manifest CSV or a data set folder")
    a.add_argument("--unaligned-format", default="utkface", help="importer for an --unaligned folder (default utkface)")
    a.add_argument("--variants", default=None, help="comma-separated subset of the grid (default: all five)")
    a.add_argument("--seeds", type=int, default=33, help="repeated runs per variant, seeds 0..N-1 (default 33)")
    a.add_argument("--ratios", default="7:2:1", help="train:val:test (default 7:2:1)")
    a.add_argument("--split-seed", type=int, default=0)
    a.add_argument("--limit", type=int, default=None, help="use a seeded subset of this many images (before split)")
    a.add_argument("--report-only", action="store_true", help="rewrite the report from the finished runs")

    lp = sub.add_parser("lopo", help="leave-one-person-out cross-validation (FG-NET: 82 folds), optional fine-tuning",
                        description="Hold out each subject in turn, train (or fine-tune --init) on the others, score "
                        "the held-out images; report MAE over all images and per fold.", formatter_class=fmt,
                        epilog="examples:\n  faceage experiment lopo data/fgnet-112/manifest.csv --init "
                        "src/faceage/models/fast.safetensors --out work/lopo optim.epochs=3 optim.lr=0.0003")
    _train_options(lp)
    lp.add_argument("data", help="manifest with a subject column (or a folder with --format)")
    lp.add_argument("--format", default=None, help="importer for a folder (e.g. fgnet)")
    lp.add_argument("--init", metavar="MODEL", default=None,
                    help="fine-tune each fold from this model (a bundled name, file or run folder)")
    lp.add_argument("--val-frac", type=float, default=0.1, help="share of the other subjects for validation (0.1)")
    lp.add_argument("--seed", type=int, default=0, help="seed of the validation subjects")
    lp.add_argument("--jobs", "-j", type=int, default=1, help="folds in parallel processes (default 1)")
    lp.add_argument("--weights", choices=("best", "last"), default="best",
                    help="score the fold's best-validation (default) or last weights")
    lp.add_argument("--keep-models", action="store_true", help="keep each fold's weights and checkpoint")
    lp.add_argument("--folds", type=int, default=None,
                    help="only the first N folds (quick checks); with --report-only: a report of the first N "
                    "finished folds in OUT/report-firstN")
    lp.add_argument("--extra-train", metavar="MANIFEST", default=None,
                    help="another prepared manifest whose training rows join every fold's training split")
    lp.add_argument("--extra-per-decade", type=int, default=None, metavar="N",
                    help="at most N --extra-train rows per age decade (seeded; default all)")
    lp.add_argument("--extra-min-age", type=int, default=0, metavar="AGE",
                    help="only --extra-train rows of this age or older (default 0)")
    lp.add_argument("--allow-crop-mismatch", action="store_true",
                    help="fine-tune even if the data's crop geometry differs from the model's")
    lp.add_argument("--report-only", action="store_true", help="rewrite the report from the finished folds")

    c = sub.add_parser("compare", help="several models on the same test images: one table, one CS plot",
                       description="Score several models on the same images, each preprocessed as its record says.",
                       formatter_class=fmt, epilog="examples:\n  faceage experiment compare --data "
                       "data/utk/manifest.csv --split test runs/a small=runs/b/best.safetensors --out cmp")
    c.add_argument("models", nargs="+", metavar="MODEL", help="model file or run folder, optionally LABEL=PATH")
    c.add_argument("--data", required=True, help="manifest CSV or data set folder (with --format)")
    c.add_argument("--format", default=None, help="importer for a folder (utkface, fgnet, ...)")
    c.add_argument("--split", default=None, help="only rows of this split (e.g. test)")
    c.add_argument("--limit", type=int, default=None, help="only the first N images")
    c.add_argument("--out", "-o", required=True, help="report folder")
    c.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"))

    from faceage.experiments.age_check import SOURCES_HELP

    ac = sub.add_parser("age-check", help="age checks (over 13/16/18/21/25): share passed per age band, "
                        "calibration, trade-off; fits and stores the policies",
                        description="Score data sets the way `faceage check` does and report, for each threshold, "
                        "the share passed per age band (and per gender/race on UTKFace) with Wilson 95% intervals, "
                        "the trade-off curve and the reliability diagram before/after calibration. --fit fits the "
                        "policies on validation sets; --write-model stores them in model files.",
                        formatter_class=fmt, epilog="examples:\n  faceage experiment age-check "
                        "--data utkface-val=configs/fast.yaml:utkface "
                        "--data fgnet=fgnet:../shared/data/fgnet --out work/age-check\n"
                        "  faceage experiment age-check --model my.onnx --data val=my-faces/manifest.csv --fit val "
                        "--write-model my.onnx --out work/my-age-check")
    ac.add_argument("--data", action="append", required=True, metavar="LABEL=SOURCE", help=SOURCES_HELP)
    ac.add_argument("--model", default=None, help=MODEL_HELP)
    ac.add_argument("--out", "-o", required=True, help="report folder")
    ac.add_argument("--thresholds", default="13,16,18,21,25", help="ages to check (default 13,16,18,21,25)")
    ac.add_argument("--fit", default=None, metavar="LABEL,...",
                    help="fit the policies on these --data sets pooled (validation rows only); else report the "
                    "model's own")
    ac.add_argument("--max-share", type=float, default=0.01,
                    help="with --fit: at most this share of those aged over-5..over-1 pass (default 0.01)")
    ac.add_argument("--band", type=int, default=5, help="with --fit: the years just under the threshold (default 5)")
    ac.add_argument("--write-model", nargs="+", default=None, metavar="FILE",
                    help="store the fitted policies in these model files (.safetensors / .onnx of the same model)")
    add_tta_argument(ac)


def run(args: argparse.Namespace) -> int:
    from faceage.errors import ConfigError
    from faceage.experiments.report import command_line
    from faceage.extras import require

    command = command_line()
    if args.experiment is None:
        print("choose an experiment: split, ablation, lopo, compare, age-check (faceage experiment --help)")
        return 2
    if args.experiment == "split":
        from faceage.experiments.split import split_manifest

        res = split_manifest(args.manifest, args.out, args.ratios, args.seed, backup=not args.no_backup)
        print(f"{res['groups']} groups (subjects / duplicate sets) split with seed {res['seed']} -> {res['manifest']}")
        if res["backup"]:
            print(f"backup of the original: {res['backup']}")
        if res["dropped_rows"]:
            print(f"{len(res['dropped_rows'])} unreadable rows left out, e.g. {res['dropped_rows'][0]}")
        print(res["histograms"])
        return 0

    if args.experiment == "age-check":
        from faceage.experiments.age_check import check_thresholds, run_age_check

        doc = run_age_check(args.model, args.data, args.out, thresholds=check_thresholds(args.thresholds),
                            fit=args.fit.split(",") if args.fit else None, max_share=args.max_share,
                            band=args.band, write_models=args.write_model, tta=args.tta, command=command,
                            quiet=False)
        for o, p in doc["results"]["policies"].items():
            print(f"over {o}: pass if p_over >= {p['threshold']:.6f} ({p['calibration']['method']} calibration)")
        for label, r in doc["results"]["sets"].items():
            r18 = r.get("18") or next(iter(r.values()))
            print(f"{label}: over {r18['over']}: " + ", ".join(
                f"{b} {100 * v['share']:.1f}% passed" for b, v in r18["bands"].items() if v["n"]))
        print(f"report: {args.out}/report.md")
        return 0

    if args.experiment == "compare":
        from faceage.experiments.compare import run_compare

        require("plots", "faceage experiment compare")

        doc = run_compare(args.models, args.data, args.out, fmt=args.format, split=args.split, limit=args.limit,
                          command=command, quiet=False, backend=args.backend)
        print(f"report: {args.out}/report.md (lowest MAE: {doc['results']['best']})")
        return 0

    require("train", f"faceage experiment {args.experiment}", ("torch", "matplotlib"))
    from faceage.train.config import load_config

    if args.experiment == "ablation":
        from faceage.experiments.ablation import run_ablation, write_ablation_report

        if args.report_only:
            doc = write_ablation_report(args.out)
        else:
            base = load_config(args.config, args.overrides)
            variants = args.variants.split(",") if args.variants else None
            doc = run_ablation(base, args.out, args.aligned, args.unaligned, args.unaligned_format, variants,
                               args.seeds, args.ratios, args.split_seed, args.limit, command=command,
                               quiet=not args.verbose)
        for v, r in doc["results"]["variants"].items():
            print(f"{v:18s} {r['runs']:3d} runs  test MAE {r['mae_mean']:.3f} +- {r['mae_std']}")
        print(f"report: {args.out}/report/report.md")
        return 0

    if args.experiment == "lopo":
        from faceage.experiments.lopo import first_subjects, run_lopo, write_lopo_report

        if args.folds is not None and args.folds < 1:
            raise ConfigError(f"--folds {args.folds}: give a number of folds >= 1")
        if (args.extra_per_decade is not None or args.extra_min_age) and not args.extra_train:
            raise ConfigError("--extra-per-decade and --extra-min-age choose rows of --extra-train MANIFEST; give it")
        where = f"{args.out}/report"
        if args.report_only and args.folds:  # the first N folds alone: compare runs on the same subjects
            where = f"{args.out}/report-first{args.folds}"
            doc = write_lopo_report(args.out, subjects=first_subjects(args.out, args.folds), report_dir=where)
        elif args.report_only:
            doc = write_lopo_report(args.out)
        else:
            base = load_config(args.config, args.overrides)
            if args.jobs > 1 and not base.run.threads:
                base = base.override({"run": {"threads": 1}})  # N processes x all cores each would thrash
            doc = run_lopo(base, args.data, args.out, fmt=args.format, init=args.init, val_frac=args.val_frac,
                           seed=args.seed, jobs=args.jobs, weights=f"{args.weights}.safetensors",
                           keep_models=args.keep_models, max_folds=args.folds,
                           allow_crop_mismatch=args.allow_crop_mismatch, command=command,
                           extra_train=args.extra_train, extra_per_decade=args.extra_per_decade,
                           extra_min_age=args.extra_min_age)
        r = doc["results"]
        print(f"LOPO: MAE over all images {r['mae']:.3f}, mean per-fold MAE {r['per_fold_mae']['mean']:.3f} "
              f"({r['n_folds_done']}/{r['n_folds']} folds)")
        print(f"report: {where}/report.md")
        return 0
    return 2
