"""Copy-detection sets from unrelated real photo sources: light copies, stacked copies, and look-alikes.

Sources (Debian packages unpacked by scripts/install_debian_photos.sh; the bundled photos ship in wheels):
- `bundled`: scikit-image and scikit-learn photos;
- `tuxpaint`: Tux Paint stamps (photo cut-outs and clip-art);
- `stellarium`: Stellarium's nebula photos (many dark fields with one bright object: look-alikes by nature);
- `wallpapers`: Plasma, MATE and GNOME desktop wallpapers. Their packages bring real copies (one artwork at
  several sizes and crops: kind `shipped`) and real look-alikes that are not copies (one design in several
  colourways: MATE's stripes, GNOME's light and dark variants; kept in separate groups of one family).

Copies, written here with Pillow and numpy (AugLy only for its text, emoji and template overlays, so that no one
augmentation library's defaults define a copy):
- light: ONE of resize, JPEG re-encode, crop keeping >= 70% of the area, pad, a line of text, mirror, brightness;
- stacked: 2-3 of rotate, grey, colour jitter, noise, sharpen, pixelise, perspective, crop, pad to square,
  opacity, JPEG, blur, mirror, text, emoji; in about a third the last one is a template (screenshot frame, meme
  bar, white stripes) that many unrelated images share.
Look-alikes that are not copies: the families above, and `scene` pairs (the left and right thirds of one photo
standing in for two photos of one scene: no shared pixels, each its own group).
"""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

DEBIAN = {"tuxpaint": "tuxpaint-stamps-default", "stellarium": "stellarium-data",
          "wallpapers": "mate-backgrounds plasma-workspace-wallpapers gnome-backgrounds"}
LIGHT = ("resize", "jpeg", "crop", "pad", "text", "flip", "brightness")
STACKED = ("rotate", "grey", "jitter", "noise", "sharpen", "pixelise", "perspective", "crop", "square", "opacity",
           "jpeg", "blur", "flip", "text", "emoji")
TEMPLATES = ("screenshot", "meme", "stripes")


@dataclass
class CopySet:
    """Images with their group (same group = copies of one picture) and family (same family, other group =
    look-alike that is not a copy), and how each was made (`original`, `shipped`, `scene`, or the transforms)."""

    images: list[Image.Image] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    family: list[str] = field(default_factory=list)
    how: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)

    def add(self, img: Image.Image, group: int, family: str, how: str, source: str) -> None:
        self.images.append(img.convert("RGB"))
        self.group.append(group)
        self.family.append(family)
        self.how.append(how)
        self.source.append(source)

    def summary(self) -> dict:
        kinds: dict[str, int] = {}
        for h in self.how:
            for part in h.split("+"):
                kinds[part] = kinds.get(part, 0) + 1
        return {"images": len(self.images), "groups": len(set(self.group)),
                "sources": {s: self.source.count(s) for s in sorted(set(self.source))},
                "by_kind": dict(sorted(kinds.items()))}


def fit(img: Image.Image, long_edge: int = 1024) -> Image.Image:
    from curate.io.images import to_rgb

    img = to_rgb(img).copy()  # as curate decodes it (transparency flattened on white), loaded while open
    scale = long_edge / max(img.size)
    return img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.BICUBIC) if scale < 1 else img


def _open(p: Path) -> Image.Image:
    with Image.open(p) as im:
        im.draft("RGB", (1024, 1024))
        return fit(im)


def ensure_debian(root: Path, source: str) -> None:
    if not list(root.glob(f".{DEBIAN[source].split()[0]}")):
        subprocess.run(["bash", "scripts/install_debian_photos.sh"], check=False,
                       env={**__import__("os").environ, "CURATE_DEBIAN_PHOTOS": DEBIAN[source]})


def _blank(img: Image.Image) -> bool:
    return float(np.asarray(img.convert("L")).std()) < 2


def originals(source: str, root: Path, limit: int, rng: np.random.Generator) -> list[tuple[str, list[Image.Image]]]:
    """(family, [original, the package's own copies...]) per picture of one source, at most `limit` (0: all)."""
    from curate.sample.photos import bundled_photos, tuxpaint_stamps

    out: list[tuple[str, list[Image.Image]]] = []
    if source == "bundled":
        out = [(f"bundled/{i}", [fit(p.load())]) for i, p in enumerate(bundled_photos())]
    elif source == "tuxpaint":
        ensure_debian(root, source)
        stamps = list(tuxpaint_stamps(str(root)))
        pick = sorted(rng.choice(len(stamps), size=min(limit or len(stamps), len(stamps)), replace=False))
        out = [(f"tuxpaint/{i}", [fit(stamps[int(i)].load())]) for i in pick]
    elif source == "stellarium":
        ensure_debian(root, source)
        paths = sorted((root / "usr/share/stellarium/nebulae/default").glob("*.png"))
        pick = sorted(rng.choice(len(paths), size=min(limit or len(paths), len(paths)), replace=False))
        out = [(f"stellarium/{paths[int(i)].stem}", [_open(paths[int(i)])]) for i in pick]
    elif source == "wallpapers":
        ensure_debian(root, source)
        out = [e for e in _wallpapers(root / "usr/share") if not _blank(e[1][0])]
        if limit:
            out = [out[int(i)] for i in sorted(rng.choice(len(out), size=min(limit, len(out)), replace=False))]
    else:
        raise ValueError(source)
    return [(f, imgs) for f, imgs in out if not _blank(imgs[0])]  # MATE's Spring, Waves, Silk hold their picture
    # in the alpha channel over white: blank once flattened, not a photo to find copies of


