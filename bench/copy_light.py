"""Light copies on a development source and a held-out one: is a copy found with its original, and at what cost?

Copies are made by ONE light transform each, written here with Pillow (not AugLy, whose defaults built the
other copy benchmark): resize, JPEG re-encode, crop keeping >= 70% of the area, pad, a line of text, mirror,
brightness. Sources:
- `dev`: the bundled photos (scikit-image, scikit-learn) and Tux Paint stamps where unpacked;
- `heldout`: Debian's desktop wallpapers (`mate-backgrounds`, `plasma-workspace-wallpapers`, unpacked by this
  script). Their packages bring real copies (one artwork shipped at several sizes and crops, grouped as one)
  and real look-alikes that are not copies (one design in several colourways: MATE's stripes, Ubuntu MATE's
  Warm / Cold / Dark; kept apart).
For each backend: pair precision / recall / F1 over a threshold sweep with `components` and `mutual` linkage,
the share of copies clustered with their original per transform, at the backend's default threshold and at the
threshold that is best on `dev` (the held-out figure is the honest one). `python -m bench.copy_light`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from curate.dedup.evaluate import pair_scores
from curate.dedup.link import link

WALLPAPERS = ("mate-backgrounds", "plasma-workspace-wallpapers")
TRANSFORMS = ("resize", "jpeg", "crop", "pad", "text", "flip", "brightness")


def light_copy(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    if kind == "resize":
        s = float(rng.uniform(0.3, 0.7))
        return img.resize((max(16, int(w * s)), max(16, int(h * s))), Image.Resampling.BICUBIC)
    if kind == "jpeg":
        import io

        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(20, 55)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "crop":
        side = float(np.sqrt(rng.uniform(0.7, 0.9)))
        cw, ch = int(w * side), int(h * side)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x, y, x + cw, y + ch))
    if kind == "pad":
        b = int(max(w, h) * float(rng.uniform(0.08, 0.2)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        return ImageOps.expand(img, border=b, fill=colour)
    if kind == "text":
        out = img.copy()
        draw = ImageDraw.Draw(out)
        size = max(12, h // 12)
        y = int(rng.uniform(0.05, 0.85) * h)
        draw.text((w // 20, y), "share if you agree #42", fill=(255, 255, 255), font_size=size,
                  stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
        return out
    if kind == "flip":
        return ImageOps.mirror(img)
    if kind == "brightness":
        return ImageEnhance.Brightness(img).enhance(float(rng.choice([0.6, 0.7, 1.3, 1.4])))
    raise ValueError(kind)


def _fit(img: Image.Image, long_edge: int = 1024) -> Image.Image:
    from curate.io.images import to_rgb

    img = to_rgb(img).copy()  # as curate decodes it (transparency flattened on white), loaded while open
    scale = long_edge / max(img.size)
    return img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.BICUBIC) if scale < 1 else img


def dev_originals(debian_root: Path, n: int) -> list[list[Image.Image]]:
    from curate.sample.photos import bundled_photos, tuxpaint_stamps

    photos = [[p.load()] for p in bundled_photos()]
    photos += [[s.load()] for s in list(tuxpaint_stamps(str(debian_root)))[: max(0, n - len(photos))]]
    return [[_fit(im) for im in g] for g in photos[:n]]


def heldout_originals(debian_root: Path) -> list[list[Image.Image]]:
    """One group per artwork: a plasma wallpaper's folder (its sizes, crops and screenshot are copies of one
    artwork), a MATE background's name without its size suffix (Elephants_3840x2160 is Elephants)."""
    share = debian_root / "usr/share"
    if not (share / "wallpapers").exists() or not (share / "backgrounds").exists():
        subprocess.run(["bash", "scripts/install_debian_photos.sh"], check=True,
                       env={**__import__("os").environ, "CURATE_DEBIAN_PHOTOS": " ".join(WALLPAPERS)})
    groups: dict[str, list[Path]] = {}
    for p in sorted((share / "wallpapers").glob("*/contents/**/*")):
        if p.suffix.lower() in (".jpg", ".png", ".jpeg"):
            groups.setdefault("plasma/" + p.relative_to(share / "wallpapers").parts[0], []).append(p)
    for p in sorted((share / "backgrounds").rglob("*")):
        if p.suffix.lower() in (".jpg", ".png", ".jpeg"):
            groups.setdefault("mate/" + re.sub(r"_\d+x\d+$", "", p.stem), []).append(p)
    out = []
    for _, paths in sorted(groups.items()):
        sizes = {}
        for p in paths:
            with Image.open(p) as im:
                sizes[p] = im.size
        # the largest as the original; of the package's other sizes, at most two of other aspect ratios (a
        # plasma wallpaper ships up to 13 sizes: all kept, its pairs would swamp the rest), else the smallest
        order = sorted(paths, key=lambda p: -sizes[p][0] * sizes[p][1])
        aspect = [sizes[p][0] / sizes[p][1] for p in order]
        keep = [order[0]] + [p for p, a in zip(order[1:], aspect[1:], strict=True) if abs(a / aspect[0] - 1) > 0.05][:2]
        if len(keep) == 1 and len(order) > 1:
            keep.append(order[-1])
        imgs = []
        for p in keep:
            with Image.open(p) as im:
                im.draft("RGB", (1024, 1024))
                imgs.append(_fit(im))
        if np.asarray(imgs[0].convert("L")).std() < 2:  # blank once flattened (MATE's Spring, Waves, Silk hold
            continue  # their picture in the alpha channel over white): not a photo to find copies of
        out.append(imgs)
    return out


