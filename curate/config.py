"""Every stage's options, declared once: the Click commands, pipeline files and the stages all use these.

One frozen dataclass per stage; `curate.optspec` derives the command-line options, the pipeline loader and
the JSON Schema from it (see `curate schema pipeline --json`). Field names are the pipeline keys; the
command-line spelling is `--name-with-dashes`. Paths (role `input`/`output`) are relative to the pipeline's
`root` in pipeline files and to the current folder on the command line.

This module imports nothing heavy: `curate --help` and `curate run --check` read it without loading a stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from curate.optspec import option

DEFAULT_MAX_IMAGE_AREA = 89_478_485  # Pillow's own decompression-bomb limit
CAPTION_OPS = ("paraphrase", "rt", "cwr", "rna", "rc")
TRAIN_MITIGATIONS = ("rc", "rt", "cwr", "rna", "gn")
REPORT_THRESHOLDS = (0.85, 0.90, 0.95, 0.98)


@dataclass(frozen=True, kw_only=True)
class ShardRun:
    """How a shard stage is executed: never part of its result, so never compared on resume."""

    workers: int = option(1, "Shards processed in parallel (--engine dask without --scheduler: local workers).",
                          role="run")
    overwrite: bool = option(False, "Redo shards that are already done.", role="run", flag="--overwrite")
    progress: bool = option(True, "Progress bars (on a terminal).", role="run")
    engine: str = option("local", "Run shards here, or as Dask tasks (pip install 'curate[dask]').",
                         choices=("local", "dask"), role="run")
    scheduler: str | None = option(None, "--engine dask: a scheduler address (default: a local cluster).", role="run")

    def problems(self) -> list[tuple[str, str]]:
        return [("workers", f"must be 1 or more, not {self.workers}")] if self.workers < 1 else []


@dataclass(frozen=True, kw_only=True)
class SampleOptions:
    output: str = option(help="Folder to write the sample into.", role="output", argument=True)
    seed: int = option(0, "Seed for which photos are copied and how.")
    base_url: str = option("http://127.0.0.1:8765", "URL prefix the rows point at; serve OUTPUT there with `curate serve`.")
    shards: int = option(2, "Number of input parquet shards.")
    max_stamps: int = option(60, "Tux Paint stamps to include when installed.")
    debian_root: str | None = option(None, "Folder where Debian packages were unpacked (dpkg-deb -x), relative to the "
                                           "current folder; / is always searched.")
    bad_rows: bool = option(True, "Add hostile rows (404, HTML, ftp://, file://) that download must reject.")
    copy_share: float = option(0.6, "Share of photos that get planted copies.")
    max_copies: int = option(3, "Most copies planted per photo.")
    same_caption_share: float = option(0.5, "Share of copies that keep their photo's caption.")

    def problems(self) -> list[tuple[str, str]]:
        return [("shards", f"must be 1 or more, not {self.shards}")] if self.shards < 1 else []


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    directory: str = option(help="Folder to serve.", role="input", argument=True)
    port: int = option(8765, "Port (0: any free one).")
    host: str = option("127.0.0.1", "Address to bind (keep it on loopback).")


@dataclass(frozen=True, kw_only=True)
class DownloadOptions(ShardRun):
    inputs: tuple[str, ...] = option(help="Input parquet files, folders, globs or fsspec URLs.", role="input",
                                     argument=True)
    output: str = option(help="Output folder.", role="output", argument=True)
    output_format: str = option("webdataset", "Tars with the images, or the image bytes in the parquet.",
                                choices=("webdataset", "parquet"))
    image_size: int = option(512, "Target image side in pixels.")
    resize_mode: str = option("keep_ratio", "How images are resized (img2dataset's modes).",
                              choices=("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"))
    resize_only_if_bigger: bool = option(True, "Leave smaller images at their size.",
                                         flag="--resize-only-if-bigger/--always-resize")
    encode_format: str = option("jpg", "Image format written.", choices=("jpg", "png", "webp"))
    encode_quality: int = option(95, "JPEG/WebP quality.")
    timeout: int = option(10, "Seconds per request.")
    retries: int = option(0, "Retries per failed request.")
    threads: int = option(16, "Download threads per shard.")
    chunk_rows: int = option(2000, "Rows held in memory at once per shard.")
    max_image_area: int = option(DEFAULT_MAX_IMAGE_AREA, "Pixels; larger images are rejected from their header, never decoded.")
    max_aspect_ratio: float = option(10.0, "Longest/shortest side; more is rejected.")
    min_image_size: int = option(0, "Smallest side accepted, in pixels.")
    max_bytes: int = option(50 * 1024 * 1024, "Largest response accepted.")
    allow_private_network: bool = option(False, "Allow loopback/private/link-local hosts (for a local test server; "
                                                "never for web lists).", flag="--allow-private-network")
    column_map: tuple[tuple[str, str], ...] = option((), "Rename input columns before matching.")

    def problems(self) -> list[tuple[str, str]]:
        out = super().problems()
        for name in ("timeout", "threads", "chunk_rows", "image_size", "max_bytes"):
            if getattr(self, name) < 1:
                out.append((name, f"must be 1 or more, not {getattr(self, name)}"))
        if not self.inputs:
            out.append(("inputs", "is required"))
        return out


@dataclass(frozen=True, kw_only=True)
class EmbedOptions(ShardRun):
    images: str = option(help="A `curate download` output (or its parquet files).", role="input", argument=True)
    output: str = option(help="Output folder.", role="output", argument=True)
    model: str = option("effnet-lite0", "effnet-lite0|1|2, sscd, sscd-distilled (SSCD copy detection, ONNX), onnx:PATH, "
                                        "open_clip:ARCH/PRETRAINED, torchscript:PATH, phash, dhash.")
    text_model: str | None = option(None, "Caption embeddings too: minilm, same (the open_clip model's text tower), "
                                          "open_clip:ARCH/PRETRAINED.")
    device: str = option("cpu", "auto, cpu or cuda.", choices=("auto", "cpu", "cuda"))
    batch_size: int = option(64, "Images per model call.")
    num_workers: int = option(2, "Decode threads feeding the model.")
    max_image_area: int = option(DEFAULT_MAX_IMAGE_AREA, "Pixels; larger images are rejected, never decoded.")
    runtime: str = option("auto", "effnet: ONNX Runtime on CPU (auto), torch on CUDA.", choices=("auto", "onnx", "torch"))
    pooling: str = option("avg", "effnet pooling.", choices=("avg", "gem"))
    resize: str = option("short", "sscd, onnx, torchscript: short edge to --size (SSCD's), or a --size square by crop, "
                                  "resize or pad; effnet: crop (short means crop) or pad (the whole picture, long "
                                  "edge to --size).",
                         choices=("short", "crop", "resize", "pad"))
    size: int | None = option(None, "Input size (sscd 256, sscd-distilled 224, onnx and torchscript 288; effnet its "
                                    "own: 224 for lite0).")

    def problems(self) -> list[tuple[str, str]]:
        out = super().problems()
        for name in ("batch_size", "num_workers"):
            if getattr(self, name) < 1:
                out.append((name, f"must be 1 or more, not {getattr(self, name)}"))
        return out


@dataclass(frozen=True, kw_only=True)
class DedupOptions(ShardRun):
    embeddings: str = option(help="A `curate embed` output.", role="input", argument=True)
    output: str = option(help="Output folder.", role="output", argument=True)
    threshold: float | None = option(None, "Score from which a pair is a duplicate [default: hub scores 0.05; raw "
                                           "similarity by model: effnet 0.80, sscd, sscd-distilled, onnx, torchscript "
                                           "0.60, open_clip 0.92, phash/dhash 0.84 (<= 10 of 64 bits)].")
    mode: str = option("auto", "knn through a FAISS index, or SemDeDup partitions (k-means + dense blocks); auto by size.",
                       choices=("auto", "knn", "partition"))
    linkage: str = option("mutual", "components chains transitively; mutual and leader resist chaining through templates.",
                          choices=("components", "mutual", "leader"))
    mutual_k: int = option(3, "mutual linkage: a pair links when each is in the other's nearest k.")
    k: int = option(32, "Neighbours per sample (knn mode).")
    index: str = option("auto", "FAISS index.", choices=("auto", "flat", "ivf"))
    codec: str = option("flat", "IVF storage.", choices=("flat", "sq8", "pq"))
    nlist: int = option(0, "IVF lists / k-means partitions (0: from N).")
    nprobe: int = option(8, "IVF lists searched.")
    n_assign: int = option(2, "Partition mode: nearest centroids per sample.")
    keep: str = option("first", "Which member of a cluster is kept.", choices=("first", "largest", "aesthetic", "random"))
    seed: int = option(0, "Seed (k-means, random keep).")
    action: str = option("annotate", "Mark duplicates, or move them to drops/.", choices=("annotate", "drop"))
    against: str | None = option(None, "A previous dedup output (with index/): mark copies of its corpus.", role="input")
    caption_near: float = option(0.95, "Caption embeddings closer than this count as the same caption.")
    save_index: bool = option(True, "Save the FAISS index under index/ (for --against).")
    report_thresholds: tuple[float, ...] = option(REPORT_THRESHOLDS, "Thresholds the report counts clusters at "
                                                                     "(unless given: --score hub 0,0.05,0.1,0.2; "
                                                                     "SSCD-family models 0.5,0.75,0.95: the research's replication mark, DISC21's 90% precision copy mark, its duplicate).")
    whiten: str = option("none", "Post-process the features, fit on this corpus (saved with the index for --against).",
                         choices=("none", "center", "pca"))
    score: str = option("auto", "hub: similarity minus the pair's mean similarity to its --hub-k nearest (templates "
                                "and dense regions need more to link); the threshold is then on that scale (default "
                                "0.05). raw: the similarity. auto: hub in knn mode; raw for hashes, with "
                                "--against, and in partition mode (every pair above the floor is kept there).",
                        choices=("auto", "raw", "hub"))
    hub_k: int = option(5, "--score hub: neighbours whose mean similarity is subtracted.")
    hub_beta: float = option(1.0, "--score hub: weight of that mean.")
    hub_floor: float = option(0.5, "--score hub: raw similarity of the candidates.")
    templates: bool = option(False, "Find images framed in a shared template (screenshot, meme bar, stripes) by their "
                                    "pixels and compare them by the picture they frame (needs --images).")
    template_k: int = option(8, "--templates: neighbours compared pixel for pixel.")
    verify: bool = option(False, "Check the candidate pairs below the threshold by local features (ORB matched, an "
                                 "affine fitted with RANSAC, the aligned pictures compared cell by cell, shared frames "
                                 "left out); pairs that pass link (needs --images).")
    verify_floor: float | None = option(None, "--verify: raw similarity from which pairs are checked [default: "
                                              "SSCD-family models 0.30, others 0.50; in partition mode no lower "
                                              "than the candidates the scores gather].")
    verify_k: int = option(6, "--verify: pairs checked per image, its most similar first.")
    images: str | None = option(None, "The `curate download` output: the report's image gallery, and the pixels "
                                      "--templates and --verify read.", role="input")

    def problems(self) -> list[tuple[str, str]]:
        out = super().problems()
        if self.templates and not self.images:
            out.append(("templates", "needs images (the `curate download` output)"))
        if self.verify and not self.images:
            out.append(("verify", "needs images (the `curate download` output)"))
        if self.verify and self.against:
            out.append(("verify", "cannot be used with against"))
        if self.verify_k < 1:
            out.append(("verify_k", f"must be 1 or more, not {self.verify_k}"))
        if self.against and self.whiten != "none":
            out.append(("whiten", "comes from the --against corpus; leave it at none"))
        if self.against and self.score == "hub":
            out.append(("score", "hub cannot be used with against"))
        return out


@dataclass(frozen=True, kw_only=True)
class RecaptionOptions(ShardRun):
    dedup: str = option(help="A `curate dedup` output.", role="input", argument=True, metavar="DEDUP")
    output: str = option(help="Output folder.", role="output", argument=True)
    ops: tuple[str, ...] = option(("rt", "cwr", "rna"), "Operations that fill the pool after the cluster's own "
                                  "captions (MC); paraphrase (WordNet) is opt-in: safe, but it changes few real "
                                  "captions (docs/stages/recaption.md).", choices=CAPTION_OPS)
    pool_size: int = option(5, "Captions per targeted sample (MC pool).")
    target: str = option("duplicates", "Every sample, members of duplicate clusters, or with probability = "
                                       "memorization_risk.", choices=("all", "duplicates", "risk"))
    vocab: str = option("common", "Words that rt and rc insert (common: frequent English words); every vocabulary "
                                  "has an offensive-word list removed.", choices=("common", "wordnet", "dataset", "clip"))
    n: int = option(2, "Words inserted by rt and cwr.")
    k: int = option(2, "Words paraphrase replaces at most.")
    rc_n: int = option(4, "Tokens of rc's random caption.")
    multiword: bool = option(False, "Allow multi-word WordNet synonyms.")
    seed: int = option(0, "Seed of every operation.")
    images: str | None = option(None, "A `curate download` output: the images --caption-model captions.", role="input")
    caption_model: str | None = option(None, "A transformers image-to-text model (BLIP, BLIP-2, GIT, a "
                                             "VisionEncoderDecoder), local folder or hub id: adds --model-k captions "
                                             "of each targeted image to its pool (needs --images).")
    paraphrase_model: str | None = option(None, "A transformers text2text model (T5, BART) or causal LM, local "
                                                "folder or hub id: adds --model-k paraphrases of each targeted "
                                                "caption to its pool.")
    paraphrase_prompt: str = option("Paraphrase: {caption}", "The --paraphrase-model's input; {caption} is the "
                                                            "caption.")
    model_k: int = option(2, "Entries each model adds per targeted sample (beam search: the k best).")
    model_batch_size: int = option(16, "Images or captions per model call.", role="run")
    device: str = option("auto", "Where the models run: auto, cpu or cuda.", choices=("auto", "cpu", "cuda"),
                         role="run")

    def problems(self) -> list[tuple[str, str]]:
        out = super().problems()
        if self.pool_size < 1:
            out.append(("pool_size", f"must be 1 or more, not {self.pool_size}"))
        if self.caption_model and not self.images:
            out.append(("caption_model", "needs --images (the curate download output the images are in)"))
        if self.paraphrase_model and "{caption}" not in self.paraphrase_prompt:
            out.append(("paraphrase_prompt", "must contain {caption}"))
        for name in ("model_k", "model_batch_size"):
            if getattr(self, name) < 1:
                out.append((name, f"must be 1 or more, not {getattr(self, name)}"))
        return out


@dataclass(frozen=True, kw_only=True)
class ExportOptions(ShardRun):
    images: str = option(help="A `curate download` output.", role="input", argument=True)
    output: str = option(help="Output folder.", role="output", argument=True)
    dedup: str | None = option(None, "A `curate dedup` output: drop (or annotate) duplicates, add counts.", role="input")
    captions: str | None = option(None, "A `curate recaption` output: caption to use and pools.", role="input")
    shard_size: int = option(1000, "Samples per output tar, at most.")
    min_shards: int = option(8, "Cut smaller tars when needed to make at least this many (when there are that many "
                                "samples), so every worker of a DataLoader gets shards.")
    include_duplicates: bool = option(False, "Also export samples dedup marked keep=false.", flag="--include-duplicates")

    def problems(self) -> list[tuple[str, str]]:
        out = super().problems()
        if self.shard_size < 1:
            out.append(("shard_size", f"must be 1 or more, not {self.shard_size}"))
        if self.min_shards < 1:
            out.append(("min_shards", f"must be 1 or more, not {self.min_shards}"))
        return out


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    train: str = option(help="`curate export` tars.", role="input", argument=True, metavar="TRAIN")
    output: str = option(help="Output folder (checkpoints; a rerun resumes from them).", role="output", argument=True)
    model: str = option("tiny", "tiny, tiny-pixel, or a local diffusers Stable Diffusion folder.")
    resolution: int = option(64, "Training resolution in pixels.")
    steps: int = option(100, "Optimizer steps.")
    batch_size: int = option(4, "Samples per step.")
    lr: float = option(1e-4, "Learning rate.")
    seed: int = option(0, "Seed.")
    mitigations: tuple[str, ...] = option((), "Training-time mitigations, each with probability --p.",
                                          choices=TRAIN_MITIGATIONS)
    p: float = option(0.1, "Probability of each mitigation per sample.")
    gn_lambda: float = option(0.1, "Gaussian noise scale on text embeddings (gn).")
    mc: bool = option(True, "Sample each caption from the pool (MC).")
    dup_share: float = option(0.0, "Duplication simulation: share of images weighted up.")
    dup_weight: float = option(5.0, "Duplication simulation: their sampling weight.")
    dup_mode: str = option("both", "both: duplicated images always carry the same caption; image: a random pool caption.",
                           choices=("both", "image"))
    caption_dropout: float = option(0.0, "Share of captions replaced by the empty one (trains the unconditional model "
                                         "for guidance).")
    checkpoint_every: int = option(50, "Steps between checkpoints.")
    device: str = option("cpu", "auto, cpu or cuda (AMP on CUDA).", choices=("auto", "cpu", "cuda"))
    progress: bool = option(True, "Progress bar (on a terminal).", role="run")

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for name in ("steps", "batch_size", "resolution", "checkpoint_every"):
            if getattr(self, name) < 1:
                out.append((name, f"must be 1 or more, not {getattr(self, name)}"))
        return out


@dataclass(frozen=True, kw_only=True)
class AuditOptions:
    output: str = option(help="Output folder.", role="output", argument=True)
    model: str | None = option(None, "A diffusers pipeline folder (curate train's OUTPUT/final).", role="input")
    train: str | None = option(None, "The `curate export` tars the model was trained on.", role="input")
    generated: str | None = option(None, "Instead: a folder of generated images to audit ...", role="input")
    corpus: str | None = option(None, "... against this `curate embed` output.", role="input")
    prompts: int = option(16, "Training captions to generate from.")
    steps: int = option(10, "DDIM steps.")
    resolution: int = option(64, "Generation resolution in pixels.")
    embed_model: str = option("auto", "Embedding backend for both sides; auto: sscd where installed (the research's "
                                      "units), else effnet-lite0.")
    threshold: float = option(0.5, "Top-1 similarity above which a generation counts as a replication.")
    mitigation: str = option("none", "Inference-time mitigation on the prompts.",
                             choices=("none", "gni", "rt", "cwr", "rna"))
    gni_lambda: float = option(0.1, "gni: noise scale on the prompt embeddings.")
    insertions: int = option(2, "rt/cwr/rna: words inserted into each prompt.")
    match_resolution: bool = option(False, "Compare with the training images at the generation resolution (what the "
                                           "model saw).", flag="--match-resolution/--full-resolution")
    guidance_scale: float = option(7.5, "Classifier-free guidance (use 1 for a model trained without --caption-dropout).")
    seed: int = option(0, "Seed.")
    device: str = option("cpu", "auto, cpu or cuda.", choices=("auto", "cpu", "cuda"))

    def problems(self) -> list[tuple[str, str]]:
        if self.generated or self.corpus:
            if not (self.generated and self.corpus):
                return [("generated" if not self.generated else "corpus", "generated and corpus go together")]
            if self.model or self.train:
                return [("model" if self.model else "train", "give model and train, or generated and corpus, not both")]
            return []
        if not (self.model and self.train):
            return [("train" if self.model else "model", "give model and train (or generated and corpus)")]
        if self.embed_model in ("phash", "dhash"):  # Hamming distances are not on the similarity scale reported
            return [("embed_model", f"{self.embed_model} is a hash, not an embedding; use auto, sscd, "
                                    "sscd-distilled or effnet-lite0")]
        return []


STAGES: dict[str, type] = {
    "sample": SampleOptions, "serve": ServeOptions, "download": DownloadOptions, "embed": EmbedOptions,
    "dedup": DedupOptions, "recaption": RecaptionOptions, "export": ExportOptions, "train": TrainOptions,
    "audit": AuditOptions,
}