def _wallpapers(share: Path) -> list[tuple[str, list[Image.Image]]]:
    """One entry per artwork: a Plasma wallpaper's folder (its sizes and crops are copies of one artwork), a MATE
    background's name without its size suffix; MATE's colourways and GNOME's -l/-d variants share a family."""
    groups: dict[tuple[str, str], list[Path]] = {}
    for p in sorted((share / "wallpapers").glob("*/contents/**/*")):
        if p.suffix.lower() in (".jpg", ".png", ".jpeg"):
            name = p.relative_to(share / "wallpapers").parts[0]
            groups.setdefault((f"plasma/{name}", name), []).append(p)
    for p in sorted((share / "backgrounds/mate").rglob("*")):
        if p.suffix.lower() in (".jpg", ".png", ".jpeg"):
            stem = re.sub(r"_\d+x\d+$", "", p.stem)
            fam = re.sub(r"[-_](warm|cold|dark|light|radioactive|blue|green|red|orange|brown|grey|gray)$", "",
                         re.sub(r"-no-logo$", "", stem), flags=re.I)
            groups.setdefault((f"mate/{fam}", stem), []).append(p)
    for p in sorted((share / "backgrounds/gnome").glob("*.webp")):
        groups.setdefault((f"gnome/{re.sub(r'-[ld]$', '', p.stem)}", p.stem), []).append(p)
    out = []
    for (family, _), paths in sorted(groups.items()):
        sizes = {}
        for p in paths:
            with Image.open(p) as im:
                sizes[p] = im.size
        # the largest as the original; of the package's other sizes, at most two of other aspect ratios (a
        # Plasma wallpaper ships up to 13 sizes), else the smallest
        order = sorted(paths, key=lambda p: -sizes[p][0] * sizes[p][1])
        aspect = [sizes[p][0] / sizes[p][1] for p in order]
        keep = [order[0]] + [p for p, a in zip(order[1:], aspect[1:], strict=True) if abs(a / aspect[0] - 1) > 0.05][:2]
        if len(keep) == 1 and len(order) > 1:
            keep.append(order[-1])
        out.append((family, [_open(p) for p in keep]))
    return out


# ---- transforms ------------------------------------------------------------------------------------------------

def _jpeg(img: Image.Image, q: int) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _text(img: Image.Image, rng: np.random.Generator, words: str = "share if you agree #42") -> Image.Image:
    out = img.convert("RGB")
    draw = ImageDraw.Draw(out)
    size = max(12, out.height // 12)
    y = int(rng.uniform(0.05, 0.85) * out.height)
    draw.text((out.width // 20, y), words, fill=(255, 255, 255), font_size=size, stroke_width=max(1, size // 12),
              stroke_fill=(0, 0, 0))
    return out


def _crop(img: Image.Image, rng: np.random.Generator, lo: float, hi: float) -> Image.Image:
    w, h = img.size
    side = float(np.sqrt(rng.uniform(lo, hi)))
    cw, ch = max(8, int(w * side)), max(8, int(h * side))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch))


