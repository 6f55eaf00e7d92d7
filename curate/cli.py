"""The `curate` command line: one small function per command that parses options and calls a stage."""

from __future__ import annotations

import json
import os
import sys

import click

from curate import __version__, config, optspec
from curate.errors import CurateError


def _echo_summary(title: str, summary: dict) -> None:
    click.echo(f"{title}: {summary['rows_out']}/{summary['rows_in']} rows ok "
               f"({100 * summary['success_rate']:.1f}%), {summary['rows_rejected']} rejected, {summary['shards']} shard(s)")
    for reason, count in summary.get("reasons", {}).items():
        click.echo(f"  {reason:<20} {count}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="curate")
@click.option("-v", "--verbose", count=True, help="More messages: -v adds the libraries' warnings and loading bars, "
              "-vv debug lines.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors (and each command's result).")
def cli(verbose: int, quiet: bool) -> None:
    """Prepare text-to-image training data so that models trained on it copy less.

    Stages read and write shard folders described in schemas/:
    sample -> download -> embed -> dedup -> recaption -> export -> train -> audit.
    """
    from curate import log

    log.setup(-1 if quiet else verbose)


def _options(cls: type, params: dict) -> object:
    return optspec.from_cli(cls, params)


@cli.command()
@optspec.click_options(config.SampleOptions)
def sample(**params: object) -> None:
    """Build a small real dataset with planted near-duplicates and its ground truth."""
    from curate.sample.build import build_sample

    opts = _options(config.SampleOptions, params)
    summary = build_sample(opts)
    click.echo(f"sample: {summary['rows']} rows ({summary['originals']} photos, {summary['copies']} copies, "
               f"{summary['hostile_rows']} hostile rows) in {summary['shards']} shard(s) under {opts.output}")
    for line in summary["missing"]:
        click.echo(f"  note: {line}")


@cli.command()
@optspec.click_options(config.ServeOptions)
def serve(**params: object) -> None:
    """Serve DIRECTORY over HTTP (for the sample's URLs) until interrupted."""
    from curate.sample.server import make_server

    opts = _options(config.ServeOptions, params)
    if not os.path.isdir(opts.directory):
        raise CurateError(f"{opts.directory}: no such folder")
    try:
        server = make_server(opts.directory, opts.host, opts.port)
    except OSError as err:
        raise CurateError(f"cannot listen on {opts.host}:{opts.port}: {err.strerror}") from None
    click.echo(f"serving {opts.directory} on http://{opts.host}:{server.server_address[1]}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command()
@optspec.click_options(config.DownloadOptions)
def download(**params: object) -> None:
    """Download the images of INPUTS (parquet files, folders, globs or fsspec URLs) into OUTPUT.

    Writes img2dataset's layout: {i:05d}.tar, {i:05d}.parquet (every input row, with status and error_message)
    and {i:05d}_stats.json; plus rejects/{i:05d}.parquet with a reason for every row that did not download,
    _stats/ and summary.json. Rerunning skips finished shards.
    """
    from curate.stages import download as stage

    _echo_summary("download", stage.run(_options(config.DownloadOptions, params)))


@cli.command()
@optspec.click_options(config.EmbedOptions)
def embed(**params: object) -> None:
    """Embed the image shards of IMAGES (a `curate download` output) into OUTPUT.

    Writes img_emb/img_emb_{i}.npy, text_emb/text_emb_{i}.npy, metadata/metadata_{i}.parquet (clip-retrieval's
    layout, row-aligned), rejects/{i}.parquet and manifest.json.
    """
    from curate.stages import embed as stage

    _echo_summary("embed", stage.run(_options(config.EmbedOptions, params)))


@cli.command()
@optspec.click_options(config.DedupOptions)
def dedup(**params: object) -> None:
    """Find near-duplicate clusters in EMBEDDINGS (a `curate embed` output), count them, write OUTPUT.

    Writes samples/{i}.parquet (cluster_id, dup_count, keep, memorization_risk, ...), drops/ with --action drop,
    clusters.parquet, index/, report.json and report.html.
    """
    from curate.stages import dedup as stage

    opts = _options(config.DedupOptions, params)
    report = stage.run(opts)
    click.echo(f"dedup: {report['samples']} samples, {report['duplicate_clusters']} duplicate clusters, "
               f"{report['duplicates_marked']} marked ({100 * report['share_removed']:.1f}%), "
               f"{report['same_image_same_caption']['clusters']} same-image-same-caption clusters; "
               f"report: {opts.output}/report.html")


@cli.command()
@optspec.click_options(config.RecaptionOptions)
def recaption(**params: object) -> None:
    """Diversify the captions of DEDUP's samples (a `curate dedup` output) into OUTPUT/captions/{i}.parquet."""
    from curate.stages import recaption as stage

    opts = _options(config.RecaptionOptions, params)
    report = stage.run(opts)
    same = report["same_image_same_caption_clusters"]
    click.echo(f"recaption: {report['changed']}/{report['samples']} captions changed, {report['targeted']} targeted; "
               f"same-image-same-caption clusters {same['before']} -> {same['after']}; report: {opts.output}/report.html")


@cli.command(name="export")
@optspec.click_options(config.ExportOptions)
def export_cmd(**params: object) -> None:
    """Write training-ready webdataset tars of IMAGES (a `curate download` output) into OUTPUT."""
    from curate.stages import export as stage

    opts = _options(config.ExportOptions, params)
    summary = stage.run(opts)
    click.echo(f"export: {summary['rows_out']} samples in {summary['shards']} tar(s) under {opts.output}")


@cli.command()
@optspec.click_options(config.TrainOptions)
def train(**params: object) -> None:
    """Fine-tune a text-to-image diffusion model on TRAIN (`curate export` tars); resumes from OUTPUT's checkpoints."""
    from curate.stages import train as stage

    opts = _options(config.TrainOptions, params)
    summary = stage.run(opts)
    click.echo(f"train: {summary['steps']} steps (resumed from {summary['resumed_from']}), final loss "
               f"{summary['final_loss']:.4f}; pipeline in {opts.output}/final")


@cli.command()
@optspec.click_options(config.AuditOptions)
def audit(**params: object) -> None:
    """Measure replication: top-1 similarity of generations to the training set, and the research's metrics.

    Give --model and --train, or --generated and --corpus.
    """
    from curate.stages import audit as stage

    opts = _options(config.AuditOptions, params)
    report = stage.run(opts)
    g = report["metrics"]["generations"]
    b = report["metrics"]["train_vs_train_baseline"]
    click.echo(f"audit: {g['n']} generations, p95 top-1 similarity {g['p95']} (baseline {b['p95']}), "
               f"{100 * g['share_above_threshold']:.1f}% above {report['threshold']}; report: {opts.output}/report.html")


@cli.command(name="run")
@click.argument("pipeline")
@click.option("--check", "check_only", is_flag=True, help="Only check the file (every stage's options and paths).")
def run_cmd(pipeline: str, check_only: bool) -> None:
    """Run the stages of a pipeline YAML (see pipelines/) in order; a rerun resumes.

    The whole file is checked before the first stage runs; each problem is one line naming the stage and key.
    """
    from curate import pipeline as pipelines

    if check_only:
        pipe = pipelines.check(pipeline)
        click.echo(f"{pipeline}: ok, {len(pipe.steps)} stage(s): {', '.join(s.name for s in pipe.steps)}")
        return
    pipelines.run(pipeline)


@cli.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="pipeline: print the JSON Schema of pipeline files.")
def schema(name: str | None, as_json: bool) -> None:
    """List the documented schemas, or print one (`curate schema pipeline --json`: the pipeline file's schema)."""
    from curate import schemas

    if name == "pipeline":
        from curate import pipeline as pipelines

        doc = pipelines.json_schema()
        click.echo(json.dumps(doc, indent=2) if as_json else schemas.pipeline_yaml(doc), nl=as_json)
        return
    if name is None:
        for n in schemas.available():
            click.echo(f"{n:<16} {schemas.describe(n)}")
        click.echo(f"{'pipeline':<16} The JSON Schema of `curate run` files (curate schema pipeline --json)")
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
