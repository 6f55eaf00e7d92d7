"""Pillow + numpy preprocessing shared by the CNN backends (runs in decode threads, no torch needed)."""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_short_edge(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                      reducing_gap=2.0)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_chw(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def square(img: Image.Image, size: int, mode: str, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """`crop`: short edge to size then centre crop; `resize`: squash to size x size; `short`: short edge only;
    `pad`: long edge to size, centred on a `fill` square (the whole picture kept, aspect ratio too)."""
    if mode == "pad":
        w, h = img.size
        scale = size / max(w, h)
        inner = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                           reducing_gap=2.0)
        canvas = Image.new(img.mode, (size, size), fill if img.mode == "RGB" else None)
        canvas.paste(inner, ((size - inner.width) // 2, (size - inner.height) // 2))
        return canvas
    if mode == "crop":
        return center_crop(resize_short_edge(img, size), size)
    if mode == "resize":
        return img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if mode == "short":
        return resize_short_edge(img, size)
    raise ValueError(f"unknown resize mode {mode!r} (crop, pad, resize or short)")
