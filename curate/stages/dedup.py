"""`curate dedup`: embeddings -> near-duplicate clusters, counts, memorisation risk, keep/drop, report.

The search and linking are global (one pass over all shards); the per-shard tables are then written by the
shard executor, so they are atomic and resumable like every stage. Outputs (schemas/dedup_*.yaml):
`samples/{i}.parquet` (one row per sample; with `--action drop` only the kept ones), `drops/{i}.parquet`
(the dropped ones with the key they duplicate), `clusters.parquet`, `index/` (for `--against`),
`report.json` + `report.html`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate import __version__, optspec
from curate.config import REPORT_THRESHOLDS, DedupOptions, EmbedOptions
from curate.dedup import index as idx
from curate.dedup import rows as rows_mod
from curate.dedup import spill, templates
from curate.dedup import verify as verify_mod
from curate.dedup.link import STRONG, components_of, link_edges
from curate.dedup.pairs import Pairs, hub_scored, knn_pairs, partition_pairs, spill_needed
from curate.dedup.report import threshold_counts
from curate.dedup.rows import Clusters
from curate.dedup.vectors import EmbeddingSet, open_embeddings
from curate.errors import CurateError
from curate.executor import Shard, ShardOutput, output_lock, run_stage
from curate.io import fs
from curate.io.parquet import write_table
from curate.models import is_copy_detector
from curate.optspec import ensure_valid

Options = DedupOptions  # this stage's options (curate/config.py)
STAGE = "dedup"

HUB_REPORT_THRESHOLDS = (0.0, 0.05, 0.1, 0.2)
COPY_REPORT_THRESHOLDS = (0.5, 0.75, 0.95)  # SSCD units: the research's replication, DISC21's copy, duplicate
# SSCD family: best pair F1 on the light-copy benchmark's development photos (bench/evidence/copy_light.json) lay at 0.56 (sscd) and 0.64 (the
# student), and 0.54-0.58 on bench/copydetect.py's stacked copies; the held-out wallpapers are read at 0.60
COPY_THRESHOLD = 0.60
VERIFY_FLOOR_COPY = 0.30  # --verify's raw floor for SSCD-family models (verify_floor)
SCAN_DRAFT = 2 * templates.WORK  # the template scan's JPEG draft edge: its thumbnails are made from twice their size

ROWS_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.int64()), ("caption", pa.string()), ("cluster_id", pa.int64()),
    ("dup_count", pa.int64()),
    ("nearest_key", pa.string()), ("nearest_sim", pa.float32()), ("is_representative", pa.bool_()),
    ("keep", pa.bool_()), ("duplicate_of", pa.string()), ("duplicate_sim", pa.float32()),
    ("cluster_captions", pa.int64()), ("cluster_same_caption", pa.bool_()), ("memorization_risk", pa.float32()),
    ("corpus_key", pa.string()), ("corpus_sim", pa.float32()),
])
DROP_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.int64()), ("caption", pa.string()),
                         ("cluster_id", pa.int64()), ("stage", pa.string()),
                         ("reason", pa.string()), ("duplicate_of", pa.string()), ("similarity", pa.float32())])


def default_threshold(kind: str, model: str = "", score: str = "raw") -> float:
    """Per model family (measured on `curate sample` data and bench/copydetect.py; see docs/stages/dedup.md): hashes <= 10
    of 64 bits differ, EfficientNet-Lite ImageNet features 0.80, SSCD and other copy detectors 0.60 (chosen on
    development photos; the held-out figures are in docs/benchmarks.md), CLIP-like and other float embeddings 0.92. Hub scores (`--score hub`):
    0.05 above the pair's mean top-k similarity (bench/copydetect.py's best F1 with EfficientNet-Lite lay at
    0.04-0.06)."""
    if score == "hub":
        return 0.05
    if kind == "bits":
        return 0.84
    if model.startswith("effnet"):
        return 0.80
    if is_copy_detector(model):
        return COPY_THRESHOLD
    return 0.92


def search_mode(mode: str, emb: EmbeddingSet, engine: str) -> str:
    """`--mode auto`: knn for hashes and up to 200k rows on the local engine, partitions otherwise."""
    if mode != "auto":
        return mode
    if emb.kind == "bits":
        return "knn"
    return "partition" if engine == "dask" or emb.n > 200_000 else "knn"


def auto_score(opts: DedupOptions, emb: EmbeddingSet) -> str:
    """`--score auto`: hub scores (the best on bench/copydetect.py's held-out photos for every backend) where the
    candidates are each row's k nearest (knn mode); raw where hashes are compared, with --against (its index
    scores raw similarities), and in partition mode, which keeps every pair above the candidates' floor: hub
    scores gather them down to raw 0.5, which is 16% of all pairs of effnet-lite0's development embeddings."""
    if opts.against or emb.kind == "bits" or search_mode(opts.mode, emb, opts.engine) != "knn":
        return "raw"
    return "hub"


