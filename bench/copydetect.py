"""Copy-detection quality on real photos with AugLy copies, template overlays included.

Originals: the bundled photos plus Debian's Tux Paint stamps and Stellarium photos where unpacked
(scripts/install_debian_photos.sh), without pictures identical to an earlier one. Copies: 1-3 per chosen original, each 1-2 DISC21-style transforms, and
40% of them framed in a shared template (screenshot, meme, stripes) that makes unrelated images look alike.
For each backend x feature post-processing x linkage: pair precision / recall / F1 at the default threshold
and the best F1 over a threshold sweep (optimistic: the threshold is chosen on the answer).

`python -m bench.copydetect` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from curate.dedup.evaluate import pair_scores
from curate.dedup.link import link
from curate.dedup.pairs import Pairs, hub_scored


def build_images(n_orig: int, seed: int, debian_root: str) -> tuple[list, list[int], list[str]]:
    """(images, the original each came from, how: original, a template name, or plain)."""
    from curate.sample.copies import TEMPLATE_TRANSFORMS, make_copy
    from curate.sample.photos import bundled_photos, tuxpaint_stamps

    rng = np.random.default_rng(seed)
    photos = [p.load() for p in bundled_photos()]
    stamps = list(tuxpaint_stamps(debian_root))
    stellarium = sorted(Path(debian_root).glob("usr/share/stellarium/**/*.png"))[:300] + sorted(
        Path(debian_root).glob("usr/share/stellarium/**/*.jpg"))[:300]
    from PIL import Image

    extra = [s.load() for s in stamps[: max(0, n_orig - len(photos))]]
    for p in stellarium[: max(0, n_orig - len(photos) - len(extra))]:
        with Image.open(p) as im:
            extra.append(im.convert("RGB"))
    originals = _distinct(photos + extra)[:n_orig]
    images, group, how = [], [], []
    names = sorted(TEMPLATE_TRANSFORMS)
    for g, img in enumerate(originals):
        images.append(img.convert("RGB"))
        group.append(g)
        how.append("original")
        if rng.random() < 0.5:
            for _ in range(int(rng.integers(1, 4))):
                copy, _ = make_copy(img, rng)
                kind = "plain"
                if rng.random() < 0.4:
                    copy, kind = TEMPLATE_TRANSFORMS[names[int(rng.integers(len(names)))]](copy, rng)
                images.append(copy.convert("RGB"))
                group.append(g)
                how.append(kind)
    return images, group, how


def _distinct(images: list) -> list:
    """Drop pictures identical to an earlier one or to its mirror image (at 32 x 32 grey): Tux Paint ships a
    few stamps twice under two names, and a ground truth calling them unrelated would charge every detector
    a false positive."""
    seen: list[np.ndarray] = []
    out = []
    for img in images:
        a = np.asarray(img.convert("L").resize((32, 32)), np.float32)
        if any(min(np.abs(a - b).mean(), np.abs(a[:, ::-1] - b).mean()) < 1.0 for b in seen):
            continue
        seen.append(a)
        out.append(img)
    return out


def scores_for(sims: np.ndarray, group: list[int], thresholds: list[float], default: float,
               hub: bool = False, how: list[str] | None = None, same: np.ndarray | None = None) -> dict:
    """Pair scores per linkage at the default threshold and the best of the sweep. hub: the sims become
    `pairs.hub_scored` scores (k 5, beta 1, candidates from raw 0.5), as `curate dedup --score hub` does."""
    n = len(group)
    iu = np.triu_indices(n, 1)
    flat = sims[iu]
    if hub:
        cand = flat >= 0.5
        p = Pairs(iu[0][cand], iu[1][cand], flat[cand].astype(np.float32), np.zeros(n, np.int64), np.zeros(n, np.float32))
        p = hub_scored(p, n, k=5, beta=1.0, floor=0.5)
        iu, flat = (p.i, p.j), p.sim
    if same is not None:  # --templates: same-picture pairs link as near-identical, after any hub scoring
        from curate.dedup.templates import link_same

        flat = link_same(iu[0], iu[1], flat, same, 0.97)
    truth = {str(i): g for i, g in enumerate(group)}
    out = {}
    for linkage in ("components", "mutual", "leader"):
        res = {}
        for t in sorted(set(thresholds) | {default}):
            m = flat >= t
            labels = link(n, iu[0][m], iu[1][m], flat[m], linkage, 3)
            res[t] = pair_scores({str(i): int(c) for i, c in enumerate(labels)}, truth)
        best_t = max(res, key=lambda t: res[t]["f1"])
        out[linkage] = {"at_default": {"threshold": default, **res[default]},
                        "best": {"threshold": round(best_t, 3), **res[best_t]}}
        if how is not None:  # at the default threshold: the share of each kind of copy clustered with its original
            m = flat >= default
            labels = link(n, iu[0][m], iu[1][m], flat[m], linkage, 3)
            source = {g: i for i, (g, h) in enumerate(zip(group, how, strict=True)) if h == "original"}
            with_source: dict[str, list[bool]] = {}
            for i, (g, h) in enumerate(zip(group, how, strict=True)):
                if h != "original":
                    with_source.setdefault(h, []).append(bool(labels[i] == labels[source[g]]))
            out[linkage]["at_default"]["copy_with_its_original"] = {
                h: round(float(np.mean(v)), 3) for h, v in sorted(with_source.items())}
    return out


def with_templates(images: list, g: np.ndarray, model: object, floor: float = 0.5,
                   k: int = 8) -> tuple[np.ndarray, list[int], np.ndarray]:
    """The dense similarity matrix after `curate dedup --templates`'s own pass (`templates.apply`) over the
    candidate pairs (raw >= floor), the framed rows, and the same-picture pair codes (applied after scoring)."""
    from curate.dedup import templates

    n = len(images)
    sims = g @ g.T
    iu = np.triu_indices(n, 1)
    cand = sims[iu] >= floor
    def load(rows: set[int], small: bool):  # noqa: ANN202
        return ((r, images[r]) for r in sorted(rows))

    def embed(pictures: list) -> np.ndarray:
        return model.embed([model.preprocess(p) for p in pictures])

    def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.nonzero(q @ g.T >= floor)

    found = templates.apply(iu[0][cand], iu[1][cand], sims[iu][cand], n, k, floor, load, embed, search,
                            lambda r: g[r])
    out = np.full((n, n), -1.0, np.float32)
    out[found.i, found.j] = found.score
    out[found.j, found.i] = found.score
    np.fill_diagonal(out, 1.0)
    return out, found.framed, found.same


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--originals", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--debian-root", default=".data/debian")
    args = ap.parse_args()
    from curate.dedup.whiten import Whitening
    from curate.models import load_image_model
    from curate.stages.dedup import default_threshold

    images, group, how = build_images(args.originals, args.seed, args.debian_root)
    sweep = [round(x, 3) for x in np.arange(0.2, 0.99, 0.02)]
    hub_sweep = [round(x, 3) for x in np.arange(-0.2, 0.3, 0.02)]
    results = {"images": len(images), "originals": len(set(group)),
               "copies_by_kind": {h: how.count(h) for h in sorted(set(how)) if h != "original"},
               "true_pairs": int(sum(c * (c - 1) // 2 for c in np.bincount(group)))}
    feats = {}
    for spec, pooling, size, resize in (("effnet-lite0", "avg", None, "crop"), ("effnet-lite0", "gem", None, "crop"),
                                        ("effnet-lite0", "gem", 320, "pad")):
        m = load_image_model(spec, pooling=pooling, size=size, resize=resize)
        emb = np.concatenate([m.embed([m.preprocess(im) for im in images[i : i + 64]])
                              for i in range(0, len(images), 64)])
        feats[f"{spec}/{pooling}" + (f"/{resize}{size}" if size else "")] = emb
    from curate.models.onnx_copy import available

    for spec in ("sscd", "sscd-distilled"):  # the research's copy detector, where installed (make install)
        if available(spec):
            m = load_image_model(spec)
            feats[spec] = np.concatenate([m.embed([m.preprocess(im) for im in images[i : i + 32]])
                                          for i in range(0, len(images), 32)])
    ph = load_image_model("phash")
    bits = np.unpackbits(ph.embed([ph.preprocess(im) for im in images]), axis=1).astype(np.float32)
    hamming = bits @ (1 - bits).T + (1 - bits) @ bits.T
    phash_sims = 1 - hamming / 64
    results["phash"] = scores_for(phash_sims, group, sweep, default_threshold("bits"))
    for name, emb in feats.items():
        for mode in ("none", "center", "pca"):
            x = emb
            if mode != "none":
                mean = emb.mean(0)
                if mode == "center":
                    w = Whitening(mean, None)
                else:
                    _, s, vt = np.linalg.svd(emb - mean, full_matrices=False)
                    eig = s**2 / (len(emb) - 1)
                    keep = eig > 1e-8 * eig.max()
                    w = Whitening(mean, (vt[keep].T / np.sqrt(eig[keep] + 0.1 * eig[keep].mean())).astype(np.float32))
                x = w(emb)
            sims = x @ x.T
            model_name = name.split("/")[0]
            results[f"{name}/{mode}"] = scores_for(sims, group, sweep, default_threshold("float", model_name), how=how)
            results[f"{name}/{mode}/hub"] = scores_for(sims, group, hub_sweep,
                                                       default_threshold("float", model_name, "hub"), hub=True, how=how)
            if name.endswith("avg"):
                # hash and embedding combined: a pair is a copy when either signal says so
                both = np.maximum(sims, np.where(phash_sims >= default_threshold("bits"), 1.0, -1.0))
                results[f"{name}/{mode}+phash"] = scores_for(both, group, sweep, default_threshold("float", "effnet"))
    # template-framed images compared by their picture (curate/dedup/templates.py, `curate dedup --templates`)
    model = load_image_model("effnet-lite0", pooling="gem", size=320, resize="pad")
    framed_sims, framed, same = with_templates(images, feats["effnet-lite0/gem/pad320"], model)
    results["templates"] = {"framed": len(framed), "same_picture_pairs": len(same), "framed_by_kind": {
        h: sum(how[r] == h for r in framed) for h in sorted(set(how))}}
    results["effnet-lite0/gem/pad320/none/templates"] = scores_for(
        framed_sims, group, sweep, default_threshold("float", "effnet"), how=how, same=same)
    results["effnet-lite0/gem/pad320/none/templates/hub"] = scores_for(
        framed_sims, group, hub_sweep, default_threshold("float", "effnet", "hub"), hub=True, how=how, same=same)
    best = max(((k, lk, v[lk]["best"]["f1"], v[lk]["at_default"]["f1"]) for k, v in results.items()
                if isinstance(v, dict) and "mutual" in v for lk in v), key=lambda r: r[2])
    results["best_f1"] = {"config": best[0], "linkage": best[1], "best_sweep_f1": best[2], "f1_at_default": best[3]}
    # the same configuration on the images without the template-framed copies: what the frames cost
    plain = np.array([h in ("original", "plain") for h in how])
    x = feats[best[0].split("/none")[0]] if "/none" in best[0] else None
    if x is not None:
        sub = x[plain]
        results["best_f1"]["without_template_copies"] = scores_for(
            sub @ sub.T, [g for g, k in zip(group, plain, strict=True) if k], hub_sweep if best[0].endswith("hub") else sweep,
            default_threshold("float", "effnet", "hub" if best[0].endswith("hub") else "raw"),
            hub=best[0].endswith("hub"))[best[1]]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
