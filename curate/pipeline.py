"""`curate run PIPELINE.yaml`: the stages of a whole run, in order, each resumable.

A pipeline file names an output `root` and a list of stages; each stage is `{name: {options}}` where paths are
relative to the root. Every stage skips the work it already finished (the executor's markers, dedup's report,
train's checkpoints), so rerunning a pipeline after a kill resumes it. A `serve` step starts the sample's local
HTTP server for the stages after it (demo data only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import yaml

from curate.errors import CurateError


def _path(root: str, value: str | None) -> str | None:
    if value is None:
        return None
    return value if os.path.isabs(value) or "://" in value else os.path.join(root, value)


def _stage_sample(root: str, o: dict[str, Any]) -> dict[str, Any]:
    from curate.sample.build import build_sample

    return build_sample(_path(root, o.pop("output")), **o)


def _stage_download(root: str, o: dict[str, Any]) -> dict[str, Any]:
    from curate.io.fs import list_shards
    from curate.stages import download

    inputs = list_shards(_path(root, o.pop("inputs")))
    output = _path(root, o.pop("output"))
    return download.run(inputs, output, o, **_exec(o))


def _exec(o: dict[str, Any]) -> dict[str, Any]:
    return {k: o.pop(k) for k in ("workers", "overwrite", "engine", "scheduler") if k in o} | {"progress": False}


def _stage_embed(root: str, o: dict[str, Any]) -> dict[str, Any]:
    from curate.stages import embed

    return embed.run(_path(root, o.pop("images")), _path(root, o.pop("output")), o, **_exec(o))


def _stage_dedup(root: str, o: dict[str, Any]) -> dict[str, Any]:
    from curate.stages import dedup

    images = _path(root, o.pop("images", None))
    ex = _exec(o)
    return dedup.run(_path(root, o.pop("embeddings")), _path(root, o.pop("output")), o, images=images, **ex)


def _stage_recaption(root: str, o: dict[str, Any]) -> dict[str, Any]:
    from curate.stages import recaption

    return recaption.run(_path(root, o.pop("dedup")), _path(root, o.pop("output")), o, **_exec(o))


def _stage_export(root: str, o: dict[str, Any]) -> dict[str, Any]:
    from curate.stages import export

    for key in ("dedup", "captions"):
        if key in o:
            o[key] = _path(root, o[key])
    return export.run(_path(root, o.pop("images")), _path(root, o.pop("output")), o, **_exec(o))


def _stage_train(root: str, o: dict[str, Any]) -> dict[str, Any]:
    from curate.stages import train

    return train.run(_path(root, o.pop("train")), _path(root, o.pop("output")), o, progress=False)


def _stage_audit(root: str, o: dict[str, Any]) -> dict[str, Any]:
    from curate.stages import audit

    return audit.run(_path(root, o.pop("model")), _path(root, o.pop("train")), _path(root, o.pop("output")), o)


STAGES: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
    "sample": _stage_sample, "download": _stage_download, "embed": _stage_embed, "dedup": _stage_dedup,
    "recaption": _stage_recaption, "export": _stage_export, "train": _stage_train, "audit": _stage_audit,
}


def load(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise CurateError(f"{path}: no such pipeline file") from None
    except yaml.YAMLError as err:
        raise CurateError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict) or "stages" not in doc or not isinstance(doc["stages"], list):
        raise CurateError(f"{path}: a pipeline needs `root` and a `stages` list")
    for i, step in enumerate(doc["stages"]):
        if not isinstance(step, dict) or len(step) != 1:
            raise CurateError(f"{path}: stage {i + 1} must be one `name: {{options}}` mapping")
        name = next(iter(step))
        if name not in STAGES and name != "serve":
            raise CurateError(f"{path}: stage {i + 1}: unknown stage {name!r} (one of serve, {', '.join(STAGES)})")
    return doc


def run(path: str, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run a pipeline file; returns each stage's summary and seconds. Writes `run.json` and the run report
    `report.html` under the root, also when a stage fails (with the error)."""
    from curate.report import run_report

    doc = load(path)
    root = str(doc.get("root", "."))
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as err:
        raise CurateError(f"{root}: cannot create the run's root ({err.strerror or err})") from None
    results: dict[str, Any] = {}
    server = None
    started = time.time()
    try:
        for step in doc["stages"]:
            name, options = next(iter(step.items()))
            options = dict(options or {})
            start = time.time()
            if name == "serve":
                from curate.sample.server import make_server, serve_in_thread

                server = make_server(_path(root, options.get("directory", ".")), "127.0.0.1", int(options.get("port", 0)))
                serve_in_thread(server)
                echo(f"run: serving {options.get('directory')} on 127.0.0.1:{server.server_address[1]}")
                continue
            summary = STAGES[name](root, options)
            results[name] = {"seconds": round(time.time() - start, 2), "summary": summary}
            echo(f"run: {name} done in {time.time() - start:.1f} s")
    except CurateError as err:
        _try_report(run_report.write, root, doc, results, started, f"{name}: {err}")
        raise
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    run_report.write(root, doc, results, started)
    echo(f"run: report at {os.path.join(root, 'report.html')}")
    return results


def _try_report(write: Callable[..., Any], *args: Any) -> None:  # noqa: ANN401
    """The run report of a failed run is a courtesy: a disk that refused the stage may refuse it too."""
    try:
        write(*args)
    except OSError:
        pass
