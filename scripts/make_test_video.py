"""A reproducible test video: FG-NET faces of different people (known ages) moving, scaling and
briefly crossing over a synthetic background, written with faceage's own video writer.

    python -m scripts.make_test_video --out /tmp/faces.mp4 [--size 1280x720] [--frames 300]

Writes the video and ``<out>.truth.json``: per person the FG-NET file, true age and the
face box in every frame. Person 1 walks right, person 2 walks left and passes in front
of person 1 half way through (their heads overlap for about a fifth of a second),
person 3 comes closer (grows) while drifting. Positions scale with the frame size, so a
small clip for fast tests has the same story as the 720p one.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
FGNET = REPO.parent / "shared" / "data" / "fgnet" / "images"
#: three people of different ages (FG-NET person 009 at 5, 029 at 33, 003 at 61)
PEOPLE = ("009A05.JPG", "029A33.JPG", "003A61.JPG")


def _path(t: float, person: int, w: int, h: int) -> tuple[float, float, float, float]:
    """Centre (x, y), face width and head tilt (degrees) of ``person`` at time fraction ``t`` (0..1)."""
    tilt = 10 * math.sin(2 * math.pi * (1.5 * t + person / 3))
    if person == 0:  # left -> right, upper half
        return (0.12 + 0.66 * t) * w, (0.30 + 0.03 * math.sin(6 * t)) * h, 0.12 * w, tilt
    if person == 1:  # right -> left, lower and in front: covers person 0's chin when they cross at t = 0.5
        return (0.78 - 0.66 * t) * w, (0.56 - 0.03 * math.sin(5 * t)) * h, 0.12 * w, tilt
    return (0.84 + 0.04 * t) * w, (0.70 - 0.1 * t) * h, (0.08 + 0.06 * t) * w, tilt  # comes closer


def true_age(name: str) -> int:
    return int(re.match(r"\d+A(\d+)", name).group(1))


def _head(name: str, data: Path):
    """The portrait cut to an oval around its face, with the face box inside it (from faceage's detector)."""
    from faceage.face.pipeline import FacePipeline

    img = Image.open(data / name).convert("RGB")
    faces = FacePipeline("dlib").faces(np.asarray(img), largest=True)
    if not faces:
        raise SystemExit(f"{name}: no face found; choose another FG-NET photo")
    l, t, r, b = faces[0].box
    side = 1.7 * (r - l)
    cx, cy = (l + r) / 2, (t + b) / 2 - 0.05 * (b - t)
    crop = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
    head = img.crop(crop)
    mask = Image.new("L", head.size, 0)
    ImageDraw.Draw(mask).ellipse([side * 0.1, 0, side * 0.9, side], fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(side / 40))
    face_box = np.array([l - crop[0], t - crop[1], r - crop[0], b - crop[1]]) / side  # in head units
    return head, mask, face_box, (r - l) / side


def _background(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    bg = np.stack([90 + 60 * x, 110 + 40 * y, 130 - 30 * x], -1)
    img = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):  # furniture-like blocks
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        draw.rectangle([x0, y0, x0 + rng.uniform(0.05, 0.3) * w, y0 + rng.uniform(0.05, 0.3) * h],
                       fill=tuple(int(v) for v in rng.integers(40, 200, 3)))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(max(w, h) / 300)))