def find_pairs(emb: EmbeddingSet, opts: DedupOptions, floor: float, engine: str = "local",
               scheduler: str | None = None, workers: int = 1) -> tuple[Pairs | spill.PairFiles, Any]:
    """Candidate pairs at similarity >= floor, and the FAISS index when one was built. On `engine="dask"`
    float embeddings use the partition (SemDeDup) plan as Dask tasks, and the pairs stay in files under the
    output's `_work/` (curate/dedup/spill.py)."""
    mode = search_mode(opts.mode, emb, engine)
    if engine not in ("local", "dask"):
        raise CurateError(f"unknown engine {engine!r}: local or dask")
    if engine == "dask" and mode != "partition":
        raise CurateError("--engine dask runs dedup as partitions: float embeddings and --mode partition (or auto)")
    if mode == "partition":
        if emb.kind == "bits":
            raise CurateError("--mode partition needs float embeddings; hashes use the binary index (knn)")
        if engine == "dask":
            pairs = spill.dask_pairs(emb, floor, fs.join(opts.output, "_work"), nlist=opts.nlist,
                                     n_assign=opts.n_assign, seed=opts.seed, scheduler=scheduler, workers=workers)
        else:
            spill_to = (fs.join(opts.output, "_work", "spill") if fs.is_local(opts.output) and spill_needed(emb)
                        else None)  # the copies are plain local files
            pairs = partition_pairs(emb, floor, nlist=opts.nlist, n_assign=opts.n_assign, seed=opts.seed,
                                    spill=spill_to)
        index = idx.build(emb, _index_spec(opts)) if opts.save_index else None
        return pairs, index
    index = idx.build(emb, _index_spec(opts))
    return knn_pairs(emb, index, opts.k, floor), index


def _index_spec(opts: DedupOptions) -> idx.IndexSpec:
    return idx.IndexSpec(kind=opts.index, nlist=opts.nlist, nprobe=opts.nprobe, codec=opts.codec,
                         seed=opts.seed)


def check_against(clusters: Clusters, emb: EmbeddingSet, against: str, threshold: float) -> str:
    """Each sample's nearest corpus neighbour (a previous run's saved index) and whether it is a duplicate
    of it (`Clusters.corpus*`); returns the path of the corpus keys (`rows.shard_table` reads them)."""
    import faiss

    info_path = fs.join(against, "index", "info.json")
    if not fs.exists(info_path):
        raise CurateError(f"--against {against}: no index/info.json; run dedup there with --save-index first")
    info = fs.read_json(info_path)
    if info["dim"] != emb.dim or info["kind"] != emb.kind:
        raise CurateError(f"--against {against}: its index holds {info['kind']} vectors of dimension {info['dim']}, "
                          f"these are {emb.kind} of dimension {emb.dim} (embed both with the same model)")
    path = fs.join(against, "index", "index.faiss")
    index = faiss.read_index_binary(path) if emb.kind == "bits" else faiss.read_index(path)
    ids = np.full(emb.n, -1, np.int64)
    sims = np.full(emb.n, np.nan, np.float32)
    for start, block in emb.iter_blocks():
        s, i = idx.search(index, block, 1)
        ids[start : start + len(block)], sims[start : start + len(block)] = i[:, 0], s[:, 0]
    found = ids >= 0
    clusters.corpus, clusters.corpus_sim = ids, np.where(found, sims, np.nan).astype(np.float32)
    clusters.corpus_dup = found & (sims >= threshold)
    return fs.join(against, "index", "keys.parquet")


