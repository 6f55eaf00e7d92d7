"""--engine dask: the same per-shard functions as Dask tasks on a LocalCluster (127.0.0.1, no dashboard) give the
same outputs as the local engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.stages import dedup, download, embed, export, recaption
from tests.conftest import jpeg, write_shard

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def scheduler():
    """A 2-worker cluster for the module. pytest-timeout shows only this process's stacks, so each worker is set
    to print its own to stderr if the module is still running after 150 s (it takes about 35): a hung task
    then shows where it waits."""
    import faulthandler

    cluster = distributed.LocalCluster(host="127.0.0.1", dashboard_address=None, n_workers=2, threads_per_worker=1,
                                       processes=True)
    client = distributed.Client(cluster)
    client.run(faulthandler.dump_traceback_later, 150, exit=False)
    yield cluster.scheduler_address
    client.run(faulthandler.cancel_dump_traceback_later)
    client.close()
    cluster.close()


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "_stats" not in p.parts and p.name != "_stage.json" and "_work" not in p.parts
            and p.name != "summary.json" and not p.name.endswith("_stats.json")}  # timings


@pytest.mark.timeout(200)
def test_download_embed_recaption_export_match_the_local_engine(sample_run, server, photos, scheduler, tmp_path):
    urls = [server.put(f"{n}.jpg", jpeg(im)) for n, im, _ in photos[:8]]
    for s in range(3):
        write_shard(tmp_path / "in" / f"{s}.parquet",
                    [{"url": u, "caption": f"c{s}{i}"} for i, u in enumerate(urls)] + [{"url": f"{server.base}/x", "caption": "gone"}])
    inputs = [str(p) for p in sorted((tmp_path / "in").glob("*.parquet"))]
    opts = {"allow_private_network": True}
    download.run(download.Options(inputs=tuple(inputs), output=str(tmp_path / "dl_local"), **opts, progress=False))
    download.run(download.Options(inputs=tuple(inputs), output=str(tmp_path / "dl_dask"), **opts, progress=False, engine="dask", scheduler=scheduler))
    assert tree(tmp_path / "dl_local") == tree(tmp_path / "dl_dask")

    embed.run(embed.Options(images=str(sample_run["images"]), output=str(tmp_path / "emb_dask"), text_model="minilm", progress=False, engine="dask", scheduler=scheduler))
    local, dask = tree(sample_run["emb"]), tree(tmp_path / "emb_dask")
    assert local.keys() == dask.keys()
    import numpy as np

    for name in local:
        if name.endswith(".npy"):  # same model, other process: equal to float16 rounding
            a = np.load(sample_run["emb"] / name).astype(np.float32)
            b = np.load(tmp_path / "emb_dask" / name).astype(np.float32)
            assert a.shape == b.shape and np.abs(a - b).max() < 2e-3
        else:
            assert local[name] == dask[name], name

    dedup.run(dedup.Options(embeddings=str(sample_run["emb"]), output=str(tmp_path / "dd"), progress=False))
    recaption.run(recaption.Options(dedup=str(tmp_path / "dd"), output=str(tmp_path / "rc_local"), progress=False))
    recaption.run(recaption.Options(dedup=str(tmp_path / "dd"), output=str(tmp_path / "rc_dask"), progress=False, engine="dask", scheduler=scheduler))
    assert tree(tmp_path / "rc_local") == tree(tmp_path / "rc_dask")
    ex = {"dedup": str(tmp_path / "dd"), "captions": str(tmp_path / "rc_local"), "shard_size": 9}
    export.run(export.Options(images=str(sample_run["images"]), output=str(tmp_path / "ex_local"), **ex, progress=False))
    export.run(export.Options(images=str(sample_run["images"]), output=str(tmp_path / "ex_dask"), **ex, progress=False, engine="dask", scheduler=scheduler))
    assert tree(tmp_path / "ex_local") == tree(tmp_path / "ex_dask")  # byte-identical tars


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scoring", [{}, {"score": "hub", "linkage": "components", "threshold": 0.02}])
def test_dedup_partitions_as_dask_tasks_match_the_local_engine(scheduler, tmp_path, scoring):
    """The Dask engine's pairs stay in files (curate/dedup/spill.py) and are linked a file at a time, with the
    default mutual linkage and with hub scores: every table equals the local engine's, and the files are gone."""
    from tests.test_dedup import planted, write_embed_dir

    write_embed_dir(tmp_path / "emb", planted(n_base=3000), shards=3)
    opts = {"mode": "partition", "threshold": 0.9, "nlist": 16, "save_index": False, **scoring}
    local = dedup.run(dedup.Options(embeddings=str(tmp_path / "emb"), output=str(tmp_path / "local"), **opts, progress=False))
    dask = dedup.run(dedup.Options(embeddings=str(tmp_path / "emb"), output=str(tmp_path / "dask"), **opts, progress=False, engine="dask", scheduler=scheduler))
    # six planted groups; hub scores at 0.02 also link some of the planted look-alikes
    assert local["duplicate_clusters"] == 6 if not scoring else local["duplicate_clusters"] >= 6
    assert dask["duplicate_clusters"] == local["duplicate_clusters"]
    a, b = tree(tmp_path / "local"), tree(tmp_path / "dask")
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith(".parquet"):  # the same clusters, counts, nearest keys and similarities
            assert a[name] == b[name], name
    assert dask["counts_at_threshold"] == local["counts_at_threshold"]
    assert not [p for p in (tmp_path / "dask" / "_work").rglob("*") if p.suffix in (".npy", ".npz")]


