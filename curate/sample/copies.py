"""Near-duplicate copies made with AugLy, the augmentations that built the DISC21 copy-detection benchmark."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

Transform = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, str]]


def _crop(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    x1, y1 = rng.uniform(0.0, 0.15, size=2)
    x2, y2 = rng.uniform(0.85, 1.0, size=2)
    return A.crop(img, x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2)), f"crop({x1:.2f},{y1:.2f},{x2:.2f},{y2:.2f})"


def _pad(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    w, h = rng.uniform(0.05, 0.25, size=2)
    color = tuple(int(c) for c in rng.integers(0, 256, size=3))
    return A.pad(img, w_factor=float(w), h_factor=float(h), color=color), f"pad({w:.2f},{h:.2f})"


def _jpeg(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    q = int(rng.integers(15, 40))
    return A.encoding_quality(img, quality=q), f"jpeg(q={q})"


def _overlay_text(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    x, y = rng.uniform(0.0, 0.5, size=2)
    # AugLy's default text is drawn from the unseeded `random` module at import: pick the characters here
    text = [int(c) for c in rng.integers(1, 1000, size=5)]
    return (A.overlay_text(img, text=text, x_pos=float(x), y_pos=float(y), font_size=0.12),
            f"overlay_text({x:.2f},{y:.2f})")


def _overlay_emoji(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    x, y = rng.uniform(0.1, 0.6, size=2)
    return A.overlay_emoji(img, x_pos=float(x), y_pos=float(y), emoji_size=0.25), f"overlay_emoji({x:.2f},{y:.2f})"


def _resize(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    s = float(rng.uniform(0.4, 0.8))
    return A.resize(img, width=max(16, int(img.width * s)), height=max(16, int(img.height * s))), f"resize({s:.2f})"


def _flip(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    return A.hflip(img), "hflip"


def _blur(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    r = float(rng.uniform(1.0, 3.0))
    return A.blur(img, radius=r), f"blur({r:.1f})"


def _brightness(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    f = float(rng.uniform(0.7, 1.4))
    return A.brightness(img, factor=f), f"brightness({f:.2f})"


TRANSFORMS: dict[str, Transform] = {
    "crop": _crop,
    "pad": _pad,
    "jpeg": _jpeg,
    "overlay_text": _overlay_text,
    "overlay_emoji": _overlay_emoji,
    "resize": _resize,
    "hflip": _flip,
    "blur": _blur,
    "brightness": _brightness,
}


def ensure_min_size(img: Image.Image, size: int = 96) -> Image.Image:
    """Upscale tiny images (some stamps are a few dozen pixels) so text overlays get a font size above 0."""
    if min(img.size) >= size:
        return img
    scale = size / min(img.size)
    return img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))))


def make_copy(img: Image.Image, rng: np.random.Generator, max_ops: int = 2) -> tuple[Image.Image, str]:
    """Apply 1..max_ops distinct random transforms; return the copy and a description of what was done."""
    img = ensure_min_size(img)
    names = sorted(TRANSFORMS)
    k = int(rng.integers(1, max_ops + 1))
    chosen = rng.choice(len(names), size=k, replace=False)
    done = []
    for idx in chosen:
        img, desc = TRANSFORMS[names[int(idx)]](img, rng)
        done.append(desc)
    return img.convert("RGB"), "+".join(done)


def _patch_pillow_for_augly() -> None:
    """AugLy 1.0's meme_format calls FreeTypeFont.getsize_multiline, which Pillow 10 removed; rebuild it from
    ImageDraw.multiline_textbbox (offline.md)."""
    from PIL import ImageDraw, ImageFont

    if hasattr(ImageFont.FreeTypeFont, "getsize_multiline"):
        return

    def getsize_multiline(self: ImageFont.FreeTypeFont, text: str, *args: object, **kwargs: object) -> tuple[int, int]:
        draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=self)
        return right - left, bottom - top

    ImageFont.FreeTypeFont.getsize_multiline = getsize_multiline  # type: ignore[attr-defined]


def _screenshot(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    img = ensure_min_size(img)
    return A.overlay_onto_screenshot(img), "screenshot"


def _meme(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    img = ensure_min_size(img)
    _patch_pillow_for_augly()
    return A.meme_format(img, text="WHEN THE DATA IS CLEAN"), "meme"


def _stripes(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    import augly.image as A

    img = ensure_min_size(img)
    return A.overlay_stripes(img, line_width=0.3, line_density=0.6), "stripes"


# templates that make unrelated images look alike, as web data does (screenshot frames, memes, stripes)
TEMPLATE_TRANSFORMS: dict[str, Transform] = {"screenshot": _screenshot, "meme": _meme, "stripes": _stripes}