def light_copy(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    if kind == "resize":
        s = float(rng.uniform(0.3, 0.7))
        return img.resize((max(16, int(w * s)), max(16, int(h * s))), Image.Resampling.BICUBIC)
    if kind == "jpeg":
        return _jpeg(img, int(rng.integers(20, 55)))
    if kind == "crop":
        return _crop(img, rng, 0.7, 0.9)
    if kind == "pad":
        b = int(max(w, h) * float(rng.uniform(0.08, 0.2)))
        return ImageOps.expand(img, border=b, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    if kind == "text":
        return _text(img, rng)
    if kind == "flip":
        return ImageOps.mirror(img)
    if kind == "brightness":
        return ImageEnhance.Brightness(img).enhance(float(rng.choice([0.6, 0.7, 1.3, 1.4])))
    raise ValueError(kind)


def stacked_op(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    img = img.convert("RGB")
    w, h = img.size
    if kind == "rotate":
        angle = float(rng.uniform(5, 25)) * float(rng.choice([-1, 1]))
        return img.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
    if kind == "grey":
        return ImageOps.grayscale(img).convert("RGB")
    if kind == "jitter":
        img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.3, 1.8)))
        img = ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.6, 1.5)))
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(10, 60))) % 256
        return Image.fromarray(hsv, "HSV").convert("RGB")
    if kind == "noise":
        arr = np.asarray(img).astype(np.float32) + rng.normal(0, float(rng.uniform(10, 30)), (h, w, 3))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if kind == "sharpen":
        return ImageEnhance.Sharpness(img).enhance(float(rng.uniform(3, 8)))
    if kind == "pixelise":
        s = float(rng.uniform(0.05, 0.12))
        small = img.resize((max(4, int(w * s)), max(4, int(h * s))), Image.Resampling.BILINEAR)
        return small.resize((w, h), Image.Resampling.NEAREST)
    if kind == "perspective":
        d = float(rng.uniform(0.08, 0.2))
        dx, dy = d * w, d * h
        src = [(rng.uniform(0, dx), rng.uniform(0, dy)), (w - rng.uniform(0, dx), rng.uniform(0, dy)),
               (w - rng.uniform(0, dx), h - rng.uniform(0, dy)), (rng.uniform(0, dx), h - rng.uniform(0, dy))]
        dst = [(0, 0), (w, 0), (w, h), (0, h)]
        a = []
        for (x, y), (u, v) in zip(dst, src, strict=True):
            a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
            a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        coeffs = np.linalg.solve(np.array(a, float), np.array(src, float).reshape(8))
        return img.transform((w, h), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC)
    if kind == "crop":
        return _crop(img, rng, 0.5, 0.9)
    if kind == "square":
        side = max(w, h)
        return ImageOps.pad(img, (side, side), color=tuple(int(c) for c in rng.integers(0, 256, 3)))
    if kind == "opacity":
        bg = Image.new("RGB", img.size, (255, 255, 255) if rng.random() < 0.5 else (0, 0, 0))
        return Image.blend(bg, img, float(rng.uniform(0.5, 0.8)))
    if kind == "jpeg":
        return _jpeg(img, int(rng.integers(10, 35)))
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 4.0)) * max(w, h) / 512))
    if kind == "flip":
        return ImageOps.mirror(img)
    if kind == "text":
        return _text(img, rng, " ".join(rng.choice(["wow", "look", "this", "is", "so", "real", "2024", "lol"], 4)))
    if kind == "emoji":
        import augly.image as A

        x, y = rng.uniform(0.05, 0.6, size=2)
        return A.overlay_emoji(img, x_pos=float(x), y_pos=float(y), emoji_size=float(rng.uniform(0.15, 0.35)))
    if kind in TEMPLATES:
        from curate.sample.copies import TEMPLATE_TRANSFORMS, ensure_min_size

        return TEMPLATE_TRANSFORMS[kind](ensure_min_size(img), rng)[0]
    raise ValueError(kind)


def stacked_copy(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    k = int(rng.integers(2, 4))
    ops = [str(o) for o in rng.choice(STACKED, size=k, replace=False)]
    if rng.random() < 0.35:
        ops[-1] = str(rng.choice(TEMPLATES))
    for op in ops:
        img = stacked_op(img, op, rng)
    return img.convert("RGB"), "+".join(ops)


def build(entries: list[tuple[str, str, list[Image.Image]]], style: str, copies: int, seed: int,
          scene_share: float = 0.1, heavy_groups: int = 6, heavy_copies: int = 40) -> CopySet:
    """A set from (source, family, images) entries: each original, the package's own copies, and `copies` copies
    made in `style` (light: each a different single transform; stacked: 2-3 stacked each; heavy: the first
    `heavy_groups` pictures get `heavy_copies` copies, light and stacked in turn, the others none). A
    `scene_share` of the wide originals are replaced by their left and right thirds, two groups of one family."""
    rng = np.random.default_rng(seed)
    out = CopySet()
    g = 0
    for source, family, imgs in entries:
        pictures = [(imgs[0], imgs[1:], "original")]
        first = imgs[0]
        if first.width >= 1.3 * first.height and first.width >= 300 and rng.random() < scene_share:
            third = first.width // 3
            pictures = [(first.crop((0, 0, third, first.height)), [], "scene"),
                        (first.crop((first.width - third, 0, first.width, first.height)), [], "scene")]
        for pic, shipped, how in pictures:
            out.add(pic, g, family, how, source)
            for s in shipped:
                out.add(s, g, family, "shipped", source)
            if style == "heavy":  # the research's case: a few pictures with many copies, the rest once
                if g < heavy_groups:
                    for c in range(heavy_copies):
                        if c % 2:
                            out.add(light_copy(pic, str(rng.choice(LIGHT)), rng), g, family, "light", source)
                        else:
                            out.add(stacked_copy(pic, rng)[0], g, family, "stacked", source)
            elif style == "light":
                for kind in rng.choice(LIGHT, size=min(copies, len(LIGHT)), replace=False):
                    out.add(light_copy(pic, str(kind), rng), g, family, str(kind), source)
            else:
                for _ in range(copies):
                    img, how_made = stacked_copy(pic, rng)
                    out.add(img, g, family, how_made, source)
            g += 1
    return out