@dataclass(frozen=True)
class WritePlan:
    """What write_shard needs, and what the written shards depend on (recorded for resume)."""

    action: str
    shard_of: dict[str, int]  # embed metadata file -> its shard number
    options: dict[str, Any]  # the run's recorded options, the threshold and report thresholds resolved
    embeddings: str
    images: str | None
    emb: EmbeddingSet = dataclasses.field(compare=False)  # paths and offsets: the rows' vectors (duplicate_sim)
    corpus_keys: str | None = None  # --against: the corpus's keys.parquet

    @functools.cached_property
    def _positions(self) -> dict[str, int]:
        return {path: k for k, path in enumerate(self.shard_of)}

    def position(self, meta_path: str) -> int:
        return self._positions[meta_path]

    def recorded(self) -> dict[str, Any]:
        return {**self.options, "_shard_of": self.shard_of, "embeddings": self.embeddings, "images": self.images}


def write_shard(shard: Shard, out: ShardOutput, plan: WritePlan) -> dict[str, Any]:
    """Per embed shard: samples/{i}.parquet (and drops/{i}.parquet): the shard's dedup columns
    (`rows.shard_table`, from the numbers the global step left in `_work/`), with its shard and caption columns
    read from the shard's own metadata file. A plain function of files: the Dask engine runs it as a task."""
    work = rows_mod.shard_table(plan.emb, fs.join(shard.output_root, "_work"), plan.position(shard.input),
                                plan.corpus_keys)
    names = pq.read_schema(shard.input).names
    meta = pq.read_table(shard.input, columns=[c for c in ("key", "shard", "caption") if c in names])
    if not meta.column("key").cast(pa.string()).equals(work.column("key")):
        raise CurateError(f"{shard.input}: its keys changed while dedup ran (run dedup again)")
    n = work.num_rows
    columns = {
        "shard": (meta.column("shard").cast(pa.int64()) if "shard" in names
                  else pa.array(np.full(n, plan.shard_of[shard.input], np.int64))),
        "caption": meta.column("caption").cast(pa.string()) if "caption" in names else pa.nulls(n, pa.string()),
    }
    rows = pa.table({f.name: columns[f.name] if f.name in columns else work.column(f.name) for f in ROWS_SCHEMA},
                    schema=ROWS_SCHEMA)
    drop = plan.action == "drop"
    keep = rows.column("keep").to_numpy(zero_copy_only=False)
    kept = rows.filter(pa.array(keep)) if drop else rows
    write_table(kept, out.path(f"samples/{shard.name}.parquet"))
    dropped = rows.filter(pa.array(~keep))
    reasons = Counter()
    drops = []
    if drop:
        for r in dropped.to_pylist():
            reason = "duplicate_of_corpus" if r["corpus_key"] and r["duplicate_of"] == r["corpus_key"] else "near_duplicate"
            reasons[reason] += 1
            drops.append({"key": r["key"], "shard": r["shard"], "caption": r["caption"],
                          "cluster_id": r["cluster_id"], "stage": STAGE, "reason": reason,
                          "duplicate_of": r["duplicate_of"], "similarity": r["duplicate_sim"]})
        write_table(pa.Table.from_pylist(drops, schema=DROP_SCHEMA), out.path(f"drops/{shard.name}.parquet"))
    return {"rows_in": rows.num_rows, "rows_out": kept.num_rows, "rows_rejected": len(drops),
            "reasons": dict(reasons), "duplicates": int((~keep).sum())}


def save_index(index: Any, emb: EmbeddingSet, keys: rows_mod.KeyFile, output: str, threshold: float,  # noqa: ANN401
               model: str) -> None:
    import faiss

    folder = fs.join(output, "index")
    with fs.atomic_local(fs.join(folder, "index.faiss")) as tmp:
        (faiss.write_index_binary if emb.kind == "bits" else faiss.write_index)(index, tmp)
    with fs.atomic_local(fs.join(folder, "keys.parquet")) as tmp, pq.ParquetWriter(tmp, pa.schema([("key", pa.string())]), compression="zstd") as writer:
        for s in range(len(emb.emb_paths)):  # a shard at a time
            writer.write_table(pa.table({"key": keys.take(np.arange(emb.offsets[s], emb.offsets[s + 1]))}))
    fs.write_json_atomic(fs.join(folder, "info.json"), {"dim": emb.dim, "kind": emb.kind, "ntotal": int(index.ntotal),
                                                        "threshold": threshold, "model": model,
                                                        "index": type(index).__name__})


