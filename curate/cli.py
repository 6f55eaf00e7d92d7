"""The `curate` command line: one small function per command that parses options and calls a stage."""

from __future__ import annotations

import json
import os
import sys

import click

from curate import __version__
from curate.errors import CurateError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # img2dataset imports albumentations, which phones home


def _echo_summary(title: str, summary: dict) -> None:
    click.echo(f"{title}: {summary['rows_out']}/{summary['rows_in']} rows ok "
               f"({100 * summary['success_rate']:.1f}%), {summary['rows_rejected']} rejected, {summary['shards']} shard(s)")
    for reason, count in summary.get("reasons", {}).items():
        click.echo(f"  {reason:<20} {count}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="curate")
def cli() -> None:
    """Prepare text-to-image training data so that models trained on it copy less.

    Stages read and write shard folders described in schemas/:
    sample -> download -> embed -> dedup -> recaption -> export -> train -> audit.
    """


@cli.command()
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Seed for which photos are copied and how.")
@click.option("--base-url", default="http://127.0.0.1:8765", show_default=True,
              help="URL prefix the rows point at; serve OUTPUT there with `curate serve`.")
@click.option("--shards", default=2, show_default=True, help="Number of input parquet shards.")
@click.option("--max-stamps", default=60, show_default=True, help="Tux Paint stamps to include when installed.")
@click.option("--debian-root", type=click.Path(file_okay=False), default=None,
              help="Folder where Debian packages were unpacked (dpkg-deb -x); / is always searched.")
@click.option("--bad-rows/--no-bad-rows", default=True, show_default=True,
              help="Add hostile rows (404, HTML, ftp://, file://) that download must reject.")
def sample(output: str, seed: int, base_url: str, shards: int, max_stamps: int, debian_root: str | None,
           bad_rows: bool) -> None:
    """Build a small real dataset with planted near-duplicates and its ground truth."""
    from curate.sample.build import build_sample

    summary = build_sample(output, seed=seed, base_url=base_url, shards=shards, max_stamps=max_stamps,
                           debian_root=debian_root, bad_rows=bad_rows)
    click.echo(f"sample: {summary['rows']} rows ({summary['originals']} photos, {summary['copies']} copies, "
               f"{summary['hostile_rows']} hostile rows) in {summary['shards']} shard(s) under {output}")
    for line in summary["missing"]:
        click.echo(f"  note: {line}")


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--port", default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (keep it on loopback).")
def serve(directory: str, port: int, host: str) -> None:
    """Serve DIRECTORY over HTTP (for the sample's URLs) until interrupted."""
    from curate.sample.server import make_server

    try:
        server = make_server(directory, host, port)
    except OSError as err:
        raise CurateError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    click.echo(f"serving {directory} on http://{host}:{server.server_address[1]}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _split_exec(opts: dict) -> tuple[dict, dict]:
    """(stage options, executor keywords) from a command's options."""
    options = dict(opts)
    return options, {"engine": options.pop("engine"), "scheduler": options.pop("scheduler")}


def _common(fn):  # noqa: ANN001, ANN202 (decorator)
    fn = click.option("--scheduler", default=None, help="--engine dask: a scheduler address (default: a local cluster).")(fn)
    fn = click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                      help="Run shards here, or as Dask tasks (pip install 'curate[dask]').")(fn)
    fn = click.option("--workers", default=1, show_default=True, help="Shards processed in parallel.")(fn)
    fn = click.option("--overwrite", is_flag=True, help="Redo shards that are already done.")(fn)
    fn = click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")(fn)
    return fn


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.argument("output", type=click.Path(file_okay=False))
@_common
@click.option("--output-format", type=click.Choice(["webdataset", "parquet"]), default="webdataset", show_default=True)
@click.option("--image-size", default=512, show_default=True)
@click.option("--resize-mode", type=click.Choice(["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"]),
              default="keep_ratio", show_default=True)
