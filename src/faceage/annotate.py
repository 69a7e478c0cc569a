"""Draw boxes and ages on a copy of a photo (and, through :func:`draw_label`, on video frames)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=8)
def _font(size: int):
    return ImageFont.load_default(size=size)


def pen(img: Image.Image) -> tuple[ImageDraw.ImageDraw, int, ImageFont.ImageFont]:
    """A drawing context, line width and font sized to ``img`` (readable on thumbnails and 4K alike)."""
    scale = max(img.size) / 600
    return ImageDraw.Draw(img), max(2, round(2 * scale)), _font(max(12, round(16 * scale)))


def draw_label(draw: ImageDraw.ImageDraw, box, label: str, colour, width: int, font) -> None:
    """``box`` outlined in ``colour`` with ``label`` on a filled tag above it (below it at the top edge)."""
    left, top, right, bottom = box
    draw.rectangle([left, top, right, bottom], outline=colour, width=width)
    tb = draw.textbbox((left, top), label, font=font)
    y = top - (tb[3] - tb[1]) - 2 * width if top > (tb[3] - tb[1]) + 2 * width else bottom + width
    draw.rectangle([left, y, left + tb[2] - tb[0] + 2 * width, y + tb[3] - tb[1] + 2 * width], fill=colour)
    draw.text((left + width, y + width - (tb[1] - top)), label, fill=(0, 0, 0), font=font)


def annotate(image: np.ndarray, faces) -> Image.Image:
    """An RGB copy of ``image`` with each face's box, eyes and ``age (lo-hi)`` drawn."""
    img = Image.fromarray(image).convert("RGB")
    draw, width, font = pen(img)
    for f in faces:
        colour = (255, 170, 0) if f.fallback else (40, 220, 90)
        for x, y in f.eyes:
            r = width * 1.5
            draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=max(1, width // 2))
        if f.error is not None:
            draw_label(draw, f.box, f"no age ({f.code})", (230, 60, 60), width, font)
            continue
        lo, hi = f.age_interval
        draw_label(draw, f.box, f"{f.age:.0f} ({lo:.0f}-{hi:.0f})", colour, width, font)
    return img
