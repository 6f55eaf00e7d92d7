"""Dask distributed as curate's cluster engine: the same per-shard function, one Dask task per shard.

Atomic commits, completion markers and resume stay in the executor's `_run_one`, which is what each task runs,
so a task retried after a lost worker redoes only its own shard. Module-level caches (the embed stage's model)
live in the worker process, so a model is loaded once per worker. With no scheduler address a LocalCluster is
started on 127.0.0.1 with the dashboard off (it talks only over loopback). Shards must be reachable from every
worker: a shared file system or an fsspec URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from curate.errors import CurateError


def _client(scheduler: str | None, workers: int) -> tuple[Any, Any]:  # noqa: ANN401
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise CurateError("--engine dask needs Dask: pip install 'curate[dask]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as err:
            raise CurateError(f"--scheduler {scheduler}: cannot connect ({err})") from None
    cluster = LocalCluster(host="127.0.0.1", dashboard_address=None, n_workers=max(1, workers),
                           threads_per_worker=1, processes=True)
    return Client(cluster), cluster


def map_shards(func: Callable[..., dict[str, Any]], calls: list[tuple], scheduler: str | None,
               workers: int) -> Iterator[dict[str, Any]]:
    """Run func(*args) for each args tuple (stage, fn, shard, ...) as Dask tasks; yield results as they complete."""
    yield from map_tasks(func, calls, [f"curate-{args[0]}-{args[2].name}" for args in calls], scheduler, workers)


@contextmanager
def client_for(scheduler: str | None, workers: int) -> Iterator[Any]:
    """A Dask client for several rounds of tasks (one LocalCluster for all of them when no scheduler is given)."""
    client, cluster = _client(scheduler, workers)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(client: Any, func: Callable[..., Any], calls: list[tuple], keys: list[str]) -> Iterator[Any]:  # noqa: ANN401
    """Run func(*args) for each args tuple as a Dask task named by `keys` on `client`; yield results as they
    complete. A task lost with its worker is rerun by Dask on another worker (up to its allowed failures)."""
    from distributed import as_completed

    futures = [client.submit(func, *args, pure=False, key=key) for args, key in zip(calls, keys, strict=True)]
    for fut in as_completed(futures):
        yield fut.result()
        fut.release()  # the result is the caller's now; the cluster need not keep it


def map_tasks(func: Callable[..., Any], calls: list[tuple], keys: list[str], scheduler: str | None,
              workers: int) -> Iterator[Any]:
    """`run_tasks` on a client of its own."""
    with client_for(scheduler, workers) as client:
        yield from run_tasks(client, func, calls, keys)
