"""Pilot runs that choose an accurate model's design: short runs on the same rows, one table.

Two sets of pilots, each a shared config plus one set of overrides per candidate, so their validation
numbers compare: ``ma_sfv2`` (issue 22: width, input size and loss of the from-scratch network,
configs/accurate-pilot.yaml) and ``face`` (issue 30: dlib's face-recognition ResNet fine-tuned for age,
configs/accurate-face-pilot.yaml: frozen features against a full fine-tune, 150 against 112 px, with and
without age-balanced sampling). Runs go to RUN_ROOT/<name>; a finished one is not trained again (a stopped
one resumes). Then each candidate's parameters, MMACs and one-face time as shipped (ONNX Runtime, one
thread, batch 1, median; timed in alternating rounds) are put beside its validation MAE and its bias at
both ends, per data set, and, where the set names FG-NET crops, its FG-NET zero-shot MAE and bias (never
trained on) and its validation MAE without the age prior put back (``prior 0``).

    python -m scripts.pilots --set face                # train what is missing, print the table
    python -m scripts.pilots --set face --only full-150    # one candidate
    python -m scripts.pilots --set face --write        # also write docs/runs/<the set's folder>/pilots.{md,json}
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

#: name -> (what it tests, config overrides on top of the pilot config)
MA_SFV2: dict[str, tuple[str, list[str]]] = {
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
FACE: dict[str, tuple[str, list[str]]] = {
    "frozen-150": ("the age head alone on dlib's frozen features (the backbone never moves)",
                   ["optim.head_only_epochs=99"]),
    "full-150-lr0.1": ("the whole network fine-tuned after one head-only epoch, 150 px (dlib's own chip size), "
                       "the pretrained layers at a tenth of the head's rate", ["optim.backbone_lr_scale=0.1"]),
    "full-150": ("the same with the pretrained layers at a fiftieth of the head's rate (the config's 0.02)", []),
    "full-112-lr0.1": ("full-150-lr0.1 at 112 px (the chips resized: about half the multiply-adds)",
                       ["data.input_size=112", "optim.backbone_lr_scale=0.1"]),
    "full-150-nobal": ("full-150 without age-balanced sampling (the data's own age mix)", ["data.age_balance=0"]),
}


@dataclass(frozen=True)
class PilotSet:
    config: str
    candidates: dict[str, tuple[str, list[str]]]
    out: str  # docs/runs/<out>/pilots.{md,json}
    title: str
    how: str  # what every candidate does, for the table's caption
    fgnet: str | None = None  # FG-NET crops (manifest) scored zero-shot, or None
    decided: str = ""


SETS = {
    "ma_sfv2": PilotSet("configs/accurate-pilot.yaml", MA_SFV2, "accurate-pilots", "Accurate-model pilots",
                        "8 epochs from scratch", decided="What the table decided (1.0x at 112 px, margin 0, the "
                        "tail-aimed loss and sampling) and why: [the campaign's README](../accurate/README.md)."),
    "face": PilotSet("configs/accurate-face-pilot.yaml", FACE, "accurate-face-pilots",
                     "Face-pretrained accurate-model pilots (dlib's face-recognition ResNet)",
                     "fine-tuned from dlib's face-recognition ResNet", fgnet="work/fgnet-chip150/manifest.csv",
                     decided="What the table decided and why: [the campaign's README](../accurate-face/README.md)."),
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


def one_face_ms(weights: dict[str, Path]) -> dict[str, float]:
    """Median one-face time per weights file as shipped: exported to ONNX, ONNX Runtime on one thread,
    batch 1 (:func:`faceage.runtime.time_per_face`, alternating rounds)."""
    import tempfile

    from faceage.export import export_onnx
    from faceage.runtime import time_per_face
    from faceage.runtime.onnx_backend import OnnxBackend

    with tempfile.TemporaryDirectory() as tmp:
        return time_per_face({name: OnnxBackend(export_onnx(file, Path(tmp) / f"{name}.onnx"), threads=1)
                              for name, file in weights.items()}, rounds=7)


def set_numbers(data_set: str, rep: dict) -> dict:
    """A report's MAE and its bias in each of BANDS, under keys named for the data set."""
    return {f"{data_set}_mae": rep["mae"],
            **{f"{data_set}_bias_{band}": rep["mae_by_band"].get(band, {}).get("bias") for band in BANDS}}


def fgnet_zero_shot(run: Path, manifest: str) -> dict:
    """The run's best weights on FG-NET's prepared crops (old prints; never trained on): MAE and bias by band."""
    from faceage.data.manifest import read_manifest
    from faceage.estimator import AgeEstimator
    from faceage.evaluate import evaluate

    if not Path(manifest).is_file():
        raise SystemExit(f"{manifest} is missing; prepare FG-NET's crops first (see the pilot config's header)")
    rep = evaluate(AgeEstimator(run / "best.safetensors", backend="torch"), read_manifest(manifest).samples,
                   prealigned=True, quiet=True)
    return set_numbers("fgnet", rep)


