"""The shard data plane every stage runs on.

A stage is a plain function `fn(shard, out, options) -> stats` that reads one input shard and writes its
files through `out.path(relpath)`. The executor gives each shard a private temp folder, commits the files
with renames once the function returns, then writes `_stats/{i:05d}.json` as the shard's completion marker.
A killed run leaves only temp folders (removed at the next start) and finished shards; a rerun skips the
finished ones. Numbering is gap-free and stable across reruns (`_stage.json`). Stages never reimplement
resume, atomic writes or progress.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from curate import __version__
from curate.errors import CurateError
from curate.io import fs


@dataclass(frozen=True)
class Shard:
    """One unit of work: input shard `input` becomes output shard number `index` under `output_root`."""

    index: int
    input: str
    output_root: str

    @property
    def name(self) -> str:
        return f"{self.index:05d}"


@dataclass
class ShardOutput:
    """Where a stage writes one shard's files. Paths are local temp files until the executor commits them."""

    tmp_dir: str
    progress: Callable[[int], None] | None = None
    _files: dict[str, str] = field(default_factory=dict)

    def path(self, relpath: str) -> str:
        """A local path to write `relpath` (relative to the stage output root) to."""
        if relpath.startswith("/") or ".." in relpath.split("/") or relpath.startswith("_"):
            raise ValueError(f"output path must stay inside the stage output: {relpath!r}")
        local = os.path.join(self.tmp_dir, relpath.replace("/", "__"))
        self._files[relpath] = local
        return local

    def advance(self, rows: int) -> None:
        """Report rows done (drives the rows progress bar when the shard runs in the main process)."""
        if self.progress is not None:
            self.progress(rows)

    @property
    def files(self) -> dict[str, str]:
        return dict(self._files)


StageFn = Callable[[Shard, ShardOutput, Any], dict[str, Any]]


def execution(opts: Any) -> dict[str, Any]:  # noqa: ANN401
    """run_stage's keywords from a stage's options (curate.config.ShardRun: how shards run, not what they make)."""
    return {"workers": opts.workers, "overwrite": opts.overwrite, "progress": opts.progress, "engine": opts.engine,
            "scheduler": opts.scheduler}


def recorded_options(options: Any) -> dict[str, Any]:  # noqa: ANN401
    """What a stage's shards depend on, as recorded in `_stage.json`: a stage's options object (curate.config)
    less its paths and execution, or a stage's own payload dataclass/dict as it is."""
    from curate import optspec

    if hasattr(options, "recorded"):
        return options.recorded()
    if dataclasses.is_dataclass(options):
        return optspec.recorded(options)
    return dict(options)


