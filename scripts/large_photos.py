"""Build the large test photos of benchmarks/face_frontend.py, reproducibly.

    python -m scripts.large_photos                 # -> work/large-photos/*.jpg + photos.json
    python -m scripts.large_photos --groups 3      # also -> work/group-photos/*.jpg + photos.json

12 MP and larger JPEGs (quality 90), each made from the public-domain photos in
../shared/testimages (upscaled: one face, or a group as the background) and FG-NET
portraits / UTKFace crops from ../shared/data pasted at seeded places and sizes, so
that one photo holds faces of different sizes (from about 5% to 30% of its long
side; the smallest, about 200 px, are 40 px in the detector's default
800-px working image: its upsampled pass's limit). One photo stores its pixels rotated with EXIF orientation 6, so that the
reduced-scale decode must honour the tag. Nothing is downloaded; the same seed
gives byte-identical files. ``photos.json`` lists each photo with what was pasted
where (the pasted rectangles, not face boxes: the benchmark compares detectors).

Group photos (``--groups N``, :func:`build_groups`): 4000 x 3000 JPEGs, each with 15-20
faces whose dlib box is 150-300 px wide (3.75-7.5% of the long side), cut from FG-NET
and UTKFace photos and pasted at seeded random places that do not overlap; their
``photos.json`` lists each face box pasted (the ground truth of the benchmark).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks._common import REPO, SHARED_DATA

TESTIMAGES = SHARED_DATA.parent / "testimages"
OUT = REPO / "work" / "large-photos"
GROUPS = REPO / "work" / "group-photos"


def background(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A smooth two-colour gradient with mild noise: no structure a detector could take for a face."""
    w, h = size
    a, b = rng.integers(70, 190, 3), rng.integers(70, 190, 3)
    t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    row = (a * (1 - t) + b * t).astype(np.float32)
    small = np.repeat(row, 4, axis=0)  # 4 x w x 3, stretched to h below
    img = Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.BILINEAR)
    noise = rng.integers(-6, 7, (h // 8, w // 8, 1), dtype=np.int16)
    noise = np.asarray(Image.fromarray((noise[..., 0] + 128).astype(np.uint8)).resize((w, h), Image.BILINEAR))
    arr = np.clip(np.asarray(img).astype(np.int16) + noise[..., None].astype(np.int16) - 128, 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def place(canvas: Image.Image, pieces: list[Image.Image], rng: np.random.Generator,
          region: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """Paste ``pieces`` (largest first) in rows inside ``region``, with seeded gaps; their boxes."""
    x0, y0, x1, y1 = region
    x, y, row_h, boxes = x0, y0, 0, []
    for piece in pieces:
        w, h = piece.size
        gap = int(rng.integers(10, 60))
        if x + gap + w > x1:  # next row
            x, y, row_h = x0, y + row_h, 0
        box = (x + gap, y + gap, x + gap + w, y + gap + h)
        if box[2] > x1 or box[3] > y1:
            raise RuntimeError(f"no room for a {w}x{h} piece in {region}; use fewer or smaller pieces")
        canvas.paste(piece, box[:2])
        boxes.append(box)
        x, row_h = box[2], max(row_h, h + gap)
    return boxes


def portraits(rng: np.random.Generator, n: int) -> list[Path]:
    fg = sorted((SHARED_DATA / "fgnet" / "images").iterdir())
    utk = sorted((SHARED_DATA / "utkface").glob("*.jpg"))
    if not fg or not utk:
        sys.exit(f"FG-NET or UTKFace images missing under {SHARED_DATA}")
    pool = [fg[i] for i in rng.choice(len(fg), n, replace=False)] + [utk[i] for i in rng.choice(len(utk), n, replace=False)]
    return [pool[i] for i in rng.permutation(len(pool))[:n]]


def rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def upscaled(path: Path, width: int) -> Image.Image:
    im = rgb(path)
    return im.resize((width, round(im.height * width / im.width)), Image.BICUBIC)


def group(size: tuple[int, int], widths: list[int], rng: np.random.Generator, base: Image.Image | None = None,
          region: tuple[int, int, int, int] | None = None) -> tuple[Image.Image, list[dict]]:
    """Portraits (FG-NET) and face crops (UTKFace) pasted at the given widths on ``base``
    (inside ``region``) or on a gradient."""
    canvas = base.copy() if base is not None else background(size, rng)
    sources = portraits(rng, len(widths))
    pieces = [upscaled(path, width) for path, width in zip(sources, sorted(widths, reverse=True))]
    boxes = place(canvas, pieces, rng, region or (0, 0, *canvas.size))
    return canvas, [{"source": f"{p.parent.name}/{p.name}", "box": list(b)} for p, b in zip(sources, boxes)]


def build(out: Path, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    photos = []

    def save(name: str, img: Image.Image, what: str, pasted: list[dict], exif_orientation: int = 0) -> None:
        kw = {"quality": 90}
        if exif_orientation:
            exif = Image.Exif()
            exif[0x0112] = exif_orientation
            kw["exif"] = exif.tobytes()
        img.save(out / name, **kw)
        photos.append({"file": name, "size": list(img.size), "megapixels": round(img.width * img.height / 1e6, 1),
                       "what": what, "exif_orientation": exif_orientation, "pasted": pasted})

    obama = upscaled(TESTIMAGES / "obama.jpg", 3200)  # 3200 x 4000
    save("one-face-12mp.jpg", obama, "obama.jpg upscaled 5x: one face", [])
    # stored landscape, shown upright: EXIF 6 = rotate 90 degrees clockwise to display
    save("one-face-12mp-exif6.jpg", obama.transpose(Image.Transpose.ROTATE_90), "as above, stored rotated, EXIF 6", [],
         exif_orientation=6)
    save("one-face-small-13mp.jpg", upscaled(TESTIMAGES / "biden.jpg", 2464),
         "biden.jpg upscaled 7x: one face high in a full-figure photo", [])
    crowd = upscaled(TESTIMAGES / "obama_and_biden.jpg", 4200)  # 4200 x 2998: three faces, one a child
    img, pasted = group(crowd.size, [560, 520, 480], rng, base=crowd, region=(0, 0, 1300, 2998))  # left of the people
    save("group-3-plus-3-13mp.jpg", img, "obama_and_biden.jpg upscaled 5.25x + 3 portraits pasted", pasted)
    img, pasted = group((4000, 3000), [1100, 900, 760, 640, 600, 560, 540, 520, 500, 480, 480, 480], rng)
    save("mixed-12-faces-12mp.jpg", img, "12 portraits of different sizes on a gradient", pasted)
    img, pasted = group((5472, 3648), [2000, 1200, 800, 640, 560, 520], rng)
    save("mixed-6-faces-20mp.jpg", img, "6 portraits, one large, on a gradient", pasted)
    (out / "photos.json").write_text(json.dumps({"seed": seed, "photos": photos}, indent=2) + "\n")
    return photos


def face_sources(rng: np.random.Generator, n: int) -> list[tuple[Image.Image, tuple[int, int, int, int]]]:
    """``n`` photos (FG-NET and UTKFace, seeded) where dlib's HOG finds exactly one face,
    with that face's box: what a group photo is made of."""
    import dlib

    hog = dlib.get_frontal_face_detector()
    fg = sorted((SHARED_DATA / "fgnet" / "images").iterdir())
    utk = sorted((SHARED_DATA / "utkface").glob("*.jpg"))
    if not fg or not utk:
        sys.exit(f"FG-NET or UTKFace images missing under {SHARED_DATA}")
    out = []
    for i in rng.permutation(len(fg) + len(utk)):
        im = rgb(fg[i] if i < len(fg) else utk[i - len(fg)])
        found = hog(np.asarray(im), 1)
        if len(found) == 1 and found[0].width() >= 60:
            r = found[0]
            out.append((im, (r.left(), r.top(), r.right(), r.bottom())))
            if len(out) == n:
                return out
    raise RuntimeError(f"only {len(out)} usable face photos under {SHARED_DATA}")


def group_photo(rng: np.random.Generator, size: tuple[int, int] = (4000, 3000), faces: tuple[int, int] = (15, 20),
                widths: tuple[int, int] = (150, 300)) -> tuple[Image.Image, list[list[int]]]:
    """A gradient with 15-20 heads pasted at random places, none overlapping; the face boxes."""
    canvas = background(size, rng)
    n = int(rng.integers(faces[0], faces[1] + 1))
    taken: list[tuple[int, int, int, int]] = []
    boxes = []
    for im, (l, t, r, b) in face_sources(rng, n):
        width = int(rng.integers(widths[0], widths[1] + 1))
        k = width / (r - l)
        half = 0.85 * (r - l)  # the head around the face box (as in tests/test_frontend.py), inside the photo
        cx, cy = (l + r) / 2, (t + b) / 2
        cl, ct = max(0, round(cx - half)), max(0, round(cy - half))
        head = im.crop((cl, ct, min(im.width, round(cx + half)), min(im.height, round(cy + half))))
        head = head.resize((round(head.width * k), round(head.height * k)), Image.BICUBIC)
        for _ in range(500):
            x = int(rng.integers(0, size[0] - head.width))
            y = int(rng.integers(0, size[1] - head.height))
            spot = (x, y, x + head.width, y + head.height)
            if all(spot[2] <= o[0] or o[2] <= spot[0] or spot[3] <= o[1] or o[3] <= spot[1] for o in taken):
                break
        else:
            raise RuntimeError(f"no room for {n} heads in {size}")
        canvas.paste(head, spot[:2])
        taken.append(spot)
        fx, fy = x + (l - cl) * k, y + (t - ct) * k
        boxes.append([round(fx), round(fy), round(fx + width), round(fy + (b - t) * k)])
    return canvas, boxes


def build_groups(out: Path, seed: int, n: int) -> list[dict]:
    """``n`` group photos (see the module docstring) into ``out``, with ``photos.json``."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    for i in range(n):
        img, boxes = group_photo(rng)
        name = f"group-{len(boxes)}-faces-12mp-{i}.jpg"
        img.save(out / name, quality=90)
        photos.append({"file": name, "size": list(img.size), "megapixels": round(img.width * img.height / 1e6, 1),
                       "what": f"{len(boxes)} faces 150-300 px wide pasted at random places on a gradient",
                       "faces": boxes})
    (out / "photos.json").write_text(json.dumps({"seed": seed, "photos": photos}, indent=2) + "\n")
    return photos


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--groups", type=int, default=0, help="also build this many group photos into --groups-out")
    ap.add_argument("--groups-out", type=Path, default=GROUPS)
    args = ap.parse_args()
    for p in build(args.out, args.seed):
        print(f"{args.out / p['file']}: {p['size'][0]}x{p['size'][1]} ({p['megapixels']} MP), {p['what']}")
    for p in build_groups(args.groups_out, args.seed, args.groups) if args.groups else []:
        print(f"{args.groups_out / p['file']}: {p['size'][0]}x{p['size'][1]} ({p['megapixels']} MP), {p['what']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
