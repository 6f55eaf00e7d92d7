"""`curate run PIPELINE.yaml`: the stages of a whole run, in order, each resumable.

A pipeline file names an output `root` and a list of stages; each stage is `{name: {options}}` with the
options of `curate.config` (the same names and defaults as the command line), paths relative to the root.
The whole file is checked before the first stage runs (`check`): unknown keys, wrong types, missing required
keys, bad choices and input paths that neither exist nor are made by an earlier stage are each one line naming
the file, the stage and the key. Every stage skips the work it already finished (the executor's markers,
dedup's report, train's checkpoints), so rerunning a pipeline after a kill resumes it. A `serve` step starts
the sample's local HTTP server for the stages after it (demo data only).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from curate import config, optspec
from curate.errors import CurateError

TOP_LEVEL = {"name": "the run's name (shown in its report)", "root": "the folder every path is relative to",
             "stages": "the stages, in order"}


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, as people count
    name: str
    options: Any  # the stage's options object (curate.config)


@dataclass(frozen=True)
class Pipeline:
    path: str
    name: str
    root: str
    steps: tuple[Step, ...]
    doc: dict[str, Any]


def _run_sample(o: config.SampleOptions) -> dict[str, Any]:
    from curate.sample.build import build_sample

    return build_sample(o)


def _stage(module: str) -> Callable[[Any], dict[str, Any]]:
    def run(o: Any) -> dict[str, Any]:  # noqa: ANN401
        import importlib

        return importlib.import_module(f"curate.stages.{module}").run(o)

    return run


RUNNERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "sample": _run_sample, **{n: _stage(n) for n in ("download", "embed", "dedup", "recaption", "export", "train", "audit")},
}


def _read(path: str) -> Any:  # noqa: ANN401
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise CurateError(f"{path}: no such pipeline file") from None
    except IsADirectoryError:
        raise CurateError(f"{path}: is a folder, not a pipeline file") from None
    except UnicodeDecodeError:
        raise CurateError(f"{path}: not a text file") from None
    except yaml.YAMLError as err:
        raise CurateError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def check(path: str) -> Pipeline:
    """The pipeline in `path`, every stage's options checked; CurateError with one line per problem."""
    doc = _read(path)
    problems: list[str] = []
    if not isinstance(doc, dict):
        raise CurateError(f"{path}: a pipeline is a mapping with `root` and a `stages` list")
    for key in doc:
        if key not in TOP_LEVEL:
            problems.append(f"{path}: {key}: unknown key{optspec.suggest(str(key), list(TOP_LEVEL))}; "
                            f"a pipeline has {', '.join(TOP_LEVEL)}")
    name = doc.get("name", "")
    if not isinstance(name, str):
        problems.append(f"{path}: name: must be a string, not {name!r}")
    root = doc.get("root")
    if "root" not in doc:
        problems.append(f"{path}: root: is required (the folder the run writes into)")
    elif not isinstance(root, str) or not root.strip():
        problems.append(f"{path}: root: must be a folder name, not {root!r}")
    stages = doc.get("stages")
    steps: list[Step] = []
    if "stages" not in doc:
        problems.append(f"{path}: stages: is required (a list of `name: {{options}}`)")
    elif not isinstance(stages, list) or not stages:
        problems.append(f"{path}: stages: must be a non-empty list of `name: {{options}}`, not {stages!r}")
    else:
        base = root if isinstance(root, str) and root.strip() else "."
        made: list[str] = []
        for i, item in enumerate(stages, 1):
            step, lines = _check_step(path, i, item, base, made)
            problems.extend(lines)
            if step is not None:
                steps.append(step)
    if problems:
        raise CurateError("\n".join(problems))
    return Pipeline(path, str(name), str(root), tuple(steps), doc)


