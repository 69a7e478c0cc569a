"""Pilot runs that choose the accurate model's design (issue 22): width, input size and loss.

Every candidate trains from scratch on the same rows with the same schedule (configs/accurate-pilot.yaml,
one set of overrides per candidate), so their validation numbers compare; runs go to RUN_ROOT/<name>
and a finished one is not trained again (a stopped one resumes). Then each candidate's parameters,
MMACs and one-face time as shipped (ONNX Runtime, one thread, batch 1, median; timed in alternating rounds)
are put beside its validation MAE and its bias at both ends, per data set.

    python scripts/pilots.py                      # train what is missing, print the table
    python scripts/pilots.py --only tail-1x112    # one candidate
    python scripts/pilots.py --write              # also write docs/runs/accurate-pilots/pilots.{md,json}
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

#: name -> (what it tests, config overrides on top of the pilot config)
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "tail-1x112": ("twice the width", ["model.width=1.0"]),
    "tail-1x128": ("twice the width at 128 px (the crops' own size)", ["model.width=1.0", "data.input_size=128"]),
    "tail-0.5x112": ("the tail-aimed loss and sampling on the fast model's network", ["model.width=0.5"]),
    "v2loss-0.5x112": ("the fast model's design and loss (label spread 2, no tail terms, age balance 0.6)",
                       ["model.width=0.5", "loss.label_sigma=2.0", "loss.label_sigma_slope=0", "loss.mean_weight=0",
                        "loss.var_weight=0", "data.age_balance=0.6"]),
    "tail-1x112-m15": ("the campaign's design on crops with a 15% margin per side (more hair, jaw and neck; "
                       "`prepare --margin 0.15`, the same rows as the other candidates' crops)",
                       ["model.width=1.0", "data.datasets={utkface: work/utkface-128m15/manifest-same.csv, "
                        "aaf: work/aaf-128m15/manifest-same.csv}"]),
}
BANDS = ("6-12", "13-17", "60+")
#: crops prepared another way, restricted to the rows of the reference crops so every candidate trains and
#: validates on the same faces: (its manifest, the full manifest it is cut from, the reference manifest)
SAME_ROWS = {
    "work/utkface-128m15/manifest-same.csv": ("work/utkface-128m15/manifest.csv", "work/utkface-128png/manifest.csv"),
    "work/aaf-128m15/manifest-same.csv": ("work/aaf-128m15/manifest.csv", "work/aaf-128png/manifest.csv"),
}
PREPARE_M15 = ("faceage prepare utkface ../shared/data/utkface work/utkface-128m15 --size 128 --margin 0.15\n"
               "faceage prepare csv ../shared/data/aaf/labels.csv work/aaf-128m15 --size 128 --margin 0.15")


def same_rows(cfg) -> None:
    """Write each SAME_ROWS manifest the config uses (once): the full manifest's rows whose crop file name is in
    the reference manifest. A face found in one preparation and not the other would otherwise change which
    rows ``data.limit`` draws."""
    from faceage.data.manifest import read_manifest, write_manifest

    for manifest in (cfg.data.datasets or {}).values():
        if manifest not in SAME_ROWS or Path(manifest).is_file():
            continue
        full, reference = SAME_ROWS[manifest]
        if not Path(full).is_file():
            raise SystemExit(f"{full} is missing; prepare the crops first:\n{PREPARE_M15}")
        keep = {Path(s.path).name for s in read_manifest(reference).samples}
        rows = [s for s in read_manifest(full).samples if Path(s.path).name in keep]
        write_manifest(rows, manifest)
        print(f"{manifest}: {len(rows)} of {full}'s rows, those of {reference}")


def one_face_ms(runs: dict[str, Path]) -> dict[str, float]:
    """Median one-face time per run's best weights as shipped: exported to ONNX, ONNX Runtime on one
    thread, batch 1 (:func:`faceage.runtime.time_per_face`, alternating rounds)."""
    import tempfile

    from faceage.export import export_onnx
    from faceage.runtime import time_per_face
    from faceage.runtime.onnx_backend import OnnxBackend

    with tempfile.TemporaryDirectory() as tmp:
        return time_per_face({name: OnnxBackend(export_onnx(run / "best.safetensors", Path(tmp) / f"{name}.onnx"),
                                                threads=1) for name, run in runs.items()}, rounds=7)


def row(name: str, run: Path, cfg) -> dict:
    from faceage.nets.model import count_macs, count_params, create_model

    summary = json.loads((run / "summary.json").read_text())
    width, size = float(cfg.model.width), int(cfg.data.input_size)
    model = create_model("ma_sfv2", width)
    out = {"name": name, "tests": CANDIDATES[name][0], "width": width, "input_size": size,
           "params": count_params(model), "mmacs": round(count_macs(model, size) / 1e6, 1),
           "val_mae": summary["val"]["mae"],
           "epochs": summary["epochs"]}
    for data_set, rep in summary["val"].get("by_dataset", {}).items():
        out[f"{data_set}_mae"] = rep["mae"]
        for band in BANDS:
            out[f"{data_set}_bias_{band}"] = rep["mae_by_band"].get(band, {}).get("bias")
    return out


def table(rows: list[dict]) -> str:
    sets = sorted({k[: -len("_mae")] for r in rows for k in r if k.endswith("_mae") and k != "val_mae"})
    head = ["candidate", "params", "MMACs (x fast)", "ms/face (x fast)", "val MAE"] + [f"{s} MAE" for s in sets] + \
        [f"{s} bias {b}" for s in sets for b in BANDS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fast = [r for r in rows if r["width"] == 0.5 and r["input_size"] == 112]
    base_ms = min((r["ms_per_face"] for r in fast), default=None)
    base_macs = fast[0]["mmacs"] if fast else None
    for r in rows:
        ms = f"{r['ms_per_face']:.2f}" + (f" ({r['ms_per_face'] / base_ms:.1f}x)" if base_ms else "")
        macs = f"{r['mmacs']}" + (f" ({r['mmacs'] / base_macs:.1f}x)" if base_macs else "")
        cells = [r["name"], f"{r['params']:,}", macs, ms, f"{r['val_mae']:.3f}"]
        cells += [f"{r.get(f'{s}_mae', float('nan')):.3f}" for s in sets]
        cells += ["-" if r.get(f"{s}_bias_{b}") is None else f"{r[f'{s}_bias_{b}']:+.2f}" for s in sets for b in BANDS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="candidates:\n" + "\n".join(f"  {k}: {v[0]}" for k, v in CANDIDATES.items()))
    ap.add_argument("--config", default="configs/accurate-pilot.yaml", help="the pilots' shared config")
    ap.add_argument("--runs", default="runs/pilots", help="RUN_ROOT: one run folder per candidate")
    ap.add_argument("--only", nargs="*", choices=sorted(CANDIDATES), help="these candidates only")
    ap.add_argument("--no-train", action="store_true", help="only tabulate the finished runs")
    ap.add_argument("--write", action="store_true", help="write docs/runs/accurate-pilots/pilots.{md,json}")
    a = ap.parse_args()

    from faceage.train.config import load_config
    from faceage.train.loop import train

    names = a.only or list(CANDIDATES)
    rows = []
    for name in names:
        run = Path(a.runs) / name
        cfg = load_config(a.config, CANDIDATES[name][1])
        same_rows(cfg)
        if not (run / "summary.json").exists():
            if a.no_train:
                print(f"{name}: not trained yet ({run})")
                continue
            print(f"== {name}: {CANDIDATES[name][0]}", flush=True)
            train(cfg, run, resume=(run / "last.pt").exists(), quiet=True)
        rows.append(row(name, run, cfg))
    times = one_face_ms({r["name"]: Path(a.runs) / r["name"] for r in rows})
    for r in rows:
        r["ms_per_face"] = times[r["name"]]
    text = table(rows)
    print(text)
    if a.write:
        out = Path("docs/runs/accurate-pilots")
        out.mkdir(parents=True, exist_ok=True)
        (out / "pilots.json").write_text(json.dumps({"config": a.config, "candidates": {
            k: CANDIDATES[k][1] for k in names}, "rows": rows}, indent=2))
        tests = "\n".join(f"- `{k}`: {CANDIDATES[k][0]}" for k in names)
        (out / "pilots.md").write_text(
            f"# Accurate-model pilots\n\n`python scripts/pilots.py --write` (config `{a.config}`: 8 epochs from "
            f"scratch on the same 4,000 photos of the two data sets together (about 2,000 each, each data set split 7:2 on its own); MAE and bias on the "
            f"held-out part; ms/face: the network alone, ONNX Runtime, one thread, batch 1)\n\n{tests}\n\n{text}\n\n"
            "What the table decided (1.0x at 112 px, margin 0, the tail-aimed loss and sampling) and why: "
            "[the campaign's README](../accurate/README.md).\n")
        print(f"wrote {out}/pilots.md and pilots.json")


if __name__ == "__main__":
    main()