def run(opts: DedupOptions) -> dict[str, Any]:
    """The stage, holding its output's lock from the global step to the report (executor.output_lock)."""
    ensure_valid(opts)
    with output_lock(opts.output):
        return _run(opts)


def _run(opts: DedupOptions) -> dict[str, Any]:
    emb_dir, output, images = opts.embeddings, opts.output, opts.images
    emb = open_embeddings(emb_dir)
    manifest = fs.read_json(fs.join(emb_dir, "manifest.json"))
    whitening = None
    if opts.against:
        saved = fs.join(opts.against, "index", "whitening.npz")
        if fs.exists(saved):
            from curate.dedup.whiten import Whitening

            whitening = Whitening.load(fs.url_to_fs(saved)[1])
    elif opts.whiten != "none":
        from curate.dedup.whiten import fit

        whitening = fit(emb, opts.whiten, seed=opts.seed)
    if whitening is not None:
        emb = emb.with_transform(whitening, whitening.dim_out)
    if opts.score == "auto":
        opts = dataclasses.replace(opts, score=auto_score(opts, emb))
    hub = opts.score == "hub"
    threshold = float(opts.threshold if opts.threshold is not None
                      else default_threshold(emb.kind, manifest.get("model", ""), opts.score))
    report_thresholds = opts.report_thresholds
    if hub and report_thresholds == REPORT_THRESHOLDS:
        report_thresholds = HUB_REPORT_THRESHOLDS
    elif is_copy_detector(manifest.get("model", "")) and report_thresholds == REPORT_THRESHOLDS:
        report_thresholds = COPY_REPORT_THRESHOLDS
    opts = dataclasses.replace(opts, threshold=threshold, report_thresholds=report_thresholds)
    floor = float(opts.hub_floor) if hub else min([threshold, *opts.report_thresholds])
    if opts.templates:
        if emb.kind == "bits":
            raise CurateError("--templates needs float embeddings (it embeds each framed picture again)")
        floor = min(floor, float(opts.hub_floor))  # a frame's mates can sit well below the threshold
    score_floor = floor  # the pairs the scores and the report are made from
    if opts.verify and search_mode(opts.mode, emb, opts.engine) == "knn":  # each row's k nearest: bounded;
        floor = min(floor, verify_floor(opts, emb.kind, manifest.get("model", "")))  # partitions keep all pairs
    meta_paths = fs.list_shards(fs.join(emb_dir, "metadata"))
    shard_of = {p: s for p, s in zip(meta_paths, emb.shards, strict=True)}
    plan = WritePlan(opts.action, shard_of, optspec.recorded(opts), emb_dir, images, emb)
    report_path = fs.join(output, "report.json")
    manifest_path = fs.join(output, "_stage.json")
    if not opts.overwrite and fs.exists(report_path) and fs.exists(manifest_path):
        from curate.executor import options_hash, recorded_options

        if fs.read_json(manifest_path).get("options_hash") == options_hash(recorded_options(plan)):
            return fs.read_json(report_path)  # done with these options: nothing to redo
    if opts.keep == "aesthetic" and "aesthetic" not in emb.columns:
        raise CurateError("--keep aesthetic: the metadata has no aesthetic column (LAION's AESTHETIC_SCORE)")
    fs.ensure_dir(output)

    pairs, index = find_pairs(emb, opts, floor, opts.engine, opts.scheduler, opts.workers)
    template_info = None
    frames: dict[int, tuple[np.ndarray, tuple]] = {}
    frames_seconds = 0.0  # --verify's own frame scan (with --templates it is the template pass's)
    if (opts.templates or opts.verify) and isinstance(pairs, spill.PairFiles):
        pairs = pairs.load()  # the pixel tests and the verification work on every candidate pair at once
    candidates = pairs
    if opts.verify:
        pairs = pairs.above(score_floor)
    # --verify's thumbnails of the rows the scan decodes, made as it decodes them: its scale is verify's
    kept: dict[int, np.ndarray] | None = {} if opts.verify and SCAN_DRAFT == verify_mod.EDGE else None
    if opts.templates:
        pairs, template_info, same, frames = framed_pairs(emb, pairs, index, images, emb_dir, opts, score_floor,
                                                          opts.progress, kept)
    elif opts.verify:  # the frames only
        frames_started = time.perf_counter()
        with _bars(opts.progress) as bar:
            frames, _, _ = templates.find_frames(pairs.i, pairs.j, pairs.sim, emb.n, opts.template_k,
                                                 image_loader(emb, images, emb_dir, SCAN_DRAFT, keep=kept), bar)
        frames_seconds = time.perf_counter() - frames_started
    prescored = pairs  # raw similarities (of the pictures, for framed rows)
    if hub:
        pairs = hub_scored(pairs, emb.n, opts.hub_k, opts.hub_beta, score_floor)
    if opts.templates and not opts.verify:  # with --verify, pixel-alike pairs are verified like the others
        from curate.dedup.templates import link_same

        pairs = Pairs(pairs.i, pairs.j, link_same(pairs.i, pairs.j, pairs.sim, same, STRONG), pairs.nn, pairs.nn_sim)
    n = emb.n
    labels = link_edges(n, pairs.chunks, threshold, opts.linkage, opts.mutual_k)
    verify_info = None
    if opts.verify:
        started = time.perf_counter()
        labels, verify_info = verified_labels(labels, candidates, prescored, frames, emb, images, emb_dir, opts,
                                              manifest.get("model", ""), kept)
        verify_info["seconds"] = round(frames_seconds + time.perf_counter() - started, 2)
        del candidates, prescored, kept
    counts = threshold_counts(pairs, n, opts, labels)  # the report's, while the pairs exist
    nn, nn_sim = pairs.nn, pairs.nn_sim
    del pairs  # 1.4 GB at 12M rows: let go before the per-row columns are made
    work = fs.join(output, "_work")
    spill.remove(work)
    clusters, caption_counts = rows_mod.cluster(emb, labels, nn, nn_sim, opts.keep, opts.seed, opts.caption_near)
    del labels, nn, nn_sim
    corpus_keys = check_against(clusters, emb, opts.against, threshold) if opts.against else None
    keys = rows_mod.KeyFile.write(emb, fs.join(work, "keys.arrow"))
    rows_mod.save(clusters, work)
    rows_mod.write_clusters(clusters.labels, clusters.size, clusters.rep, clusters.distinct, caption_counts, keys,
                            fs.join(output, "clusters.parquet"))
    del caption_counts
    if index is not None and opts.save_index:
        save_index(index, emb, keys, output, threshold, manifest.get("model", "?"))
        if whitening is not None and not opts.against:
            whitening.save(fs.url_to_fs(fs.join(output, "index", "whitening.npz"))[1])
    del index

    # per shard: the Dask engine writes them as tasks, from the files under _work/
    stats = run_stage(STAGE, write_shard, meta_paths, output, dataclasses.replace(plan, corpus_keys=corpus_keys),
                      overwrite=True, progress=opts.progress, rows_total=n, engine=opts.engine,
                      scheduler=opts.scheduler, workers=opts.workers if opts.engine == "dask" else 1)
    from curate.dedup.report import build_report

    report = build_report(clusters, counts, opts, emb, keys, manifest, output, images, template_info, verify_info)
    report["rows_in"] = sum(s["rows_in"] for s in stats)
    report["rows_out"] = sum(s["rows_out"] for s in stats)
    report["curate_version"] = __version__
    fs.write_json_atomic(fs.join(output, "report.json"), report)
    shutil.rmtree(work, ignore_errors=True)  # the numbers and keys the shards were written from
    return report