def _check_step(path: str, i: int, item: Any, root: str, made: list[str]) -> tuple[Step | None, list[str]]:  # noqa: ANN401
    where = f"{path}: stage {i}"
    if not isinstance(item, dict) or len(item) != 1:
        return None, [f"{where}: must be one `name: {{options}}` mapping, not {item!r}"]
    name, options = next(iter(item.items()))
    if name not in config.STAGES:
        hint = optspec.suggest(str(name), list(config.STAGES))
        return None, [f"{where}: unknown stage {name!r}{hint}; one of {', '.join(config.STAGES)}"]
    where = f"{where} ({name})"
    if options is None:
        options = {}
    if not isinstance(options, dict):
        return None, [f"{where}: options must be a mapping of key: value, not {options!r}"]
    cls = config.STAGES[name]

    def check_paths(values: dict[str, Any]) -> list[tuple[str, str]]:
        """Inputs must exist or be made by an earlier stage; this stage's outputs are made from here on."""
        problems = []
        for spec in optspec.specs(cls):
            value = values.get(spec.name)
            for p in () if value is None else value if isinstance(value, tuple) else (value,):
                if spec.role == "input" and not _available(p, made):
                    problems.append((spec.name, f"{p} does not exist and no earlier stage makes it"))
                elif spec.role == "output":
                    made.append(os.path.normpath(p))
        return problems

    opts, problems = optspec.from_mapping(cls, options, root, check_paths)
    return (None if problems else Step(i, name, opts)), [f"{where}: {key}: {msg}" for key, msg in problems]


def _available(p: str, made: list[str]) -> bool:
    """Does input path `p` exist, or lie in (or be) an earlier stage's output? URLs are not checked here."""
    if "://" in p:
        return True
    if any(c in p for c in "*?["):
        return bool(glob.glob(p)) or any(_under(os.path.dirname(p), m) for m in made)
    return os.path.exists(os.path.normpath(p)) or any(_under(p, m) for m in made)


def _under(p: str, folder: str) -> bool:
    p = os.path.normpath(p)
    return p == folder or p.startswith(folder.rstrip(os.sep) + os.sep)


def run(path: str, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Check a pipeline file, then run it; returns each stage's summary and seconds. Writes `run.json` and the
    run report `report.html` under the root, also when a stage fails (with the error)."""
    from curate.log import logger
    from curate.report import run_report

    echo = echo or logger.info  # progress lines go through the curate logger (-q silences them)
    pipe = check(path)
    root, doc = pipe.root, pipe.doc
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as err:
        raise CurateError(f"{root}: cannot create the run's root ({err.strerror or err})") from None
    results: dict[str, Any] = {}
    server = None
    started = time.time()
    step: Step | None = None
    try:
        for step in pipe.steps:
            start = time.time()
            if step.name == "serve":
                from curate.sample.server import make_server, serve_in_thread

                o = step.options
                try:
                    server = make_server(o.directory, o.host, o.port)
                except OSError as err:
                    raise CurateError(f"cannot listen on {o.host}:{o.port}: {err.strerror}") from None
                serve_in_thread(server)
                echo(f"run: serving {o.directory} on {o.host}:{server.server_address[1]}")
                continue
            summary = RUNNERS[step.name](step.options)
            results[step.name] = {"seconds": round(time.time() - start, 2), "summary": summary}
            echo(f"run: {step.name} done in {time.time() - start:.1f} s")
    except CurateError as err:
        where = f"stage {step.index} ({step.name})" if step else "run"
        _try_report(run_report.write, root, doc, results, started, f"{where}: {err.message}")
        raise CurateError(f"{path}: {where}: {err.message}") from None
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


def json_schema() -> dict[str, Any]:
    """A JSON Schema for pipeline files, from the stages' option declarations (editors can check files)."""
    stage_items = [{"type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
                    "properties": {name: optspec.json_schema(cls)}, "required": [name]}
                   for name, cls in config.STAGES.items()]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "curate pipeline",
        "description": "A `curate run` file: a root folder and the stages to run in order; paths are relative to root.",
        "type": "object", "additionalProperties": False, "required": ["root", "stages"],
        "properties": {
            "name": {"type": "string", "description": TOP_LEVEL["name"]},
            "root": {"type": "string", "description": TOP_LEVEL["root"]},
            "stages": {"type": "array", "minItems": 1, "description": TOP_LEVEL["stages"], "items": {"oneOf": stage_items}},
        },
    }