@click.option("--resize-only-if-bigger/--always-resize", default=True, show_default=True)
@click.option("--encode-quality", default=95, show_default=True)
@click.option("--timeout", default=10, show_default=True, help="Seconds per request.")
@click.option("--retries", default=0, show_default=True)
@click.option("--threads", default=16, show_default=True, help="Download threads per shard.")
@click.option("--chunk-rows", default=2000, show_default=True, help="Rows held in memory at once per shard.")
@click.option("--max-image-area", default=89_478_485, show_default=True,
              help="Pixels; larger images are rejected from their header, never decoded.")
@click.option("--max-aspect-ratio", default=10.0, show_default=True)
@click.option("--max-bytes", default=50 * 1024 * 1024, show_default=True, help="Largest response accepted.")
@click.option("--allow-private-network", is_flag=True,
              help="Allow loopback/private/link-local hosts (for a local test server; never for web lists).")
@click.option("--column-map", multiple=True, metavar="OLD=NEW", help="Rename input columns before matching.")
def download(inputs: tuple[str, ...], output: str, workers: int, overwrite: bool, progress: bool, **opts: object) -> None:
    """Download the images of INPUTS (parquet files, folders, globs or fsspec URLs) into OUTPUT.

    Writes images/{i:05d}.tar (+ .parquet), rejects/{i:05d}.parquet with a reason for every row that did not
    download, _stats/ and summary.json. Rerunning skips finished shards.
    """
    from curate.io.fs import list_shards
    from curate.schemas import parse_column_map
    from curate.stages import download as stage

    options, ex = _split_exec(opts)
    options["column_map"] = parse_column_map(options.pop("column_map"))
    shards = list_shards(list(inputs))
    summary = stage.run(shards, output, options, workers=workers, overwrite=overwrite, progress=progress, **ex)
    _echo_summary("download", summary)


@cli.command()
@click.argument("images")
@click.argument("output", type=click.Path(file_okay=False))
@_common
@click.option("--model", default="effnet-lite0", show_default=True,
              help="effnet-lite0|1|2, open_clip:ARCH/PRETRAINED, torchscript:PATH, phash, dhash.")
@click.option("--text-model", default=None,
              help="Caption embeddings too: minilm, same (the open_clip model's text tower), open_clip:ARCH/PRETRAINED.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--num-workers", default=2, show_default=True, help="Decode threads feeding the model.")
@click.option("--runtime", type=click.Choice(["auto", "onnx", "torch"]), default="auto", show_default=True,
              help="effnet: ONNX Runtime on CPU (auto), torch on CUDA.")
@click.option("--pooling", type=click.Choice(["avg", "gem"]), default="avg", show_default=True, help="effnet pooling.")
@click.option("--resize", type=click.Choice(["short", "crop", "resize", "pad"]), default="short", show_default=True,
              help="torchscript: short edge to --size (SSCD), or a --size square by crop or resize; effnet: crop "
                   "(short means crop) or pad (the whole picture, long edge to --size).")
@click.option("--size", default=None, type=int, help="Input size (torchscript 288, effnet its own: 224 for lite0).")
@click.option("--max-image-area", default=89_478_485, show_default=True)
def embed(images: str, output: str, workers: int, overwrite: bool, progress: bool, **opts: object) -> None:
    """Embed the image shards of IMAGES (a `curate download` output) into OUTPUT.

    Writes img_emb/img_emb_{i}.npy, text_emb/text_emb_{i}.npy, metadata/metadata_{i}.parquet (clip-retrieval's
    layout, row-aligned), rejects/{i}.parquet and manifest.json.
    """
    from curate.stages import embed as stage

    options, ex = _split_exec(opts)
    summary = stage.run(images, output, options, workers=workers, overwrite=overwrite, progress=progress, **ex)
    _echo_summary("embed", summary)


@cli.command()
@click.argument("embeddings")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--threshold", type=float, default=None,
              help="Cosine similarity for duplicates [default by model: effnet 0.80, torchscript 0.75, "
                   "open_clip 0.92, phash/dhash 0.84 (<= 10 of 64 bits)].")
@click.option("--mode", type=click.Choice(["auto", "knn", "partition"]), default="auto", show_default=True,
              help="knn through a FAISS index, or SemDeDup partitions (k-means + dense blocks); auto by size.")
