"""docs/img/predict_fgnet.png: `faceage predict`'s annotated output on a few FG-NET photos, side by side,
each with its true age (from the FG-NET file name) written below.

    python -m scripts.predict_figure [--data ../shared/data/fgnet] [--write | --out DIR] [FILE ...]
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from faceage import AgeEstimator
from faceage.annotate import annotate
from faceage.core.imageio import load_image
from benchmarks._common import REPO, add_output_arguments, parse_args  # noqa: E402 - --write / --out, as the benchmarks

DEFAULT_FILES = ("009A05.JPG", "008A17.JPG", "029A33.JPG", "007A45.JPG", "003A61.JPG")
HEIGHT, CAPTION = 300, 26


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", default=DEFAULT_FILES, help="FG-NET file names (default: five, ages 5-61)")
    ap.add_argument("--data", default="../shared/data/fgnet", help="FG-NET folder (its images/ subfolder or itself)")
    add_output_arguments(ap, REPO / "docs" / "img")
    args = parse_args(ap, tracked=REPO / "docs" / "img")
    root = Path(args.data) / "images" if (Path(args.data) / "images").is_dir() else Path(args.data)
    est = AgeEstimator()
    font = ImageFont.load_default(size=17)
    tiles = []
    for name in args.files:
        image = load_image(root / name)
        faces = est.predict(image, largest=True)
        tile = annotate(image, faces)
        tile = tile.resize((round(tile.width * HEIGHT / tile.height), HEIGHT), Image.BILINEAR)
        canvas = Image.new("RGB", (tile.width, HEIGHT + CAPTION), "white")
        canvas.paste(tile, (0, 0))
        found = re.search(r"\d+A(\d+)", Path(name).name, re.IGNORECASE)
        if found is None:
            raise SystemExit(f"{name}: not an FG-NET file name (SUBJECTaAGE.JPG, e.g. 009A05.JPG)")
        age = int(found.group(1))
        said = f"{faces[0].age:.0f}" if faces else "no face"
        ImageDraw.Draw(canvas).text((6, HEIGHT + 3), f"true {age}, predicted {said}", fill="black", font=font)
        tiles.append(canvas)
        print(f"{name}: true {age}, predicted {said}")
    gap = 8
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), HEIGHT + CAPTION), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width + gap
    sheet.save(args.out / "predict_fgnet.png")
    print(f"wrote {args.out / 'predict_fgnet.png'}")


if __name__ == "__main__":
    main()