def build(groups: list[list[Image.Image]], seed: int, copies: int) -> tuple[list, list[int], list[str]]:
    """(images, group, how): each group's images (`original` for the first, `shipped` for the package's own
    copies), then `copies` light copies of the first, each by a different transform."""
    rng = np.random.default_rng(seed)
    images, group, how = [], [], []
    for g, imgs in enumerate(groups):
        for k, im in enumerate(imgs):
            images.append(im)
            group.append(g)
            how.append("original" if k == 0 else "shipped")
        for kind in rng.choice(TRANSFORMS, size=min(copies, len(TRANSFORMS)), replace=False):
            images.append(light_copy(imgs[0], str(kind), rng).convert("RGB"))
            group.append(g)
            how.append(str(kind))
    return images, group, how


def scores(sims: np.ndarray, group: list[int], how: list[str], t: float, linkage: str) -> dict:
    n = len(group)
    iu = np.triu_indices(n, 1)
    flat = sims[iu]
    m = flat >= t
    labels = link(n, iu[0][m], iu[1][m], flat[m], linkage, 3)
    res = pair_scores({str(i): int(c) for i, c in enumerate(labels)}, {str(i): g for i, g in enumerate(group)})
    source = {g: i for i, (g, h) in enumerate(zip(group, how, strict=True)) if h == "original"}
    found: dict[str, list[bool]] = {}
    for i, (g, h) in enumerate(zip(group, how, strict=True)):
        if h != "original":
            found.setdefault(h, []).append(bool(labels[i] == labels[source[g]]))
    res["copy_with_its_original"] = {h: f"{sum(v)}/{len(v)}" for h, v in sorted(found.items())}
    return res


def embed_all(spec: str, images: list, **kw: object) -> np.ndarray:
    from curate.models import load_image_model

    m = load_image_model(spec, **kw)
    if m.kind == "bits":
        bits = np.unpackbits(m.embed([m.preprocess(im) for im in images]), axis=1).astype(np.float32)
        return 1 - (bits @ (1 - bits).T + (1 - bits) @ bits.T) / bits.shape[1]
    e = np.concatenate([m.embed([m.preprocess(im) for im in images[i : i + 32]]) for i in range(0, len(images), 32)])
    return e @ e.T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev-originals", type=int, default=120)
    ap.add_argument("--heldout-groups", type=int, default=0, help="0: every wallpaper artwork")
    ap.add_argument("--copies", type=int, default=3, help="light copies per original, each a different transform")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--debian-root", default=".data/debian")
    args = ap.parse_args()
    from curate.models.onnx_copy import available
    from curate.stages.dedup import default_threshold

    root = Path(args.debian_root)
    held = heldout_originals(root)
    sets = {"dev": build(dev_originals(root, args.dev_originals), args.seed, args.copies),
            "heldout": build(held[: args.heldout_groups or None], args.seed + 1, args.copies)}
    backends = {"effnet-lite0": ("effnet-lite0", {}, "float"), "effnet-lite0/gem": ("effnet-lite0", {"pooling": "gem"}, "float"),
                "phash": ("phash", {}, "bits")}
    for spec in ("sscd", "sscd-distilled"):
        if available(spec):
            backends[spec] = (spec, {}, "float")
    sweep = [round(x, 2) for x in np.arange(0.3, 0.99, 0.02)]
    results: dict = {"transforms": list(TRANSFORMS), "copies_per_original": args.copies, "sets": {
        name: {"images": len(imgs), "groups": len(set(g)), "by_kind": {h: how.count(h) for h in sorted(set(how))}}
        for name, (imgs, g, how) in sets.items()}, "backends": {}}
    for name, (spec, kw, kind) in backends.items():
        sims = {s: embed_all(spec, imgs, **kw) for s, (imgs, _, _) in sets.items()}
        default = default_threshold(kind, spec)
        out: dict = {"default_threshold": default}
        for linkage in ("components", "mutual"):
            dev_g, dev_how = sets["dev"][1], sets["dev"][2]
            f1 = {t: scores(sims["dev"], dev_g, dev_how, t, linkage)["f1"] for t in sweep}
            best = max(f1, key=lambda t: f1[t])
            out[linkage] = {
                "best_threshold_on_dev": best,
                **{f"{s}_at_default": scores(sims[s], sets[s][1], sets[s][2], default, linkage) for s in sets},
                **{f"{s}_at_dev_best": scores(sims[s], sets[s][1], sets[s][2], best, linkage) for s in sets},
            }
        results["backends"][name] = out
    print(json.dumps(results))


if __name__ == "__main__":
    main()
