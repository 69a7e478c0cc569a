"""Draw boxes and ages on a copy of a photo."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def annotate(image: np.ndarray, faces) -> Image.Image:
    """An RGB copy of ``image`` with each face's box, eyes and ``age (lo-hi)`` drawn."""
    img = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(img)
    scale = max(img.size) / 600
    width = max(2, round(2 * scale))
    font = ImageFont.load_default(size=max(12, round(16 * scale)))
    for f in faces:
        left, top, right, bottom = f.box
        colour = (255, 170, 0) if f.fallback else (40, 220, 90)
        draw.rectangle([left, top, right, bottom], outline=colour, width=width)
        for x, y in f.eyes:
            r = width * 1.5
            draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=max(1, width // 2))
        lo, hi = f.age_interval
        label = f"{f.age:.0f} ({lo:.0f}-{hi:.0f})"
        tb = draw.textbbox((left, top), label, font=font)
        y = top - (tb[3] - tb[1]) - 2 * width if top > (tb[3] - tb[1]) + 2 * width else bottom + width
        draw.rectangle([left, y, left + tb[2] - tb[0] + 2 * width, y + tb[3] - tb[1] + 2 * width], fill=colour)
        draw.text((left + width, y + width - (tb[1] - top)), label, fill=(0, 0, 0), font=font)
    return img
