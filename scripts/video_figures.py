"""docs/img/video_strip.png and docs/img/video.gif: `faceage video`'s annotated output on the test
video of scripts/make_test_video.py (three FG-NET people; their true ages written under the strip).

    python -m scripts.video_figures [--every 5] [--write | --out DIR]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from scripts.make_test_video import make_test_video

from faceage import AgeEstimator
from faceage.video.draw import draw_tracks
from benchmarks._common import REPO, add_output_arguments, parse_args  # noqa: E402 - --write / --out, as the benchmarks

STRIP_FRAMES = (40, 120, 150, 180, 280)  # before, at and after the crossing (t = 150 of 300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=5)
    add_output_arguments(ap, REPO / "docs" / "img")
    ap.add_argument("--gif-width", type=int, default=320)
    args = parse_args(ap, tracked=REPO / "docs" / "img")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "faces.mp4"
        truth = make_test_video(clip, width=1280, height=720, frames=300)
        strip, gif = [], []
        for r in AgeEstimator().predict_video(clip, every=args.every):
            if r.index in STRIP_FRAMES or r.index % 4 == 0:
                img = Image.fromarray(draw_tracks(r.image, r.faces))
                if r.index in STRIP_FRAMES:
                    strip.append((r.index, r.time, img.resize((480, 270), Image.LANCZOS)))
                if r.index % 4 == 0:
                    gif.append(img.resize((args.gif_width, args.gif_width * 9 // 16), Image.LANCZOS))
    font = ImageFont.load_default(size=15)
    caption = 24
    sheet = Image.new("RGB", (480 * len(strip), 270 + 2 * caption), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (index, time, img) in enumerate(strip):
        sheet.paste(img, (480 * i, 0))
        draw.text((480 * i + 6, 274), f"frame {index} ({time:.1f} s), every {args.every}", fill="black", font=font)
    ages = ", ".join(f"{p['file']} age {p['age']}" for p in truth["people"])
    draw.text((6, 274 + caption), f"true ages (FG-NET): {ages}", fill="black", font=font)
    sheet.save(args.out / "video_strip.png", optimize=True)
    frames = [g.quantize(colors=96, method=Image.Quantize.MEDIANCUT) for g in gif]
    frames[0].save(args.out / "video.gif", save_all=True, append_images=frames[1:], duration=160, loop=0,
                   optimize=True)
    print(f"wrote {args.out / 'video_strip.png'} and {args.out / 'video.gif'}")


if __name__ == "__main__":
    main()