def framed_pairs(emb: EmbeddingSet, pairs: Pairs, index: Any, images: str, emb_dir: str, opts: DedupOptions,  # noqa: ANN401
                 floor: float, progress: bool, kept: dict[int, np.ndarray] | None = None,
                 ) -> tuple[Pairs, dict[str, int], np.ndarray, dict[int, tuple]]:
    """`--templates` (curate/dedup/templates.py `apply`) with this run's inputs: images decoded from the
    download shards through embed's safe decoder, pictures embedded with the embed run's own model (loaded as
    embed loads it), new candidates from the index (or dense blocks when none was built). Returns the rescored
    pairs, counts, the codes of the same-picture pairs (`templates.link_same`) and the framed rows' frames.
    With --verify, the scan's decoded images also give verification its thumbnails (`kept`)."""
    from curate.stages.embed import load_models

    if not fs.exists(fs.join(emb_dir, "_stage.json")):
        raise CurateError(f"--templates: {emb_dir} has no _stage.json, so the model that made these embeddings "
                          "is unknown (run curate embed, or dedup without --templates)")
    embed_opts = recorded_embed(emb_dir, images)  # the embed run's own model, as embed loads it
    load = image_loader(emb, images, emb_dir, SCAN_DRAFT, embed_opts.max_image_area, keep=kept)

    model = load_models(embed_opts)[0]

    def embed(pictures: list[Image.Image]) -> np.ndarray:
        v = model.embed([model.preprocess(p) for p in pictures])
        return emb.transform(v) if emb.transform is not None else v

    def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if index is not None:
            sims, ids = idx.search(index, q, opts.k + 1)
            hit = (ids >= 0) & (sims >= floor)
            return np.nonzero(hit)[0], ids[hit]
        qs, rows = [], []
        for start, block in emb.iter_blocks():
            a, b = np.nonzero(q @ block.T >= floor)
            qs.append(a)
            rows.append(b + start)
        return np.concatenate(qs), np.concatenate(rows)

    with _bars(progress) as bar:
        found = templates.apply(pairs.i, pairs.j, pairs.sim, emb.n, opts.template_k, floor, load, embed, search,
                                emb.gather, bar)
    return Pairs(found.i, found.j, found.score, pairs.nn, pairs.nn_sim), found.info, found.same, found.frames