def make_test_video(out: str | Path, *, width: int = 1280, height: int = 720, frames: int = 300, fps: float = 25.0,
                    data: Path = FGNET, people: tuple[str, ...] = PEOPLE, seed: int = 0, rotation: int = 0) -> dict:
    """Write the video and its truth file; return the truth. ``rotation``: store the frames turned by
    -rotation degrees with rotation metadata saying +rotation (a phone video), so that a reader honouring
    the metadata sees the same upright frames."""
    from faceage.video.writer import VideoWriter

    if not Path(data).is_dir():
        raise FileNotFoundError(f"{data}: FG-NET images not found (see ../shared/data/README.md)")
    heads = [_head(n, Path(data)) for n in people]
    bg = _background(width, height, seed)
    rng = np.random.default_rng(seed + 1)
    truth = {"width": width, "height": height, "fps": fps, "frames": frames,
             "people": [{"file": n, "age": true_age(n), "boxes": []} for n in people]}
    out = Path(out)
    with VideoWriter(out, fps=fps, rotation=rotation) as writer:
        for i in range(frames):
            t = i / max(1, frames - 1)
            canvas = Image.fromarray(bg)
            for p, (head, mask, face_box, face_frac) in enumerate(heads):
                cx, cy, face_w, tilt = _path(t, p, width, height)
                size = max(8, round(face_w / face_frac))
                x0, y0 = round(cx - size / 2), round(cy - size / 2)
                gain = 1 + 0.15 * math.sin(2 * math.pi * (2 * t + p / 3))  # light changing on each face
                img = Image.fromarray(np.clip(np.asarray(head.resize((size, size), Image.BILINEAR)) * gain, 0, 255)
                                      .astype(np.uint8))
                canvas.paste(img.rotate(tilt, Image.BILINEAR),
                             (x0, y0), mask.resize((size, size), Image.BILINEAR).rotate(tilt, Image.BILINEAR))
                box = face_box * size  # the face box turned with the head: its centre moves, its size stays
                dx, dy = (box[0] + box[2]) / 2 - size / 2, (box[1] + box[3]) / 2 - size / 2
                a = math.radians(tilt)
                fx = x0 + size / 2 + dx * math.cos(a) + dy * math.sin(a)
                fy = y0 + size / 2 - dx * math.sin(a) + dy * math.cos(a)
                half_w, half_h = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
                truth["people"][p]["boxes"].append([round(float(v), 1) for v in
                                                    (fx - half_w, fy - half_h, fx + half_w, fy + half_h)])
            frame = np.asarray(canvas).astype(np.int16)
            frame += rng.integers(-6, 7, (1, 1, 3), dtype=np.int16)  # light flicker per frame
            writer.write(np.clip(frame, 0, 255).astype(np.uint8), i / fps)
    out.with_name(out.name + ".truth.json").write_text(json.dumps(truth))
    return truth


def _iou(a, b) -> float:
    lt = np.maximum(a[:2], b[:2])
    rb = np.minimum(a[2:], b[2:])
    inter = float(np.prod(np.clip(rb - lt, 0, None)))
    union = float(np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2])) - inter
    return inter / union if union > 0 else 0.0


def match_tracks(tracks, truth: dict, min_iou: float = 0.3) -> dict:
    """Which person each track follows, from its detected frames: {track id: [person of each detected frame]}
    (None where no person's true box overlaps the track's box by ``min_iou``)."""
    out = {}
    for t in tracks:
        people = []
        for f, box, det in zip(t.frames, t.boxes, t.detected):
            if not det:
                continue
            ious = [_iou(np.asarray(box, float), np.asarray(p["boxes"][f], float)) for p in truth["people"]]
            best = int(np.argmax(ious))
            people.append(best if ious[best] >= min_iou else None)
        out[t.id] = people
    return out


def age_errors(tracks, truth: dict) -> list[dict]:
    """Per track: its person, the fused age's error and the mean error of its per-frame ages."""
    rows = []
    for t in tracks:
        people = [p for p in match_tracks([t], truth)[t.id] if p is not None]
        if not people:
            continue
        person = max(set(people), key=people.count)
        age = truth["people"][person]["age"]
        frame_ages = np.asarray(t.scored_ages)
        rows.append({"track": t.id, "person": person, "true_age": age, "fused_age": t.age,
                     "fused_error": abs(t.age - age), "mean_frame_error": float(np.abs(frame_ages - age).mean()),
                     "frames_scored": int(frame_ages.size)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--data", type=Path, default=FGNET)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    make_test_video(args.out, width=w, height=h, frames=args.frames, fps=args.fps, data=args.data)
    print(f"wrote {args.out} and {args.out}.truth.json")


if __name__ == "__main__":
    main()
