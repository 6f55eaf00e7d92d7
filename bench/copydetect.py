"""Copy detection on sources it was not tuned on: light and stacked copies, look-alikes, a held-out source.

Sets (bench/copysets.py): `dev` from the bundled photos, Tux Paint stamps and Stellarium's nebula photos;
`heldout` from desktop wallpapers (Plasma, MATE, GNOME), a source nothing in curate was tuned on. Each split
is built three times: with light copies (one transform each), with stacked copies (2-3 transforms, a third of
them ending in a shared template), and `heavy`: six pictures with 40 copies each (light and stacked), the
research's case of a heavily duplicated image, where the question is whether its group is counted whole. Look-alikes that are not copies are in every set (colourways, nebula fields, a
photo's two outer thirds).

Every image goes through the real stages: written as a download-style shard, `curate embed` per backend, then
`curate dedup` with its defaults (the literal default configuration, read from its output: hub scores) and with
`--templates`, `--verify` and both (each at its default threshold, timed), and sweeps over the same
candidate pairs (`find_pairs`, k 32) with each linkage and score (hub scores also with raw pairs at or above
0.9 / 0.8 / 0.7 kept raw, the bypass that would keep heavily copied pictures whole). A threshold is chosen on `dev` only
and read on `heldout`; the held-out figure is the honest one. Reported per set: pair precision / recall / F1,
the share of copies clustered with their original per transform kind, and the false pairs between
look-alikes. `python -m bench.copydetect` prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.copysets import CopySet, build, originals
from curate.dedup.evaluate import pair_scores
from curate.dedup.link import link

SPLITS = {"dev": ("bundled", "tuxpaint", "stellarium"), "heldout": ("wallpapers",)}
BACKENDS = {  # name: (embed model, embed options)
    "effnet-lite0": ("effnet-lite0", {}),
    "effnet-lite0/gem": ("effnet-lite0", {"pooling": "gem"}),
    "sscd": ("sscd", {}),
    "sscd-distilled": ("sscd-distilled", {}),
    "phash": ("phash", {}),
}
LINKAGES = ("components", "mutual", "leader")
STYLES = ("light", "stacked", "heavy")
STRONG = (0.9, 0.8, 0.7)


def write_shard(cs: CopySet, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, img in enumerate(cs.images):
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        rows.append({"key": f"i{k:06d}", "input_row": k, "url": f"http://bench/{k}.jpg", "caption": f"image {k}",
                     "width": img.width, "height": img.height, "status": "success", "jpg": buf.getvalue()})
    pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")


def evaluate(labels: np.ndarray, cs: CopySet) -> dict:
    res = pair_scores({str(i): int(c) for i, c in enumerate(labels)}, {str(i): g for i, g in enumerate(cs.group)})
    first = {}
    for i, (g, h) in enumerate(zip(cs.group, cs.how, strict=True)):
        if h in ("original", "scene"):
            first.setdefault(g, i)
    found: dict[str, list[bool]] = {}
    for i, (g, h) in enumerate(zip(cs.group, cs.how, strict=True)):
        if h in ("original", "scene"):
            continue
        hit = bool(labels[i] == labels[first[g]])
        for part in h.split("+"):
            found.setdefault(part, []).append(hit)
    res["copy_with_its_original"] = {h: f"{sum(v)}/{len(v)}" for h, v in sorted(found.items())}
    res["copy_with_its_original_min"] = round(min((sum(v) / len(v) for v in found.values()), default=1.0), 4)
    # look-alikes: different groups of one family put in one cluster (pairs), the false positives that matter
    fam = np.array(cs.family)
    grp = np.array(cs.group)
    look = 0
    for c in np.unique(labels):
        m = np.flatnonzero(labels == c)
        if len(m) > 1:
            a, b = np.triu_indices(len(m), 1)
            look += int(np.sum((fam[m][a] == fam[m][b]) & (grp[m][a] != grp[m][b])))
    res["lookalike_pairs_merged"] = look
    # heavily copied pictures: the share of each group of >= 10 images in its largest cluster (1.0: counted whole)
    sizes = np.bincount(grp)
    whole = [np.bincount(labels[grp == g]).max() / sizes[g] for g in np.flatnonzero(sizes >= 10)]
    res["big_groups_kept_whole"] = round(float(np.mean(whole)), 4) if whole else None
    return res


def cluster_ids(dedup_out: Path, n: int) -> np.ndarray:
    """cluster_id per input row, from a `curate dedup` output's row shards."""
    labels = np.full(n, -1, np.int64)
    for p in sorted(dedup_out.rglob("*.parquet")):
        if "_work" in p.parts or p.name == "clusters.parquet":
            continue
        t = pq.read_table(p)
        if {"key", "cluster_id"} <= set(t.column_names):
            for key, cid in zip(t.column("key").to_pylist(), t.column("cluster_id").to_pylist(), strict=True):
                labels[int(key[1:])] = cid
    assert (labels >= 0).all(), "a row missing from the dedup output"
    return labels


