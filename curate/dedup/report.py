"""The dedup report: report.json (read from code) and a self-contained report.html (looked at)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from curate.dedup import count
from curate.dedup.link import link_edges
from curate.dedup.pairs import Pairs
from curate.dedup.rows import Clusters, KeyFile
from curate.dedup.spill import PairFiles
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


def threshold_counts(pairs: Pairs | PairFiles, n: int, opts: Any, labels: np.ndarray) -> dict[str, dict[str, Any]]:  # noqa: ANN401
    """Per report threshold (and the run's): share removed, pairs, samples with a match, duplicate clusters
    and their samples. `labels` are the run's own clusters (at opts.threshold), not linked again. The pairs are
    read chunk by chunk (a slice at a time, or a pair file at a time), never copied per threshold."""
    out = {}
    for t in sorted(set(opts.report_thresholds) | {opts.threshold}):
        at = labels if t == opts.threshold else link_edges(n, pairs.chunks, t, opts.linkage, opts.mutual_k)
        sizes = np.bincount(at) if n else np.zeros(0, np.int64)
        out[f"{t:.2f}"] = {"share_removed": round(1.0 - len(sizes) / n, 4) if n else 0.0,
                           "pairs": sum(int(np.count_nonzero(s >= t)) for _, _, s in pairs.chunks()),
                           "samples_with_a_match": int((np.nan_to_num(pairs.nn_sim, nan=-2.0) >= t).sum()),
                           "duplicate_clusters": int((sizes > 1).sum()),
                           "samples_in_duplicate_clusters": int(sizes[sizes > 1].sum())}
    return out


def _captions_of(emb: EmbeddingSet, rows: np.ndarray) -> list[str | None]:
    """Captions of a few rows (any order), read from the shards they are in."""
    if "caption" not in emb.columns or not len(rows):
        return [None] * len(rows)
    return emb.values_of("caption", rows)


def top_rows(values: np.ndarray, k: int) -> np.ndarray:
    """The first k of np.argsort(-values, kind="stable") without sorting every row: the candidates at or above
    the k-th largest value, sorted."""
    cand = np.arange(len(values))
    if len(values) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]
        cand = np.flatnonzero(values >= kth)
    return cand[np.argsort(-values[cand], kind="stable")][:k]


def build_report(clusters: Clusters, counts: dict[str, dict[str, Any]], opts: Any, emb: EmbeddingSet,  # noqa: ANN401
                 keys: KeyFile, manifest: dict[str, Any], output: str, images: str | None,
                 templates: dict[str, int] | None = None, verify: dict[str, Any] | None = None) -> dict[str, Any]:
    n = emb.n
    size, labels = clusters.size, clusters.labels
    same = (size > 1) & (clusters.distinct == 1)
    marked = clusters.marked()
    at = {t: c["share_removed"] for t, c in counts.items()}
    counts = {t: {k: v for k, v in c.items() if k != "share_removed"} for t, c in counts.items()}
    dup_clusters = int((size > 1).sum())
    risk = np.zeros(len(size), np.float32)  # a cluster of one has risk 0
    multi = np.flatnonzero(size > 1)
    risk[multi] = count.risk(size[multi], clusters.distinct[multi])
    row_risk = risk[labels]
    top = [int(r) for r in top_rows(row_risk, 20) if row_risk[r] > 0]
    del row_risk, multi
    top_captions = _captions_of(emb, np.array(top, np.int64))
    top_keys = keys.take(np.array(top, np.int64)).to_pylist()
    report: dict[str, Any] = {
        "model": manifest.get("model"), "kind": emb.kind, "samples": n, "threshold": opts.threshold,
        "score": opts.score,
        **({"templates": templates} if templates else {}),
        **({"verify": verify} if verify else {}),
        "linkage": opts.linkage, "mode": opts.mode, "keep_policy": opts.keep, "action": opts.action,
        "clusters": int(len(size)), "duplicate_clusters": dup_clusters,
        "samples_in_duplicate_clusters": int(size[size > 1].sum()),
        "duplicates_marked": marked, "share_removed": round(marked / n, 4) if n else 0.0,
        "share_removed_at_threshold": at,
        "counts_at_threshold": counts,
        "same_image_same_caption": {"clusters": int(same.sum()), "samples": int(size[same].sum())},
        "largest_cluster": int(size.max()) if len(size) else 0,
        "cluster_size_counts": {str(k): int(v) for k, v in zip(*np.unique(size, return_counts=True), strict=True)},
        "risk_top": [{"key": key, "dup_count": int(size[labels[r]]),
                      "cluster_captions": int(clusters.distinct[labels[r]]), "memorization_risk": float(risk[labels[r]]),
                      "caption": c} for r, key, c in zip(top, top_keys, top_captions, strict=True)],
        "against": opts.against,
        "corpus_duplicates": int(clusters.corpus_dup.sum()) if clusters.corpus_dup is not None else 0,
    }
    _write_html(report, clusters, emb, keys, output, images)
    return report


def _write_html(report: dict[str, Any], clusters: Clusters, emb: EmbeddingSet, keys: KeyFile, output: str,
                images: str | None) -> None:
    size = clusters.size
    order = [int(c) for c in top_rows(size, 10) if size[c] > 1]
    members = {c: np.flatnonzero(clusters.labels == c)[:8] for c in order}  # each shown cluster's first members
    shown_rows = np.concatenate([members[c] for c in order]) if order else np.zeros(0, np.int64)
    keys_of = {c: keys.take(members[c]).to_pylist() for c in order}
    caption_of = dict(zip(keys.take(shown_rows).to_pylist(), _captions_of(emb, shown_rows), strict=True))
    shown = set(caption_of)
    thumbs = _thumbs(images, shown)
    size_png = plots.histogram(size[size > 1] if (size > 1).any() else size, "Duplicate cluster sizes",
                               "members per cluster", bins=30, log=True)
    nn_png = plots.histogram(clusters.nearest_sim, "Nearest-neighbour similarity", "cosine similarity", bins=60,
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
        *([("pairs checked by local features (--verify)", f"{report['verify']['checked']} of "
            f"{report['verify']['candidates']} candidates, {report['verify']['seconds']} s"),
           ("verified as the same picture", report["verify"]["verified"]),
           ("clusters joined by them", report["verify"]["clusters_joined"])]
          if "verify" in report else []),
    ])
    galleries = []
    for c in order:
        items = [(thumbs.get(k), f"{k}: {caption_of.get(k) or ''}") for k in keys_of[c]]
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
