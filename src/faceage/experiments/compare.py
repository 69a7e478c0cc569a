"""``faceage experiment compare``: several models scored on the same test images, side by side.

Each model is fed the way its own record says (prepared crops as they are;
raw photos through detect -> align -> crop with the model's geometry), via
:func:`faceage.evaluate.evaluate`, so models with different input sizes or
crops are still compared on the same images.
"""
from __future__ import annotations

from pathlib import Path

from faceage.errors import FaceageError
from faceage.experiments.report import md_table, provenance, write_report


def parse_models(specs: list[str]) -> dict[str, str]:
    """``LABEL=PATH`` or ``PATH`` (label: the file's stem, or the run folder's name) -> {label: path}."""
    models: dict[str, str] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or Path(spec).exists():
            path = spec
            p = Path(spec)
            label = p.name if p.is_dir() else (p.parent.name if p.stem in ("best", "last", "model") else p.stem)
        base, k = label, 2
        while label in models:
            label, k = f"{base}-{k}", k + 1
        models[label] = path
    if not models:
        raise FaceageError("give at least one model file")
    return models


def run_compare(models: list[str] | dict[str, str], data: str | Path, out: str | Path, fmt: str | None = None,
                split: str | None = None, limit: int | None = None, command: str | None = None,
                quiet: bool = True, backend: str = "auto") -> dict:
    from faceage.estimator import AgeEstimator
    from faceage.evaluate import evaluate, load_eval_samples
    from faceage.metrics import plot_cs_curves

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = parse_models(models) if isinstance(models, list) else dict(models)
    samples, problems, prealigned = load_eval_samples(data, fmt)
    if split:
        samples = [s for s in samples if s.split == split]
        if not samples:
            raise FaceageError(f"{data}: no rows with split {split!r}")
    if limit:
        samples = samples[: int(limit)]
    table, curves, preds, paths, true = {}, {}, {}, None, None
    rows = []
    for label, path in models.items():
        est = AgeEstimator(path, backend=backend)  # a bundled model's name, a file or a run folder
        record = est.record
        rep = evaluate(est, samples, prealigned=prealigned, quiet=quiet)
        p, t, ps, _ = (rep.pop(k) for k in ("_pred", "_true", "_paths", "_interval"))
        if paths is None:
            paths, true = ps, t
        elif ps != paths:  # a model could not read an image another one did: compare on the common ones
            raise FaceageError(f"{label}: scored another set of images than the first model")
        preds[label] = p
        curves[label] = rep["cs"]
        spec = record.model
        table[label] = {"path": str(est.model_path), "arch": spec.arch, "width": spec.width,
                        "input_size": record.input_size, "crop": record.crop and record.crop.to_dict(), "n": rep["n"],
                        "mae": rep["mae"],
                        "mae_dex": rep["mae_dex"], "mae_reg": rep["mae_reg"], "cs": rep["cs"],
                        "mae_by_decade": rep["mae_by_decade"], "no_face": rep["no_face"],
                        "pipeline": rep["pipeline"], "tta": est.tta, "training": record.training}
        rows.append([label, f"{spec.arch} {spec.width}x", record.input_size, rep["n"], rep["mae"],
                     rep["mae_dex"], rep["mae_reg"], rep["cs"]["5"], rep["cs"]["10"], rep["no_face"]])
        if not quiet:
            print(f"{label}: MAE {rep['mae']:.3f} on {rep['n']} images")
    plot_cs_curves(curves, out / "cs_curves.png", "Cumulative score, same test images")
    with open(out / "predictions.csv", "w") as fh:
        labels = list(preds)
        fh.write("path,age," + ",".join(labels) + "\n")
        for i, (pth, t) in enumerate(zip(paths, true)):
            fh.write(f"{pth},{int(t)}," + ",".join(f"{preds[k][i]:.2f}" for k in labels) + "\n")
    best = min(table, key=lambda k: table[k]["mae"])
    decades = sorted({d for v in table.values() for d in v["mae_by_decade"]}, key=lambda d: int(d.split("-")[0]))
    body = [
        f"{len(models)} models on the same {len(true)} images of `{data}`"
        + (f" (split {split})" if split else "") + f"; lowest MAE: **{best}**.",
        "",
        md_table(["model", "network", "input", "images", "MAE", "MAE dex", "MAE reg", "CS(5)", "CS(10)", "no face"],
                 rows),
        "",
        "## MAE by age decade",
        "",
        md_table(["model"] + decades, [[k] + [v["mae_by_decade"].get(d, {}).get("mae", float("nan"))
                                             for d in decades] for k, v in table.items()]),
        "",
        "`predictions.csv` holds every image's prediction by every model.",
    ]
    prov = provenance(command, {"models": {k: v["path"] for k, v in table.items()}, "split": split,
                                "format": fmt, "limit": limit}, samples)
    return write_report(out, "Model comparison", "\n".join(body), {"models": table, "best": best,
                        "n": int(len(true))}, prov, ["cs_curves.png"])