def labels_at(pairs, n: int, t: float, linkage: str) -> np.ndarray:  # noqa: ANN001
    """Clusters of the candidate pairs at threshold t (mutual_k 3, the stage default)."""
    p = pairs.above(t)
    return link(n, p.i, p.j, p.sim, linkage, 3)


def sweep(pairs, n: int, thresholds: list[float], linkage: str, cs: CopySet) -> dict[float, dict]:  # noqa: ANN001
    return {t: evaluate(labels_at(pairs, n, t, linkage), cs) for t in thresholds}


def run_backend(name: str, sets: dict[str, CopySet], work: Path, only_configs: tuple[str, ...] = (),
                sweeps: bool = True) -> dict:
    from curate.config import DedupOptions
    from curate.dedup.pairs import hub_scored
    from curate.dedup.vectors import open_embeddings
    from curate.stages import dedup, embed
    from curate.stages.dedup import default_threshold, find_pairs

    model, kw = BACKENDS[name]
    result: dict = {}
    emb_dirs = {}
    start = time.perf_counter()
    for s in sets:
        emb_dirs[s] = work / "emb" / name.replace("/", "-") / s
        embed.run(embed.Options(images=str(work / "images" / s), output=str(emb_dirs[s]), model=model,
                                progress=False, **kw))
    result["embed_seconds"] = round(time.perf_counter() - start, 1)  # 0 when --work held them already
    first = open_embeddings(str(next(iter(emb_dirs.values()))))
    kind = first.kind
    default_t = default_threshold(kind, model)
    result["default_threshold"] = default_t
    # the literal defaults of `curate dedup` (hub scores here) and the stage's own alternatives, --templates
    # (frames found by their pixels, the framed picture compared), --verify and both, each at its default threshold
    # (the default score is hub on these sets, knn mode: `--score hub` alone, and --templates or --verify without
    # it, would run the same configuration twice)
    configs = {"dedup_defaults": {}}
    if kind != "bits":
        configs |= {"dedup --score hub --templates": {"score": "hub", "templates": True},
                    "dedup --score hub --verify": {"score": "hub", "verify": True},
                    "dedup --score hub --templates --verify": {"score": "hub", "templates": True, "verify": True}}
    if only_configs:
        configs = {c: e for c, e in configs.items() if c in only_configs}
    for conf, extra in configs.items():
        result[conf] = {}
        start = time.perf_counter()
        for s, cs in sets.items():
            out = work / "dedup" / name.replace("/", "-") / conf.replace(" ", "").replace("-", "_") / s
            images = {"images": str(work / "images" / s)} if extra.get("templates") or extra.get("verify") else {}
            dedup.run(dedup.Options(embeddings=str(emb_dirs[s]), output=str(out), progress=False,
                                    save_index=False, overwrite=True, **extra, **images))
            result[conf][s] = evaluate(cluster_ids(out, len(cs.images)), cs)
        result[conf]["seconds"] = round(time.perf_counter() - start, 1)  # every set, this configuration
    if not sweeps:
        return result
    floor = 0.5 if kind == "bits" else 0.3
    grid = [round(x, 2) for x in np.arange(floor, 0.99, 0.02)]
    hub_grid = [round(x, 3) for x in np.arange(0.0, 0.3, 0.01)]
    opts = DedupOptions(embeddings="-", output="-")
    cand = {}
    for s in sets:
        emb = open_embeddings(str(emb_dirs[s]))
        cand[s] = find_pairs(emb, opts, floor)[0]
    scorings = {"raw": (cand, grid)}
    if kind != "bits":
        scorings["hub"] = ({s: hub_scored(p, len(sets[s].images), 5, 1.0, 0.5) for s, p in cand.items()}, hub_grid)
        for strong in STRONG:  # raw pairs at or above `strong` keep their raw score (heavy groups are all hubs)
            scorings[f"hub-strong{strong}"] = ({s: hub_scored(p, len(sets[s].images), 5, 1.0, 0.5, strong)
                                               for s, p in cand.items()}, hub_grid)
    for score, (pairs, thresholds) in scorings.items():
        for linkage in LINKAGES:
            dev = sweep(pairs["dev_stacked"], len(sets["dev_stacked"].images), thresholds, linkage,
                        sets["dev_stacked"])
            dev_l = sweep(pairs["dev_light"], len(sets["dev_light"].images), thresholds, linkage, sets["dev_light"])
            # one threshold for both copy styles, chosen on dev: the mean F1 of its light and stacked sets
            best = max(thresholds, key=lambda t: dev[t]["f1"] + dev_l[t]["f1"])
            row: dict = {"best_threshold_on_dev": best}
            for s, cs in sets.items():
                row[s] = evaluate(labels_at(pairs[s], len(cs.images), best, linkage), cs)
            result[f"{score}/{linkage}"] = row
    return result


