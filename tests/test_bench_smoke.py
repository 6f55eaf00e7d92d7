"""Every benchmark module runs: a tiny run of each (bench/run.py's SMOKE), so `make bench` cannot rot.

These check that each benchmark still runs end to end against today's code and prints its JSON, with a few
sanity checks on the figures (exact answers at toy sizes); the figures themselves belong to `make bench`.
"""

from __future__ import annotations

import os

import pytest

from bench.run import BENCHES, SMOKE, TAKES_DATA, run_one
from tests.conftest import REPO

CHECKS = {
    "bench.embed": lambda r: r["images"] == 24 and r["curate_embed_images_per_s"] > 0 and r["ratio_to_forward_only"] > 0,
    "bench.dedup": lambda r: r["pair_recall"] >= 0.99 and r["pair_precision"] >= 0.99,
    "bench.copydetect": lambda r: r["sets"]["heldout_stacked"]["groups"] >= 4
    and all(0 <= r["headline"][f"{b} dedup_defaults"][s]["f1"] <= 1 for b in ("effnet-lite0", "phash") for s in r["sets"])
    and r["backends"]["effnet-lite0"]["dedup_defaults"]["dev_light"]["true_pairs"] > 0
    and r["backends"]["effnet-lite0"]["dedup --score hub --templates"]["seconds"] > 0
    and r["backends"]["effnet-lite0"]["dedup --score hub --templates --verify"]["dev_light"]["true_pairs"] > 0
    and r["verify_timing"]["images"] == 60 and r["verify_timing"]["verify_over_embed"] > 0
    and 0 <= r["headline"]["effnet-lite0 dedup --score hub --templates"]["heldout_stacked"]["f1"] <= 1
    and "hub-strong0.8/components" in r["backends"]["effnet-lite0"],
    "bench.realscale": lambda r: r["knn_flat"]["pair_recall_direct"] == 1.0 and r["partition"]["pair_recall_direct"] == 1.0,
    "bench.recaption": lambda r: r["n"] == 3000 and r["stage"]["insertions_duplicates"]["ratio_to_plain_copy"] > 0,
    "bench.caption_models": lambda r: r["tiny"]["caption_model_images_per_s"] > 0
    and r["tiny"]["paraphrase_through_cache"]["generated_on_rerun"] == 0,
    "bench.dask_overhead": lambda r: r["dedup_same_clusters"] is True and r["embed_dask_s"] > 0,
    "bench.closed_loop": lambda r: {"raw", "curated"} <= set(r) and r["raw"]["generations"]["n"] > 0,
}


def test_every_benchmark_module_has_a_smoke_run():
    modules = {argv[0] for runs in BENCHES.values() for argv in runs}
    assert modules <= set(SMOKE) == set(CHECKS)
    helpers = {"bench.__init__", "bench.run", "bench.data", "bench.copysets", "bench.cli_run", "bench.vectors"}
    listed = {f"bench.{p.stem}" for p in (REPO / "bench").glob("*.py")} - helpers
    assert listed == set(SMOKE), "a benchmark module without a smoke run (bench/run.py SMOKE)"


@pytest.mark.slow
@pytest.mark.parametrize("module", list(SMOKE))
def test_benchmark_smoke_run(module, tmp_path):
    argv = [module, *SMOKE[module]]
    if module in TAKES_DATA:
        argv += ["--data", str(tmp_path / "data")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    result = run_one(argv, env=env, cwd=str(REPO))  # they find .data/ and scripts/ there, as `make bench` runs them
    assert CHECKS[module](result), result


def test_a_failing_benchmark_shows_its_own_error():
    with pytest.raises(SystemExit, match="unrecognized arguments: --no-such-flag"):
        run_one(["bench.dedup", "--no-such-flag"], cwd=str(REPO))