def verify_floor(opts: DedupOptions, kind: str, model: str) -> float:
    """--verify's lowest raw similarity: copy detectors put copies with heavy edits at 0.3-0.5 (bench/copydetect.py:
    5% of the verified copies on the development sets lie below 0.42)."""
    if opts.verify_floor is not None:
        return float(opts.verify_floor)
    if kind == "bits":
        raise CurateError("--verify needs float embeddings")
    return VERIFY_FLOOR_COPY if is_copy_detector(model) else float(opts.hub_floor)


def recorded_embed(emb_dir: str, images: str) -> EmbedOptions:
    """The options the embed run recorded (its _stage.json; the defaults where it has none), on the CPU where no
    GPU is here: how it decoded and which model it loaded."""
    stage_path = fs.join(emb_dir, "_stage.json")
    recorded = fs.read_json(stage_path).get("options", {}) if fs.exists(stage_path) else {}
    return optspec.from_recorded(EmbedOptions, recorded, images=images, output=emb_dir, text_model=None,
                                 device="auto")


def image_loader(emb: EmbeddingSet, images: str, emb_dir: str, small_edge: int, max_area: int | None = None,
                 lazy: bool = False, keep: dict[int, np.ndarray] | None = None,
                 ) -> Callable[[set[int], bool], Iterator[tuple[int, Any]]]:
    """`load(rows, small)`: the images of `rows`, shard by shard, through embed's safe decoder (when `small`,
    grey and at JPEG's draft scale down to `small_edge`: thumbnails are enough), decoded on every core (Pillow
    releases the GIL); ones that no longer decode are skipped: embed accepted them once. `lazy`: (row, decode)
    instead, `decode(edge)` giving the grey image at the draft scale for `edge` (None: `small_edge`) or None,
    for the caller's own threads. `keep`: each small image's verification thumbnail (`verify.thumbnail`) is put
    there too, in the decoding threads."""
    from curate.io.image_shards import iter_image_samples, shard_files

    if max_area is None:
        max_area = recorded_embed(emb_dir, images).max_image_area

    def encoded(rows: set[int], small: bool) -> Iterator[tuple[int, Callable[..., Image.Image | None]]]:
        wanted = sorted(rows)  # a key lookup for these rows only, not a dict of every row's key
        row_of = dict(zip(emb.values_of("key", np.array(wanted, np.int64)), wanted, strict=True))
        for path in shard_files(images) if rows else []:
            for meta, data in iter_image_samples(path):
                r = row_of.get(meta["key"])
                if r is not None and data:
                    yield r, functools.partial(_decoded, data, max_area, small_edge if small else None)

    def decoded(rows: set[int], small: bool) -> Iterator[tuple[int, Image.Image]]:
        from concurrent.futures import ThreadPoolExecutor

        def one(item: tuple[int, Callable[..., Image.Image | None]]) -> Image.Image | None:
            img = item[1]()
            if keep is not None and small and img is not None:
                keep[item[0]] = verify_mod.thumbnail(img)
            return img

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            for batch in verify_mod.batches(encoded(rows, small), 64):  # encoded bytes in memory: a batch
                for (r, _), img in zip(batch, pool.map(one, batch), strict=True):
                    if img is not None:
                        yield r, img

    return encoded if lazy else decoded