def headline(results: dict) -> dict:
    """Per backend x configuration, the held-out figures the bars are about, beside dev's."""
    out = {}
    for name, r in results.items():
        for conf, row in r.items():
            if not isinstance(row, dict) or "heldout_stacked" not in row:
                continue
            out[f"{name} {conf}"] = {
                s: {"f1": row[s]["f1"], "p": row[s]["precision"], "r": row[s]["recall"],
                    "min_kind": row[s]["copy_with_its_original_min"], "lookalike": row[s]["lookalike_pairs_merged"],
                    "whole": row[s]["big_groups_kept_whole"]}
                for s in row if isinstance(row[s], dict)}
    return out


def timing(entries: list, images: int, seed: int, work: Path) -> dict:
    """--verify's cost beside the embedding's, at `images` images (stacked copies of the development originals,
    as many per original as it takes), sscd-distilled (effnet-lite0 where it is not installed), every stage run
    for real and timed here: `curate dedup --score hub` with and without --verify."""
    from curate.stages import dedup, embed

    per = max(1, -(-images // len(entries)) - 1)
    cs = build(entries, "stacked", per, seed, scene_share=0.0)
    cs.images, cs.group = cs.images[:images], cs.group[:images]
    write_shard(cs, work / "images" / "timing")
    from curate.models.onnx_copy import available

    model = "sscd-distilled" if available("sscd-distilled") else "effnet-lite0"
    out: dict = {"images": len(cs.images), "originals": len(entries), "model": model}
    start = time.perf_counter()
    embed.run(embed.Options(images=str(work / "images" / "timing"), output=str(work / "emb-timing"), model=model,
                            progress=False))
    out["embed_seconds"] = round(time.perf_counter() - start, 1)
    for conf, extra in {"hub": {}, "hub_verify": {"verify": True}}.items():
        start = time.perf_counter()
        report = dedup.run(dedup.Options(embeddings=str(work / "emb-timing"), output=str(work / f"dedup-{conf}"),
                                         images=str(work / "images" / "timing"), score="hub", progress=False,
                                         save_index=False, overwrite=True, **extra))
        out[f"dedup_{conf}_seconds"] = round(time.perf_counter() - start, 1)
        out[f"dedup_{conf}_report_verify"] = report.get("verify")
    out["verify_seconds"] = out["dedup_hub_verify_report_verify"]["seconds"]  # the stage's own clock on it
    out["verify_over_embed"] = round(out["verify_seconds"] / out["embed_seconds"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-source", type=int, default=120, help="originals per development source (bundled: all)")
    ap.add_argument("--heldout", type=int, default=0, help="held-out wallpaper artworks (0: all)")
    ap.add_argument("--copies", type=int, default=2, help="copies per original")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--heavy-groups", type=int, default=6, help="heavy sets: pictures with many copies")
    ap.add_argument("--heavy-copies", type=int, default=40)
    ap.add_argument("--dev-sources", default=",".join(SPLITS["dev"]))
    ap.add_argument("--debian-root", default=".data/debian")
    ap.add_argument("--configs", default="", help="only these `curate dedup` configurations (comma-separated names)")
    ap.add_argument("--timing", type=int, default=0, help="also: --verify's time beside the embedding's at this "
                                                                 "many images (the bar: 10000)")
    ap.add_argument("--timing-per-source", type=int, default=500, help="--timing: originals per development source")
    ap.add_argument("--no-sweeps", action="store_true", help="skip the threshold x linkage sweeps")
    ap.add_argument("--work", default=None, help="folder for shards and stage outputs (default: a temp folder)")
    args = ap.parse_args()
    from curate.models.onnx_copy import available

    root = Path(args.debian_root)
    rng = np.random.default_rng(args.seed)
    entries: dict[str, list] = {}
    for split, sources in {**SPLITS, "dev": tuple(args.dev_sources.split(","))}.items():
        entries[split] = []
        for src in sources:
            limit = args.heldout if split == "heldout" else (0 if src == "bundled" else args.per_source)
            entries[split] += [(src, fam, imgs) for fam, imgs in originals(src, root, limit, rng)]
    sets = {f"{split}_{style}": build(entries[split], style, args.copies, args.seed + i,
                                      heavy_groups=args.heavy_groups, heavy_copies=args.heavy_copies)
            for i, (split, style) in enumerate((s, st) for s in SPLITS for st in STYLES)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for s, cs in sets.items():
            write_shard(cs, work / "images" / s)
        results = {}
        timed = None
        if args.timing:
            timing_entries = [(src, fam, imgs) for src in args.dev_sources.split(",")
                              for fam, imgs in originals(src, root, 0 if src == "bundled" else args.timing_per_source,
                                                         np.random.default_rng(args.seed))]
            timed = timing(timing_entries, args.timing, args.seed, work)
        for name in args.backends.split(","):
            if BACKENDS[name][0].startswith("sscd") and not available(BACKENDS[name][0]):
                continue
            results[name] = run_backend(name, sets, work, tuple(c for c in args.configs.split(",") if c),
                                        not args.no_sweeps)
    print(json.dumps({"sets": {s: cs.summary() for s, cs in sets.items()}, "headline": headline(results),
                      "verify_timing": timed, "backends": results}))


if __name__ == "__main__":
    main()