def summarize(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over a stage's shard stats: rows in/out/rejected, success rate, reasons (no timings, so that the
    same input gives the same summary file)."""
    from collections import Counter

    reasons: Counter[str] = Counter()
    for s in stats:
        reasons.update(s.get("reasons", {}))
    rows_in = sum(s["rows_in"] for s in stats)
    rows_out = sum(s["rows_out"] for s in stats)
    return {
        "shards": len(stats),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rows_rejected": sum(s["rows_rejected"] for s in stats),
        "success_rate": round(rows_out / rows_in, 4) if rows_in else 0.0,
        "reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def stats_path(output_root: str, index: int) -> str:
    return fs.join(output_root, "_stats", f"{index:05d}.json")


def options_hash(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()


def plan_shards(stage: str, inputs: list[str], output_root: str, options: Any, overwrite: bool) -> list[Shard]:  # noqa: ANN401
    """Number the inputs (stable, gap-free) and record the numbering and the options in `_stage.json`."""
    options = recorded_options(options)
    fs.ensure_dir(output_root)
    manifest_path = fs.join(output_root, "_stage.json")
    digest = options_hash(options)
    known: list[str] = []
    if fs.exists(manifest_path) and not overwrite:
        manifest = fs.read_json(manifest_path)
        if manifest.get("stage") != stage:
            raise CurateError(f"{output_root}: holds the output of stage '{manifest.get('stage')}', not '{stage}'")
        if manifest.get("options_hash") != digest:
            changed = sorted(
                k for k in set(options) | set(manifest.get("options", {}))
                if json.dumps(options.get(k), default=str) != json.dumps(manifest.get("options", {}).get(k), default=str)
            )
            raise CurateError(
                f"{output_root}: was written with other options ({', '.join(changed)}); "
                "pass --overwrite to redo it, or choose another output folder"
            )
        known = list(manifest["inputs"])
    ordered = known + [p for p in inputs if p not in known]
    fs.write_json_atomic(
        manifest_path,
        {"stage": stage, "inputs": ordered, "options": options, "options_hash": digest, "curate_version": __version__},
    )
    wanted = set(inputs)
    return [Shard(i, p, output_root) for i, p in enumerate(ordered) if p in wanted]


_PARENT: int | None = None  # in a worker process: the pid of the run that started it


def _die_with_parent(parent: int) -> None:
    """Worker initializer: the run's log verbosity, and the kernel kills this worker when the run that spawned it
    dies (SIGKILL included), so no worker of a killed run goes on committing shards into the output while a
    rerun works there."""
    global _PARENT
    _PARENT = parent
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    from curate import log

    log.setup()  # the run's verbosity, from CURATE_VERBOSITY


def _parent_gone() -> bool:
    return _PARENT is not None and os.getppid() != _PARENT


def _run_one(stage: str, fn: StageFn, shard: Shard, options: Any, tmp_root: str,  # noqa: ANN401
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    tmp_dir = os.path.join(tmp_root, f"{shard.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp_dir)
    out = ShardOutput(tmp_dir, progress)
    start = time.time()
    try:
        stats = dict(fn(shard, out, options))
        if _parent_gone():  # where the kernel cannot kill us with the parent (not Linux): never commit orphaned
            os._exit(1)
        for rel, local in sorted(out.files.items()):
            if not os.path.exists(local):
                raise RuntimeError(f"stage {stage} registered {rel} for shard {shard.index} but did not write it")
            fs.commit_file(local, fs.join(shard.output_root, rel))
        stats.update(
            stage=stage,
            index=shard.index,
            input=shard.input,
            files=sorted(out.files),
            seconds=round(time.time() - start, 3),
            curate_version=__version__,
        )
        for key in ("rows_in", "rows_out", "rows_rejected"):
            stats.setdefault(key, 0)
        stats.setdefault("reasons", {})
        fs.write_json_atomic(stats_path(shard.output_root, shard.index), stats)
        return stats
    except OSError as err:
        where = err.filename or shard.output_root
        raise CurateError(f"shard {shard.name} ({shard.input}): cannot write {where}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _local_tmp_root(output_root: str) -> str:
    if fs.is_local(output_root):
        _, p = fs.url_to_fs(output_root)
        return os.path.join(p, "_tmp")
    return os.path.join(os.environ.get("TMPDIR", "/tmp"), "curate-" + hashlib.sha1(output_root.encode()).hexdigest()[:12])


def run_stage(
    stage: str,
    fn: StageFn,
    inputs: list[str],
    output_root: str,
    options: Any,  # noqa: ANN401  (handed to fn; its recorded form decides resume)
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    rows_total: int | None = None,
    engine: str = "local",
    scheduler: str | None = None,
) -> list[dict[str, Any]]:
    """Run `fn` over every input shard not yet done; return the stats of all shards (done before or now).

    engine `local` runs shards in this process (workers=1) or in spawned processes; `dask` submits the same
    per-shard function to a Dask cluster (curate/engines/dask.py).
    """
    tmp_root = _local_tmp_root(output_root)
    with output_lock(output_root):
        return _run_stage(stage, fn, inputs, output_root, options, tmp_root, workers=workers, overwrite=overwrite,
                          progress=progress, rows_total=rows_total, engine=engine, scheduler=scheduler)


_HELD: set[str] = set()  # output roots this process holds the lock of


@contextmanager
def output_lock(output_root: str) -> Iterator[None]:
    """One curate process writes a stage output at a time: an flock on `_lock` (an empty file: outputs stay
    byte-identical across runs), which the kernel releases when its holder dies, SIGKILL included."""
    if not fs.is_local(output_root):
        yield
        return
    import fcntl

    _, root = fs.url_to_fs(output_root)
    root = os.path.abspath(root)
    if root in _HELD:  # a stage that holds it already (its global step) runs its shards: re-entrant
        yield
        return
    try:
        os.makedirs(root, exist_ok=True)
        fd = os.open(os.path.join(root, "_lock"), os.O_RDWR | os.O_CREAT, fs.file_mode())
    except OSError as err:
        raise CurateError(f"{output_root}: cannot write here ({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CurateError(f"{output_root}: another curate process is writing here; wait for it to finish or "
                              "stop it, then rerun") from None
        _HELD.add(root)
        try:
            yield
        finally:
            _HELD.discard(root)
    finally:
        os.close(fd)  # releases the lock


def _run_stage(stage: str, fn: StageFn, inputs: list[str], output_root: str, options: Any, tmp_root: str,  # noqa: ANN401
               *, workers: int, overwrite: bool, progress: bool, rows_total: int | None, engine: str,
               scheduler: str | None) -> list[dict[str, Any]]:
    try:
        shards = plan_shards(stage, inputs, output_root, options, overwrite)
        shutil.rmtree(tmp_root, ignore_errors=True)  # leftovers of a killed run: never committed, safe to drop
        _drop_marker_temps(output_root)
        os.makedirs(tmp_root, exist_ok=True)
    except OSError as err:
        raise CurateError(f"{output_root}: cannot write here ({err.strerror or err})") from None

    done: dict[int, dict[str, Any]] = {}
    pending: list[Shard] = []
    for shard in shards:
        sp = stats_path(output_root, shard.index)
        if not overwrite and fs.exists(sp):
            done[shard.index] = fs.read_json(sp)
        else:
            pending.append(shard)

    shard_bar = tqdm(total=len(shards), initial=len(done), desc=f"{stage} shards", unit="shard",
                     disable=None if progress else True, file=sys.stderr, position=0)
    row_bar = tqdm(total=rows_total, initial=sum(s.get("rows_in", 0) for s in done.values()),
                   desc=f"{stage} rows", unit="row", disable=None if progress else True, file=sys.stderr, position=1)
    try:
        if engine == "dask":
            from curate.engines.dask import map_shards

            calls = [(stage, fn, s, options, tmp_root) for s in pending]
            for stats in map_shards(_run_one, calls, scheduler, workers):
                done[stats["index"]] = stats
                row_bar.update(stats["rows_in"])
                shard_bar.update(1)
        elif engine != "local":
            raise CurateError(f"unknown engine {engine!r}: local or dask")
        elif workers <= 1 or len(pending) <= 1:
            for shard in pending:
                before = row_bar.n
                stats = _run_one(stage, fn, shard, options, tmp_root, progress=row_bar.update)
                row_bar.update(max(0, stats["rows_in"] - (row_bar.n - before)))
                done[shard.index] = stats
                shard_bar.update(1)
        else:
            ctx = multiprocessing.get_context("spawn")  # img2dataset and torch are not fork-safe
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_die_with_parent,
                                       initargs=(os.getpid(),))
            try:
                futures: dict[Future, Shard] = {
                    pool.submit(_run_one, stage, fn, s, options, tmp_root): s for s in pending
                }
                remaining = set(futures)
                while remaining:
                    finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        stats = fut.result()  # a failed shard stops the run; finished shards stay committed
                        done[stats["index"]] = stats
                        row_bar.update(stats["rows_in"])
                        shard_bar.update(1)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        row_bar.close()
        shard_bar.close()
        shutil.rmtree(tmp_root, ignore_errors=True)
        _drop_marker_temps(output_root)  # a worker killed while writing its marker, its shard redone elsewhere
    return [done[i] for i in sorted(done)]


def _drop_marker_temps(output_root: str) -> None:
    """Remove the temp files of completion markers whose writer was killed before its rename
    (`_stats/.tmp-*`, fs.write_json_atomic's): never a marker, but `_stats/*.json` would count them. Safe under
    the output lock, which every writer of this output holds."""
    if fs.is_local(output_root):
        folder = os.path.dirname(fs.url_to_fs(stats_path(output_root, 0))[1])
        for stale in glob.glob(os.path.join(glob.escape(folder), ".tmp-*")):
            with suppress(FileNotFoundError):
                os.remove(stale)