@click.option("--linkage", type=click.Choice(["components", "mutual", "leader"]), default="mutual", show_default=True,
              help="components chains transitively; mutual and leader resist chaining through templates.")
@click.option("--mutual-k", default=3, show_default=True)
@click.option("--k", "k", default=32, show_default=True, help="Neighbours per sample (knn mode).")
@click.option("--index", type=click.Choice(["auto", "flat", "ivf"]), default="auto", show_default=True)
@click.option("--codec", type=click.Choice(["flat", "sq8", "pq"]), default="flat", show_default=True)
@click.option("--nlist", default=0, show_default=True, help="IVF lists / k-means partitions (0: from N).")
@click.option("--nprobe", default=8, show_default=True)
@click.option("--n-assign", default=2, show_default=True, help="Partition mode: nearest centroids per sample.")
@click.option("--keep", type=click.Choice(["first", "largest", "aesthetic", "random"]), default="first",
              show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--action", type=click.Choice(["annotate", "drop"]), default="annotate", show_default=True)
@click.option("--against", default=None, help="A previous dedup output (with index/): mark copies of its corpus.")
@click.option("--save-index/--no-save-index", default=True, show_default=True)
@click.option("--whiten", type=click.Choice(["none", "center", "pca"]), default="none", show_default=True,
              help="Post-process the features, fit on this corpus (saved with the index for --against).")
@click.option("--score", type=click.Choice(["raw", "hub"]), default="raw", show_default=True,
              help="hub: similarity minus the pair's mean similarity to its --hub-k nearest (templates and dense "
                   "regions need more to link); the threshold is then on that scale (default 0.05).")
@click.option("--hub-k", default=5, show_default=True)
@click.option("--hub-beta", default=1.0, show_default=True)
@click.option("--hub-floor", default=0.5, show_default=True, help="--score hub: raw similarity of the candidates.")
@click.option("--templates/--no-templates", default=False, show_default=True,
              help="Find images framed in a shared template (screenshot, meme bar, stripes) by their pixels and "
                   "compare them by the picture they frame (needs --images; embeds each such picture again).")
@click.option("--template-k", default=8, show_default=True, help="--templates: neighbours compared pixel for pixel.")
@click.option("--images", default=None, help="The `curate download` output, for the report's image gallery.")
@click.option("--overwrite", is_flag=True, help="Recompute even when a report with these options exists.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="dask: one Dask task per k-means partition (SemDeDup plan; float embeddings).")
@click.option("--scheduler", default=None, help="--engine dask: a scheduler address (default: a local cluster).")
@click.option("--workers", default=1, show_default=True, help="--engine dask without --scheduler: local workers.")
def dedup(embeddings: str, output: str, images: str | None, overwrite: bool, progress: bool, engine: str,
          scheduler: str | None, workers: int, **opts: object) -> None:
    """Find near-duplicate clusters in EMBEDDINGS (a `curate embed` output), count them, write OUTPUT.

    Writes samples/{i}.parquet (cluster_id, dup_count, keep, memorization_risk, ...), drops/ with --action drop,
    clusters.parquet, index/, report.json and report.html.
    """
    from curate.stages import dedup as stage

    report = stage.run(embeddings, output, dict(opts), overwrite=overwrite, progress=progress, images=images,
                       engine=engine, scheduler=scheduler, workers=workers)
    click.echo(f"dedup: {report['samples']} samples, {report['duplicate_clusters']} duplicate clusters, "
               f"{report['duplicates_marked']} marked ({100 * report['share_removed']:.1f}%), "
               f"{report['same_image_same_caption']['clusters']} same-image-same-caption clusters; "
               f"report: {output}/report.html")


@cli.command()
@click.argument("dedup_dir", metavar="DEDUP")
@click.argument("output", type=click.Path(file_okay=False))
@_common
@click.option("--ops", default="paraphrase,rt,cwr,rna", show_default=True,
              help="Comma-separated operations for the pool: paraphrase, rt, cwr, rna, rc.")
@click.option("--pool-size", default=5, show_default=True, help="Captions per targeted sample (MC pool).")
@click.option("--target", type=click.Choice(["all", "duplicates", "risk"]), default="duplicates", show_default=True,
              help="Every sample, members of duplicate clusters, or with probability = memorization_risk.")
@click.option("--vocab", type=click.Choice(["wordnet", "dataset", "clip"]), default="wordnet", show_default=True,
              help="Words that rt and rc insert.")
@click.option("--n", "n", default=2, show_default=True, help="Words inserted by rt and cwr.")
@click.option("--k", "k", default=2, show_default=True, help="Words paraphrase replaces at most.")
@click.option("--rc-n", default=4, show_default=True, help="Tokens of rc's random caption.")
@click.option("--multiword", is_flag=True, help="Allow multi-word WordNet synonyms.")
@click.option("--seed", default=0, show_default=True)
def recaption(dedup_dir: str, output: str, workers: int, overwrite: bool, progress: bool, ops: str,
              **opts: object) -> None:
    """Diversify the captions of DEDUP's samples (a `curate dedup` output) into OUTPUT/captions/{i}.parquet."""
    from curate.stages import recaption as stage

    options, ex = _split_exec(dict(opts, ops=[o.strip() for o in ops.split(",") if o.strip()]))
    report = stage.run(dedup_dir, output, options, workers=workers, overwrite=overwrite, progress=progress, **ex)
    same = report["same_image_same_caption_clusters"]
    click.echo(f"recaption: {report['changed']}/{report['samples']} captions changed, {report['targeted']} targeted; "
               f"same-image-same-caption clusters {same['before']} -> {same['after']}; report: {output}/report.html")


@cli.command(name="export")
@click.argument("images")
@click.argument("output", type=click.Path(file_okay=False))
@_common
@click.option("--dedup", default=None, help="A `curate dedup` output: drop (or annotate) duplicates, add counts.")
@click.option("--captions", default=None, help="A `curate recaption` output: caption to use and pools.")
@click.option("--shard-size", default=1000, show_default=True, help="Samples per output tar.")
@click.option("--include-duplicates", is_flag=True, help="Also export samples dedup marked keep=false.")
def export_cmd(images: str, output: str, workers: int, overwrite: bool, progress: bool, **opts: object) -> None:
    """Write training-ready webdataset tars of IMAGES (a `curate download` output) into OUTPUT."""
    from curate.stages import export as stage

    options, ex = _split_exec(opts)
    summary = stage.run(images, output, options, workers=workers, overwrite=overwrite, progress=progress, **ex)
    click.echo(f"export: {summary['rows_out']} samples in {summary['shards']} tar(s) under {output}")


@cli.command()
@click.argument("train_dir", metavar="TRAIN")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--model", default="tiny", show_default=True, help="tiny, or a local diffusers Stable Diffusion folder.")
@click.option("--resolution", default=64, show_default=True)
@click.option("--steps", default=100, show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--lr", default=1e-4, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--mitigations", default="", help="Comma-separated: rc, rt, cwr, rna, gn (each with probability --p).")
@click.option("--p", "p", default=0.1, show_default=True, help="Probability of each mitigation per sample.")
@click.option("--gn-lambda", default=0.1, show_default=True, help="Gaussian noise scale on text embeddings (gn).")
@click.option("--mc/--no-mc", default=True, show_default=True, help="Sample each caption from the pool (MC).")
@click.option("--dup-share", default=0.0, show_default=True, help="Duplication simulation: share of images weighted up.")
@click.option("--dup-weight", default=5.0, show_default=True)
@click.option("--dup-mode", type=click.Choice(["both", "image"]), default="both", show_default=True,
              help="both: duplicated images always carry the same caption; image: a random pool caption.")
@click.option("--caption-dropout", default=0.0, show_default=True,
              help="Share of captions replaced by the empty one (trains the unconditional model for guidance).")
@click.option("--checkpoint-every", default=50, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda (AMP on CUDA).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def train(train_dir: str, output: str, mitigations: str, progress: bool, **opts: object) -> None:
    """Fine-tune a text-to-image diffusion model on TRAIN (`curate export` tars); resumes from OUTPUT's checkpoints."""
    from curate.stages import train as stage

    options = dict(opts, mitigations=[m for m in mitigations.split(",") if m.strip()])
    summary = stage.run(train_dir, output, options, progress=progress)
    click.echo(f"train: {summary['steps']} steps (resumed from {summary['resumed_from']}), final loss "
               f"{summary['final_loss']:.4f}; pipeline in {output}/final")


@cli.command()
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--model", "model_dir", default=None, help="A diffusers pipeline folder (curate train's OUTPUT/final).")
@click.option("--train", "train_dir", default=None, help="The `curate export` tars the model was trained on.")
@click.option("--generated", default=None, help="Instead: a folder of generated images to audit ...")
@click.option("--corpus", default=None, help="... against this `curate embed` output.")
@click.option("--prompts", default=16, show_default=True, help="Training captions to generate from.")
@click.option("--steps", default=10, show_default=True, help="DDIM steps.")
@click.option("--resolution", default=64, show_default=True)
@click.option("--embed-model", default="effnet-lite0", show_default=True, help="Backend for both sides.")
@click.option("--threshold", default=0.5, show_default=True)
@click.option("--mitigation", type=click.Choice(["none", "gni", "rt", "cwr", "rna"]), default="none",
              show_default=True, help="Inference-time mitigation on the prompts.")
@click.option("--gni-lambda", default=0.1, show_default=True)
@click.option("--insertions", default=2, show_default=True)
@click.option("--match-resolution/--full-resolution", default=False, show_default=True,
              help="Compare with the training images at the generation resolution (what the model saw).")
@click.option("--guidance-scale", default=7.5, show_default=True,
              help="Classifier-free guidance (use 1 for a model trained without --caption-dropout).")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def audit(output: str, model_dir: str | None, train_dir: str | None, generated: str | None, corpus: str | None,
          **opts: object) -> None:
    """Measure replication: top-1 similarity of generations to the training set, and the research's metrics."""
    from curate.stages import audit as stage

    if generated or corpus:
        if not (generated and corpus):
            raise CurateError("--generated and --corpus go together")
        report = stage.run_folder(generated, corpus, output, dict(opts))
    else:
        if not (model_dir and train_dir):
            raise CurateError("give --model and --train (or --generated and --corpus)")
        report = stage.run(model_dir, train_dir, output, dict(opts))
    g = report["metrics"]["generations"]
    b = report["metrics"]["train_vs_train_baseline"]
    click.echo(f"audit: {g['n']} generations, p95 top-1 similarity {g['p95']} (baseline {b['p95']}), "
               f"{100 * g['share_above_threshold']:.1f}% above {report['threshold']}; report: {output}/report.html")


@cli.command(name="run")
@click.argument("pipeline", type=click.Path(dir_okay=False))
def run_cmd(pipeline: str) -> None:
    """Run the stages of a pipeline YAML (see pipelines/) in order; a rerun resumes."""
    from curate.pipeline import run as run_pipeline

    run_pipeline(pipeline, echo=click.echo)


@cli.command()
@click.argument("name", required=False)
def schema(name: str | None) -> None:
    """List the documented schemas, or print one."""
    from curate import schemas

    if name is None:
        for n in schemas.available():
            click.echo(f"{n:<16} {schemas.load(n).description.split('.')[0].strip()}")
        return
    if name not in schemas.available():
        raise CurateError(f"no schema named {name!r}; try one of: {', '.join(schemas.available())}")
    s = schemas.load(name)
    click.echo(json.dumps({"name": s.name, "description": s.description,
                           "columns": [c.__dict__ for c in s.columns]}, indent=2))


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted; finished shards are kept, rerun to resume", err=True)
        sys.exit(130)
    except OSError as err:  # a full disk, a read-only or vanished folder, a permission: one line, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        what = err.strerror or str(err).splitlines()[0]
        click.echo(f"Error: {where}{what} (finished shards are kept; fix this and rerun to resume)", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