def _decoded(data: bytes, max_area: int, small_edge: int | None, edge: int | None = None) -> Image.Image | None:
    """Full size in RGB when `small_edge` is None, else grey at the draft scale for `edge` (or `small_edge`)."""
    from curate.io.images import decode_image

    if small_edge is None:
        return decode_image(data, max_area)[0]
    edge = edge or small_edge
    return decode_image(data, max_area, (edge, edge), grey=True)[0]


@contextlib.contextmanager
def _bars(progress: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A maker of progress bars (desc, total) -> update, all closed on exit."""
    from tqdm import tqdm

    bars: list[Any] = []

    def bar(desc: str, total: int) -> Callable[[int], None]:
        bars.append(tqdm(total=total, disable=None if progress else True, desc=desc, unit="img"))
        return bars[-1].update

    try:
        yield bar
    finally:
        for b in bars:
            b.close()


def verified_labels(labels: np.ndarray, candidates: Pairs, prescored: Pairs, frames: dict[int, tuple],
                    emb: EmbeddingSet, images: str, emb_dir: str, opts: DedupOptions,
                    model: str, kept: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """`--verify`: the pairs whose rows are in two clusters, raw similarity >= the floor, at most --verify-k a
    row, checked by local features (curate/dedup/verify.py); each pair that passes joins its two clusters.
    `kept`: thumbnails the template scan made already (`verify.verify`'s `thumbs`). Returns the new labels and
    the report's counts."""
    n = emb.n
    # every pair seen (the candidates at raw similarity, and the template pass's pairs at picture similarity);
    # those whose rows the scores put in one cluster already need no check
    i, j, raw = verify_mod.union_max(n, [(candidates.i, candidates.j, candidates.sim),
                                         (prescored.i, prescored.j, prescored.sim)])
    pick = verify_mod.band(i, j, raw, labels[i] == labels[j], verify_floor(opts, emb.kind, model), opts.verify_k)
    pick = pick[np.argsort(-raw[pick], kind="stable")]  # the most similar first
    load = image_loader(emb, images, emb_dir, verify_mod.EDGE, lazy=True)
    with _bars(opts.progress) as bar:
        ok, checked = verify_mod.verify(i[pick], j[pick], lambda rows: load(rows, True), frames, labels,
                                        os.cpu_count() or 1, bar, thumbs=kept)
    a, b = i[pick][ok], j[pick][ok]
    first = np.unique(labels, return_index=True)[1]  # each cluster's first row
    rows = np.arange(n, dtype=np.int64)
    new = components_of(n, iter([(rows, first[labels].astype(np.int64)), (a, b)]))
    info = {"candidates": int(len(pick)), "checked": checked, "verified": int(ok.sum()), "framed_rows": len(frames),
            "clusters_joined": int(len(np.unique(labels)) - len(np.unique(new)))}
    return new, info