@pytest.mark.timeout(120)
def test_dedup_on_real_photo_embeddings_matches_the_local_engine(sample_run, scheduler, tmp_path):
    """The same equality on real embeddings (effnet-lite0 of `curate sample`'s photos, its planted copies and
    look-alikes), not only on vectors built for the test."""
    opts = {"embeddings": str(sample_run["emb"]), "mode": "partition", "nlist": 4, "save_index": False, "progress": False}
    local = dedup.run(dedup.Options(output=str(tmp_path / "local"), **opts))
    dask = dedup.run(dedup.Options(output=str(tmp_path / "dask"), **opts, engine="dask", scheduler=scheduler))
    assert local["duplicate_clusters"] >= 3 and dask["counts_at_threshold"] == local["counts_at_threshold"]
    a, b = tree(tmp_path / "local"), tree(tmp_path / "dask")
    assert [n for n in a if n.endswith(".parquet")] == [n for n in b if n.endswith(".parquet")]
    assert all(a[n] == b[n] for n in a if n.endswith(".parquet"))


def test_a_worker_killed_mid_run_loses_no_rows(server, photos, tmp_path):
    import os
    import signal
    import threading
    import time

    urls = [server.put(f"{n}.jpg", jpeg(im)) for n, im, _ in photos[:4]]
    for s in range(6):
        write_shard(tmp_path / "in" / f"{s}.parquet", [{"url": u, "caption": f"s{s} {i}"} for i, u in enumerate(urls)])
    inputs = [str(p) for p in sorted((tmp_path / "in").glob("*.parquet"))]
    opts = {"allow_private_network": True, "timeout": 5, "threads": 1}
    download.run(download.Options(inputs=tuple(inputs), output=str(tmp_path / "local"), **opts, progress=False))

    server.httpd.delay = 0.3  # ~1.2 s per shard: the kill lands while shards are in flight
    cluster = distributed.LocalCluster(host="127.0.0.1", dashboard_address=None, n_workers=2, threads_per_worker=1,
                                       processes=True)
    client = distributed.Client(cluster)
    out = tmp_path / "dask"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            download.run(download.Options(inputs=tuple(inputs), output=str(out), **opts, progress=False, engine="dask", scheduler=cluster.scheduler_address))
        except BaseException as err:  # noqa: BLE001 (reported below; the rerun must complete it)
            errors.append(err)

    try:
        t = threading.Thread(target=run)
        t.start()
        deadline = time.time() + 120
        while not list(out.glob("_stats/*.json")):
            assert time.time() < deadline, "no shard finished"
            time.sleep(0.05)
        pids = client.run(os.getpid)  # {worker address: pid}
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        t.join(timeout=300)
        assert not t.is_alive()
        assert victim not in client.run(os.getpid).values() or errors  # the worker really died
    finally:
        client.close()
        cluster.close()
    server.httpd.delay = 0.0
    if errors:  # the run may fail with the lost worker; a rerun completes only what is missing
        print(f"run failed with the lost worker ({errors[0]!r}); rerunning")
        download.run(download.Options(inputs=tuple(inputs), output=str(out), **opts, progress=False))
    assert tree(out) == tree(tmp_path / "local")
    stats = [json.loads(p.read_text()) for p in sorted((out / "_stats").glob("*.json"))]
    assert len(stats) == 6 and sum(s["rows_in"] for s in stats) == 24 == sum(s["rows_out"] for s in stats)
