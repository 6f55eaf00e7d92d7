"""Real photos available offline: scikit-image's and scikit-learn's bundled photos, and Debian packages when unpacked.

Captions for the bundled photos are written here by hand; Tux Paint stamps bring their own one-line captions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# name -> caption. Only loaders that need no download (checked offline); diagrams and synthetic images left out.
SKIMAGE_PHOTOS: dict[str, str] = {
    "astronaut": "Portrait of astronaut Eileen Collins in her orange flight suit in front of an American flag",
    "coffee": "A cup of coffee with latte art on a saucer, seen from above",
    "chelsea": "Chelsea the tabby cat looking to the side on a wooden floor",
    "rocket": "A SpaceX Falcon 9 rocket standing on the launch pad under a blue sky",
    "hubble_deep_field": "The Hubble eXtreme Deep Field: thousands of distant galaxies on black",
    "camera": "Black and white photo of a cameraman with a tripod camera in a park",
    "coins": "Greek coins from Pompeii lying on a dark background",
    "moon": "Grayscale close-up of the cratered surface of the moon",
    "page": "Scanned page of printed text with uneven lighting",
    "text": "Black and white photo of handwritten and printed text on a notice",
    "clock": "A wall clock photographed at an angle, motion blurred",
    "immunohistochemistry": "Microscope image of immunohistochemistry stained tissue in brown and blue",
    "retina": "Fundus photograph of a human retina with blood vessels",
    "brick": "Grayscale texture of a brick wall",
    "grass": "Grayscale texture of a lawn of grass",
    "gravel": "Grayscale texture of gravel stones",
    "cell": "Phase contrast microscope image of a cell",
    "stereo_motorcycle": "A red motorcycle parked in a studio, left view of a stereo pair",
}
SKLEARN_PHOTOS: dict[str, str] = {
    "china.jpg": "The Summer Palace in China, a pagoda on a hill behind trees",
    "flower.jpg": "A pink flower in close-up with a bee on it",
}

TUXPAINT_STAMP_DIRS = ("usr/share/tuxpaint/stamps", "share/tuxpaint/stamps")


@dataclass(frozen=True)
class Photo:
    source_id: str  # stable id, e.g. skimage/astronaut
    caption: str
    loader: str  # where it comes from: skimage, sklearn, tuxpaint

    def load(self) -> Image.Image:
        return _load(self.loader, self.source_id)


def _to_rgb(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    return _flatten(img)


def _flatten(img: Image.Image) -> Image.Image:
    """RGB on a white background (stamps are RGBA cut-outs)."""
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    return img.convert("RGB")


def _load(loader: str, source_id: str) -> Image.Image:
    name = source_id.split("/", 1)[1]
    if loader == "skimage":
        import skimage.data

        arr = getattr(skimage.data, name)()
        if isinstance(arr, tuple):  # stereo pairs
            arr = arr[0]
        return _to_rgb(arr)
    if loader == "sklearn":
        from sklearn.datasets import load_sample_image

        return _to_rgb(load_sample_image(name))
    if loader == "tuxpaint":
        with Image.open(name) as img:
            img.load()
            return _flatten(img)
    raise ValueError(f"unknown photo loader {loader!r}")


def bundled_photos() -> list[Photo]:
    """Photos that ship inside the scikit-image and scikit-learn wheels (always available)."""
    photos = [Photo(f"skimage/{n}", c, "skimage") for n, c in SKIMAGE_PHOTOS.items()]
    photos += [Photo(f"sklearn/{n}", c, "sklearn") for n, c in SKLEARN_PHOTOS.items()]
    return photos


def _stamp_caption(txt: Path) -> str | None:
    try:
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        line = line.strip()
        if line and "=" not in line.split(" ", 1)[0]:  # the English line; translations are `xx=...`
            return line
    return None


def tuxpaint_stamps(debian_root: str | os.PathLike[str] | None) -> Iterator[Photo]:
    """Tux Paint stamp PNGs with the caption in the .txt beside each (Debian's tuxpaint-stamps-default)."""
    roots = [Path(debian_root)] if debian_root else []
    roots.append(Path("/"))
    for root in roots:
        for rel in TUXPAINT_STAMP_DIRS:
            base = root / rel
            if not base.is_dir():
                continue
            for png in sorted(base.rglob("*.png")):
                txt = png.with_suffix(".txt")
                if png.name.endswith("_mirror.png") or not txt.exists():
                    continue
                caption = _stamp_caption(txt)
                if caption:
                    yield Photo(f"tuxpaint/{png}", caption, "tuxpaint")
            return
