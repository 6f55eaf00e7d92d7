"""The dedup report: report.json (read from code) and a self-contained report.html (looked at)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.link import link
from curate.dedup.pairs import Pairs
from curate.dedup.vectors import EmbeddingSet
from curate.io import fs
from curate.report import html, plots


def _thumbs(images: str | None, keys: set[str]) -> dict[str, bytes]:
    """JPEG thumbnails of `keys` from a `curate download` output (skipped when not given)."""
    if not images or not keys:
        return {}
    from PIL import Image

    from curate.io.image_shards import iter_image_samples, shard_files

    out: dict[str, bytes] = {}
    for path in shard_files(images):
        for meta, data in iter_image_samples(path):
            if meta["key"] in keys and data:
                try:
                    img = Image.open(io.BytesIO(data))
                    img.thumbnail((192, 192))
                    buf = io.BytesIO()
                    img.convert("RGB").save(buf, format="JPEG", quality=80)
                    out[meta["key"]] = buf.getvalue()
                except Exception:  # noqa: BLE001 (a thumbnail is decoration; the report still renders)
                    continue
    return out


def build_report(rows: dict[str, Any], pairs: Pairs, clusters: pa.Table, opts: Any, emb: EmbeddingSet,
                 manifest: dict[str, Any], output: str, images: str | None,
                 templates: dict[str, int] | None = None) -> dict[str, Any]:
    n = emb.n
    size = clusters.column("size").to_numpy()
    same = clusters.column("same_caption").to_numpy(zero_copy_only=False)
    keep = np.asarray(rows["keep"])
    threshold = opts.threshold
    at, counts = {}, {}
    for t in sorted(set(opts.report_thresholds) | {threshold}):
        above = pairs.sim >= t  # a mask, not a copy of the pairs per threshold (117M pairs at 12M rows)
        labels = link(n, pairs.i, pairs.j, pairs.sim, opts.linkage, opts.mutual_k, keep=above)
        at[f"{t:.2f}"] = round(1.0 - (int(labels.max()) + 1 if n else 0) / n, 4) if n else 0.0
        sizes = np.bincount(labels) if n else np.zeros(0, np.int64)
        counts[f"{t:.2f}"] = {"pairs": int(above.sum()), "samples_with_a_match": int((np.nan_to_num(pairs.nn_sim, nan=-2.0) >= t).sum()),
                              "duplicate_clusters": int((sizes > 1).sum()),
                              "samples_in_duplicate_clusters": int(sizes[sizes > 1].sum())}
    dup_clusters = int((size > 1).sum())
    risk = np.asarray(rows["memorization_risk"])
    top = np.argsort(-risk, kind="stable")[:20]
    # captions stay in Arrow: the report shows a few dozen, and a Python list of every row's is ~1 GB at 12M rows
    captions = emb.metadata.column("caption") if "caption" in emb.metadata.column_names else pa.nulls(n, pa.string())
    report: dict[str, Any] = {
        "model": manifest.get("model"), "kind": emb.kind, "samples": n, "threshold": threshold,
        "score": opts.score,
        **({"templates": templates} if templates else {}),
        "linkage": opts.linkage, "mode": opts.mode, "keep_policy": opts.keep, "action": opts.action,
        "clusters": int(len(size)), "duplicate_clusters": dup_clusters,
        "samples_in_duplicate_clusters": int(size[size > 1].sum()),
        "duplicates_marked": int((~keep).sum()), "share_removed": round(float((~keep).mean()) if n else 0.0, 4),
        "share_removed_at_threshold": at,
        "counts_at_threshold": counts,
        "same_image_same_caption": {"clusters": int((same & (size > 1)).sum()),
                                    "samples": int(size[same & (size > 1)].sum())},
        "largest_cluster": int(size.max()) if len(size) else 0,
        "cluster_size_counts": {str(k): int(v) for k, v in zip(*np.unique(size, return_counts=True), strict=True)},
        "risk_top": [{"key": rows["key"][int(r)].as_py(), "dup_count": int(rows["dup_count"][r]),
                      "cluster_captions": int(rows["cluster_captions"][r]), "memorization_risk": float(risk[r]),
                      "caption": captions[int(r)].as_py()} for r in top if risk[r] > 0],
        "against": opts.against,
        "corpus_duplicates": int(pc.sum(pc.fill_null(pc.equal(rows["duplicate_of"], rows["corpus_key"]),
                                                      False)).as_py() or 0),
    }
    _write_html(report, rows, pairs, clusters, captions, output, images)
    return report


def _write_html(report: dict[str, Any], rows: dict[str, Any], pairs: Pairs, clusters: pa.Table,
                captions: pa.ChunkedArray | pa.Array, output: str, images: str | None) -> None:
    size = clusters.column("size").to_numpy()
    order = np.argsort(-size, kind="stable")[:10]
    order = [c for c in order if size[c] > 1]
    keys_of = dict(zip(order, clusters.column("keys").take(pa.array(order, pa.int64())).to_pylist(), strict=True))
    shown = {k for c in order for k in keys_of[c][:8]}
    at_rows = np.flatnonzero(pc.is_in(rows["key"], value_set=pa.array(sorted(shown), pa.string())).to_numpy(
        zero_copy_only=False))
    caption_of = dict(zip(rows["key"].take(pa.array(at_rows)).to_pylist(),
                          captions.take(pa.array(at_rows)).to_pylist(), strict=True))
    thumbs = _thumbs(images, shown)
    size_png = plots.histogram(size[size > 1] if (size > 1).any() else size, "Duplicate cluster sizes",
                               "members per cluster", bins=30, log=True)
    nn_png = plots.histogram(pairs.nn_sim, "Nearest-neighbour similarity", "cosine similarity", bins=60,
                             vline=report["threshold"] if report["score"] == "raw" else None)
    at = report["share_removed_at_threshold"]
    at_png = plots.bars(list(at), [100 * v for v in at.values()], "Share removed by threshold", "% of samples")
    summary = html.table(["measure", "value"], [
        ("samples", report["samples"]), ("model", report["model"]),
        ("threshold", report["threshold"] if report["score"] == "raw" else f"{report['threshold']} (hub score)"),
        ("linkage", report["linkage"]), ("clusters", report["clusters"]),
        ("duplicate clusters", report["duplicate_clusters"]),
        ("samples in duplicate clusters", report["samples_in_duplicate_clusters"]),
        ("marked as duplicates", f"{report['duplicates_marked']} ({100 * report['share_removed']:.1f}%)"),
        ("same image + same caption clusters", report["same_image_same_caption"]["clusters"]),
        ("samples in them", report["same_image_same_caption"]["samples"]),
        ("largest cluster", report["largest_cluster"]),
        *([("pixel tests (--templates): images checked", report["templates"]["checked"]),
           ("framed in a shared template, compared by their picture", report["templates"]["framed"]),
           ("neighbour pairs that are the same picture", report["templates"]["same_picture_pairs"])]
          if "templates" in report else []),
    ])
    galleries = []
    for c in order:
        items = [(thumbs.get(k), f"{k}: {caption_of.get(k) or ''}") for k in keys_of[c][:8]]
        galleries.append(f"<h3>cluster {int(c)}: {int(size[c])} members</h3>" + html.gallery(items))
    risk_rows = [(r["key"], r["dup_count"], r["cluster_captions"], f"{r['memorization_risk']:.3f}", r["caption"])
                 for r in report["risk_top"]]
    page = html.page("curate dedup report", [
        ("Summary", summary),
        ("Share removed at other thresholds", html.image(at_png, "share removed by threshold")
         + html.table(["threshold", "share removed", "pairs", "samples with a match", "duplicate clusters",
                       "samples in them"],
                      [(t, f"{100 * v:.1f}%", *report["counts_at_threshold"][t].values()) for t, v in at.items()])),
        ("Cluster sizes", html.image(size_png, "cluster size histogram")),
        ("Nearest-neighbour similarities", html.image(nn_png, "nearest neighbour similarity histogram")),
        ("Largest clusters", "".join(galleries) or "<p>No duplicate clusters.</p>"),
        ("Highest memorisation risk", html.table(["key", "dup_count", "distinct captions", "risk", "caption"],
                                                 risk_rows) if risk_rows else "<p>No sample at risk.</p>"),
    ])
    fs.write_text_atomic(fs.join(output, "report.html"), page)
    for name, data in (("cluster_sizes.png", size_png), ("nearest_similarity.png", nn_png),
                       ("share_removed.png", at_png)):
        fs.write_bytes_atomic(fs.join(output, name), data)
