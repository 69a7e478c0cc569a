"""Does the ``mtcnn`` detector cut the crops the models were trained on? Eyes, crops and ages against ``dlib``.

    python -m benchmarks.eye_agreement --write     # docs/benchmarks/eye_agreement.{json,md}
    python -m benchmarks.eye_agreement --fgnet 200 --aaf 200 --fit   # quick, and refit the box map

Every age model was trained on crops aligned on the eyes that dlib's 5-point shape predictor
gives on dlib's HOG boxes. The ``mtcnn`` detector finds faces with MTCNN, places a HOG-like box
from MTCNN's (:data:`faceage.face.mtcnn_detector.HOG_BOX`) and asks the same shape predictor
for the eyes. Here both detectors see every FG-NET portrait and a sample of AAF photos (MTCNN
forced on, ``small_side=0``, though by default photos this small go to dlib's passes); for each
face both find: how far the eyes moved (in % of the eye distance), how much the aligned crop
changed (mean absolute pixel difference, 0-255) and how far each bundled model's age moved.
MTCNN's own eye points are reported beside them, to show why they are not used.
``--fit`` prints the box map measured on these faces (median offsets and scale).
"""
from __future__ import annotations

import argparse
import random

import numpy as np

from benchmarks._common import SHARED_DATA, add_output_arguments, machine, markdown_table, parse_args, write_results


def _match(box, boxes) -> int | None:
    """The first of ``boxes`` whose centre lies inside ``box``."""
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if box[0] < cx < box[2] and box[1] < cy < box[3]:
            return i
    return None


def _moved(eyes_a, eyes_b) -> float:
    """The larger of the two eyes' displacement, in % of ``eyes_a``'s eye distance."""
    a, b = np.asarray(eyes_a, float), np.asarray(eyes_b, float)
    return float(100 * np.linalg.norm(a - b, axis=1).max() / np.linalg.norm(a[1] - a[0]))


def _stats(v: list[float]) -> dict:
    a = np.asarray(v, float)
    return {"median": round(float(np.median(a)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "max": round(float(a.max()), 2), "mean": round(float(a.mean()), 3)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fgnet", type=int, default=1002, help="FG-NET portraits (default all)")
    ap.add_argument("--aaf", type=int, default=1000, help="AAF photos, a fixed random sample (default 1000)")
    ap.add_argument("--fit", action="store_true", help="print the HOG box map measured on these faces")
    add_output_arguments(ap)
    args = parse_args(ap, argv)

    from faceage.core.imageio import load_image
    from faceage.estimator import AgeEstimator
    from faceage.face.align import align
    from faceage.face.detect import get_detector
    from faceage.face.mtcnn_detector import MtcnnDetector
    from faceage.models import list_models

    sets = {"FG-NET": sorted((SHARED_DATA / "fgnet" / "images").glob("*"))[: args.fgnet],
            "AAF": random.Random(0).sample(sorted((SHARED_DATA / "aaf" / "images").glob("*.jpg")), args.aaf)}
    if not any(sets.values()):
        ap.error(f"no FG-NET or AAF images under {SHARED_DATA}")
    dlib, mtcnn = get_detector("dlib"), MtcnnDetector(small_side=0, recover=False)
    models = {name: AgeEstimator(name) for name in list_models()}
    rows, data = [], {"machine": machine(), "sets": {}}
    box_map = []
    for label, files in sets.items():
        m = {"photos": len(files), "dlib_faces": 0, "mtcnn_faces": 0, "both": 0, "eyes": [], "own_eyes": [],
             "crop": [], **{f"age_{n}": [] for n in models}}
        for f in files:
            img = load_image(f)
            ours, theirs = dlib.detect(img), mtcnn.detect(img)
            m["dlib_faces"] += len(ours)
            m["mtcnn_faces"] += len(theirs)
            if not ours or not theirs:
                continue
            d = ours[0]
            i = _match(d.box, [t.box for t in theirs])
            if i is None:
                continue
            t = theirs[i]
            m["both"] += 1
            m["eyes"].append(_moved(d.eyes, t.eyes))
            boxes, points = mtcnn.mtcnn(img, max(24, mtcnn.min_face * max(img.shape[:2])))
            j = _match(d.box, boxes[:, :4])
            if j is not None:
                m["own_eyes"].append(_moved(d.eyes, sorted(map(tuple, points[j, :2]))))
                x1, y1, x2, y2 = boxes[j, :4]
                side = max(x2 - x1, y2 - y1)
                box_map.append((((d.box[0] + d.box[2]) - (x1 + x2)) / 2 / side,
                                ((d.box[1] + d.box[3]) - (y1 + y2)) / 2 / side, (d.box[2] - d.box[0]) / side))
            for name, est in models.items():
                spec = est.record.crop
                a, b = align(img, d.eyes, spec), align(img, t.eyes, spec)
                if name == "fast":
                    m["crop"].append(float(np.abs(a.astype(np.int16) - b).mean()))
                ages = [e.age for e in est.predict_aligned(np.stack([a, b]))]
                m[f"age_{name}"].append(abs(ages[0] - ages[1]))
        summary = {k: (_stats(v) if isinstance(v, list) and v else v) for k, v in m.items()}
        data["sets"][label] = summary
        rows.append([label, m["photos"], m["dlib_faces"], m["mtcnn_faces"], m["both"],
                     f"{summary['eyes']['median']:.1f} / {summary['eyes']['p95']:.1f}",
                     f"{summary['own_eyes']['median']:.1f} / {summary['own_eyes']['p95']:.1f}",
                     f"{summary['crop']['mean']:.2f}",
                     " / ".join(f"{summary[f'age_{n}']['mean']:.2f}" for n in models)])
    if args.fit and box_map:
        dx, dy, ds = np.median(np.asarray(box_map), axis=0)
        print(f"HOG_BOX = ({dx:.3f}, {dy:.3f}, {ds:.3f})  # from {len(box_map)} faces")
    table = (f"Machine: {machine()}. Faces both detectors found (the largest dlib face, matched by centre); "
             "eyes moved in % of the eye distance (median / p95); crop change: mean absolute difference of the "
             f"`fast` crop, 0-255; age moved: mean absolute difference in years ({' / '.join(models)}).\n\n"
             + markdown_table(["set", "photos", "dlib faces", "mtcnn faces", "both", "eyes moved, mtcnn (dlib 5 points)",
                               "eyes moved, MTCNN's own points", "crop change", "age moved"], rows))
    write_results("eye_agreement", data, table, args.out)


if __name__ == "__main__":
    main()
