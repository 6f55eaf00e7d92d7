"""`curate sample`: real photos, AugLy copies, ground truth, deterministic by seed; and a full download of it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from curate.config import SampleOptions
from curate.sample.build import build_sample
from curate.sample.server import make_server, serve_in_thread


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_sample_is_deterministic_by_seed(tmp_path):
    a = build_sample(SampleOptions(output=str(tmp_path / "a"), seed=3, base_url="http://127.0.0.1:1"))
    b = build_sample(SampleOptions(output=str(tmp_path / "b"), seed=3, base_url="http://127.0.0.1:1"))
    build_sample(SampleOptions(output=str(tmp_path / "c"), seed=4, base_url="http://127.0.0.1:1"))
    assert a == b
    assert digest_tree(tmp_path / "a") == digest_tree(tmp_path / "b")
    assert digest_tree(tmp_path / "a") != digest_tree(tmp_path / "c")


def test_sample_ground_truth_matches_the_files(tmp_path):
    summary = build_sample(SampleOptions(output=str(tmp_path), seed=0, base_url="http://127.0.0.1:1"))
    truth = {r["key"]: r for r in pq.read_table(tmp_path / "truth.parquet").to_pylist()}
    rows = []
    for p in sorted((tmp_path / "input").glob("*.parquet")):
        rows += pq.read_table(p).to_pylist()
    assert len(rows) == summary["rows"] == len(truth)
    assert {r["key"] for r in rows} == set(truth)
    assert summary["copies"] > 5 and 0 < summary["copies_same_caption"] < summary["copies"]
    by_key = {r["key"]: r for r in rows}
    for key, t in truth.items():
        if not t["is_copy"]:
            continue
        src = truth[t["source_key"]]
        assert not src["is_copy"] and src["origin"] == t["origin"]
        assert (by_key[key]["caption"] == by_key[t["source_key"]]["caption"]) == t["same_caption"]
        # the copy is a real, decodable image, and really differs from its source
        copy = Image.open(tmp_path / "files" / f"{key}.jpg")
        orig = Image.open(tmp_path / "files" / f"{t['source_key']}.jpg")
        copy.load()
        assert copy.size != orig.size or copy.tobytes() != orig.tobytes(), t["transform"]


def test_demo_flow_sample_serve_download(tmp_path):
    """The demo's job end to end through the CLI: every sample row downloads or is rejected as expected."""
    sample = tmp_path / "sample"
    httpd = make_server(str(sample.mkdir() or sample))
    port = httpd.server_address[1]
    serve_in_thread(httpd)
    try:
        cli = [sys.executable, "-m", "curate"]
        subprocess.run([*cli, "sample", str(sample), "--base-url", f"http://127.0.0.1:{port}"], check=True,
                       capture_output=True, timeout=120)
        subprocess.run([*cli, "download", str(sample / "input"), str(tmp_path / "images"), "--no-progress",
                        "--allow-private-network", "--timeout", "5"], check=True, capture_output=True, timeout=240)
    finally:
        httpd.shutdown()
        httpd.server_close()
    truth = {r["key"]: r for r in pq.read_table(sample / "truth.parquet").to_pylist()}
    summary = json.loads((tmp_path / "images" / "summary.json").read_text())
    kept = set()
    for p in (tmp_path / "images").glob("*.parquet"):
        kept |= {r["key"] for r in pq.read_table(p).to_pylist() if r["status"] == "success"}
    rejected = set()
    for p in (tmp_path / "images" / "rejects").glob("*.parquet"):
        rejected |= set(pq.read_table(p).column("key").to_pylist())
    assert kept == {k for k, t in truth.items() if t["expect"] == "image"}
    assert rejected == {k for k, t in truth.items() if t["expect"] == "reject"}
    assert summary["rows_in"] == len(truth)


def test_sample_tables_match_their_schemas(tmp_path):
    from curate import schemas

    build_sample(SampleOptions(output=str(tmp_path), seed=1, base_url="http://127.0.0.1:1"))
    schemas.validate(pq.read_schema(tmp_path / "truth.parquet"), "sample_truth", source="truth.parquet")
    for p in (tmp_path / "input").glob("*.parquet"):
        schemas.validate(pq.read_schema(p), "input_shard", source=str(p))