def row(name: str, run: Path, cfg, pilots: PilotSet) -> dict:
    from faceage.nets.model import AgeNet, count_macs, count_params
    from faceage.train.setup import model_spec

    summary = json.loads((run / "summary.json").read_text())
    spec, size = model_spec(cfg), int(cfg.data.input_size)
    model = AgeNet(spec)
    out = {"name": name, "tests": pilots.candidates[name][0], "arch": spec.arch, "width": spec.width,
           "input_size": size, "params": count_params(model), "mmacs": round(count_macs(model, size) / 1e6, 1),
           "val_mae": summary["val"]["mae"], "val_mae_prior0": summary["best_val_mae"], "epochs": summary["epochs"]}
    for data_set, rep in summary["val"].get("by_dataset", {}).items():
        out.update(set_numbers(data_set, rep))
    if pilots.fgnet:
        out.update(fgnet_zero_shot(run, pilots.fgnet))
    return out


def table(rows: list[dict], fast_ms: float) -> str:
    from faceage.nets.model import count_macs, create_model

    sets = [s for s in ("utkface", "aaf", "fgnet") if any(f"{s}_mae" in r for r in rows)]
    head = ["candidate", "params", "MMACs (x fast)", "ms/face (x fast)", "val MAE", "val MAE prior 0"] + \
        [f"{s} MAE" for s in sets] + [f"{s} bias {b}" for s in sets for b in BANDS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base_macs = count_macs(create_model("ma_sfv2", 0.5), 112) / 1e6  # the fast model's network
    for r in rows:
        cells = [r["name"], f"{r['params']:,}", f"{r['mmacs']} ({r['mmacs'] / base_macs:.1f}x)",
                 f"{r['ms_per_face']:.2f} ({r['ms_per_face'] / fast_ms:.1f}x)", f"{r['val_mae']:.3f}",
                 f"{r['val_mae_prior0']:.3f}"]
        cells += [f"{r.get(f'{s}_mae', float('nan')):.3f}" for s in sets]
        cells += ["-" if r.get(f"{s}_bias_{b}") is None else f"{r[f'{s}_bias_{b}']:+.2f}" for s in sets for b in BANDS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(f"set {k} ({p.config}):\n" + "\n".join(
                                     f"  {n}: {c[0]}" for n, c in p.candidates.items()) for k, p in SETS.items()))
    ap.add_argument("--set", default="ma_sfv2", choices=sorted(SETS), help="which pilots (default ma_sfv2)")
    ap.add_argument("--config", default=None, help="the pilots' shared config (default: the set's)")
    ap.add_argument("--runs", default="runs/pilots", help="RUN_ROOT: one run folder per candidate")
    ap.add_argument("--only", nargs="*", help="these candidates only")
    ap.add_argument("--no-train", action="store_true", help="only tabulate the finished runs")
    ap.add_argument("--write", action="store_true", help="write docs/runs/<the set's folder>/pilots.{md,json}")
    a = ap.parse_args()
    pilots = SETS[a.set]
    config = a.config or pilots.config
    unknown = sorted(set(a.only or ()) - set(pilots.candidates))
    if unknown:
        ap.error(f"not candidates of set {a.set}: {unknown}; choose from {sorted(pilots.candidates)}")

    from faceage.train.config import load_config
    from faceage.train.loop import train

    names = a.only or list(pilots.candidates)
    rows = []
    for name in names:
        run = Path(a.runs) / name
        cfg = load_config(config, pilots.candidates[name][1])
        same_rows(cfg)
        if not (run / "summary.json").exists():
            if a.no_train:
                print(f"{name}: not trained yet ({run})")
                continue
            print(f"== {name}: {pilots.candidates[name][0]}", flush=True)
            train(cfg, run, resume=(run / "last.pt").exists(), quiet=True)
        rows.append(row(name, run, cfg, pilots))
    from faceage.models import locate

    times = one_face_ms({**{r["name"]: Path(a.runs) / r["name"] / "best.safetensors" for r in rows},
                         "bundled fast": locate("fast", backend="torch")})
    for r in rows:
        r["ms_per_face"] = times[r["name"]]
    text = table(rows, times["bundled fast"])
    print(text)
    if a.write:
        out = Path("docs/runs") / pilots.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "pilots.json").write_text(json.dumps({"config": config, "candidates": {
            k: pilots.candidates[k][1] for k in names}, "rows": rows}, indent=2))
        tests = "\n".join(f"- `{k}`: {pilots.candidates[k][0]}" for k in names)
        (out / "pilots.md").write_text(
            f"# {pilots.title}\n\n`python -m scripts.pilots --set {a.set} --write` (config `{config}`: "
            f"{pilots.how}, on the same 4,000 photos of the two data sets together (about 2,000 each, each data set "
            f"split 7:2 on its own); MAE and bias on the held-out part; val MAE prior 0: before the age prior is "
            f"put back; ms/face: the network alone, ONNX Runtime, one thread, batch 1; x fast: against the fast "
            f"model's network, MA-SFV2 0.5x at 112 px)\n\n{tests}\n\n{text}\n\n{pilots.decided}\n")
        print(f"wrote {out}/pilots.md and pilots.json")


if __name__ == "__main__":
    main()
