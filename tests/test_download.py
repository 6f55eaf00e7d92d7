"""`curate download` against a real local HTTP server: real photos, hostile URLs, every row accounted for."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import urllib.parse
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from curate.stages import download
from tests.conftest import jpeg, write_shard

CURATE = [sys.executable, "-m", "curate"]


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A real decompression bomb: a 1-bit PNG of width x height zero pixels, about 100 KB on disk."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def read_outputs(out: Path) -> tuple[list[dict], list[dict]]:
    """(downloaded rows, rejected rows); checks on the way that the sidecars hold every input row, as
    img2dataset's do, the failed ones with the status and reason the rejects table gives them."""
    sidecar, rejected = [], []
    for p in sorted(out.glob("*.parquet")):
        sidecar += pq.read_table(p).to_pylist()
    for p in sorted((out / "rejects").glob("*.parquet")):
        rejected += pq.read_table(p).to_pylist()
    kept = [r for r in sidecar if r["status"] == "success"]
    failed = [r for r in sidecar if r["status"] != "success"]
    assert {r["status"] for r in failed} <= {"failed_to_download", "failed_to_resize"}
    assert [(r["key"], r["input_row"]) for r in failed] == [(r["key"], r["input_row"]) for r in rejected]
    assert [r["error_message"].split(":")[1] for r in failed] == [r["reason"] for r in rejected]
    assert all(r["error_message"] is None and r["width"] > 0 for r in kept)
    return kept, rejected


def peak_rss_kib(inputs: Path, out: Path, *args: str) -> int:
    """Run `curate download` in a child that reports its own peak RSS (VmHWM is per process image)."""
    wrapper = (
        "import atexit, sys\n"
        "atexit.register(lambda: print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
        " file=sys.stderr))\n"
        "from curate.cli import main\nsys.argv[0] = 'curate'\nmain()\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, "download", str(inputs), str(out), "--no-progress", *args],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.rsplit("VmHWM:", 1)[1].split()[0])


def run_download(inputs: Path, out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*CURATE, "download", str(inputs), str(out), "--no-progress", *args],
                          capture_output=True, text=True, check=check, timeout=240)


def test_hostile_urls_every_row_accounted_and_no_local_file_read(server, photos, tmp_path):
    good = {}
    rows = []
    for name, img, caption in photos[:6]:
        good[name] = server.put(f"{name}.jpg", jpeg(img))
        rows.append({"key": name, "url": good[name], "caption": caption})
    data = jpeg(photos[0][1])
    expected = {
        "missing": ("http_error", f"{server.base}/nope.jpg"),
        "slow": ("timeout", f"{server.base}/slow/{photos[0][0]}.jpg"),
        "html": ("not_an_image", server.put("page.html", b"<!DOCTYPE html><html><body>hi</body></html>")),
        "truncated": ("truncated", server.put("cut.jpg", data[: len(data) // 2])),
        "empty": ("empty_response", server.put("empty.jpg", b"")),
        "bomb": ("decompression_bomb", server.put("bomb.png", png_bomb())),
        "file_url": ("unsupported_scheme", "file:///etc/passwd"),
        "ftp_url": ("unsupported_scheme", "ftp://127.0.0.1/x.jpg"),
        "bare_path": ("unsupported_scheme", "/etc/passwd"),
        "metadata": ("blocked_network", "http://169.254.169.254/latest/meta-data/"),
        "redirect_file": ("unsupported_scheme",
                          f"{server.base}/redirect/" + urllib.parse.quote("file:///etc/passwd", safe="")),
        "redirect_meta": ("blocked_network",
                          f"{server.base}/redirect/" + urllib.parse.quote("http://169.254.169.254/", safe="")),
        "null_url": ("missing_url", None),
    }
    rows += [{"key": k, "url": url, "caption": f"row {k}"} for k, (_, url) in expected.items()]
    write_shard(tmp_path / "in" / "part.parquet", rows)
    out = tmp_path / "out"

    # 3 s: a 404 from the local server must not time out on a loaded 2-core CI machine (it did at 1 s)
    args = ("--allow-private-network", "--timeout", "3", "--threads", "8")
    peak_all = peak_rss_kib(tmp_path / "in", out, *args)
    write_shard(tmp_path / "base" / "part.parquet", rows[:1])
    peak_base = peak_rss_kib(tmp_path / "base", tmp_path / "base_out", *args)
    # decoding the 30,000 x 30,000 bomb would add at least 900 MB over a run without it
    assert peak_all - peak_base < 300 * 1024, f"peak RSS {peak_all} KiB vs {peak_base} KiB: was the bomb decoded?"

    kept, rejected = read_outputs(out)
    assert sorted(r["input_row"] for r in kept + rejected) == list(range(len(rows)))
    assert {r["key"] for r in kept} == set(good)
    got = {r["key"]: r["reason"] for r in rejected}
    assert got == {k: reason for k, (reason, _) in expected.items()}

    # the tar holds real, decodable images in input row order, with their captions
    samples = list(wds.WebDataset(str(out / "00000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows[:6]]
    meta = {r["key"]: r for r in kept}
    for s, (name, img, caption) in zip(samples, photos[:6], strict=True):
        decoded = Image.open(__import__("io").BytesIO(s["jpg"]))
        decoded.load()
        assert decoded.size == (meta[name]["width"], meta[name]["height"])
        assert (meta[name]["original_width"], meta[name]["original_height"]) == img.size
        assert min(decoded.size) == min(512, *img.size)  # keep_ratio: the short side at most --image-size
        assert s["txt"].decode() == caption

    passwd = Path("/etc/passwd").read_bytes()[:20]
    for f in out.rglob("*"):
        if f.is_file():
            assert passwd not in f.read_bytes(), f"{f} holds local file content"

    summary = __import__("json").loads((out / "summary.json").read_text())
    assert summary["rows_in"] == len(rows) and summary["rows_out"] == 6
    assert summary["reasons"]["unsupported_scheme"] == 4


def test_private_network_refused_by_default(server, photos, tmp_path):
    url = server.put("a.jpg", jpeg(photos[0][1]))
    port = server.port
    rows = [
        {"key": "loopback", "url": url, "caption": "x"},
        {"key": "localhost", "url": f"http://localhost:{port}/a.jpg", "caption": "x"},
        {"key": "v6", "url": f"http://[::1]:{port}/a.jpg", "caption": "x"},
        {"key": "private", "url": "http://10.1.2.3/a.jpg", "caption": "x"},
        # other spellings of 127.0.0.1 that resolvers accept: decimal, hex, short and octal forms, v4-mapped v6
        *({"key": f"spelling{i}", "url": f"http://{host}:{port}/a.jpg", "caption": "x"} for i, host in enumerate(
            ("2130706433", "0x7f000001", "127.1", "0177.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0"))),
    ]
    try:
        host_ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        host_ip = None
    if host_ip and not host_ip.startswith("127."):
        # a DNS name (not an IP literal) of a non-public address: only the connect-time check can catch it
        rows.append({"key": "hostname", "url": f"http://{socket.gethostname()}:{port}/a.jpg", "caption": "x"})
    write_shard(tmp_path / "in.parquet", rows)
    run_download(tmp_path / "in.parquet", tmp_path / "out", "--timeout", "2")
    kept, rejected = read_outputs(tmp_path / "out")
    assert kept == []
    assert {r["key"]: r["reason"] for r in rejected} == {r["key"]: "blocked_network" for r in rows}


def test_laion_spellings_column_map_and_hostile_keys(server, photos, tmp_path):
    urls = [server.put(f"p{i}.jpg", jpeg(img)) for i, (_, img, _) in enumerate(photos[:5])]
    rows = [
        {"SAMPLE_ID": 11, "image_link": urls[0], "TEXT": "plain", "WIDTH": 5, "AESTHETIC_SCORE": 5.5},
        {"SAMPLE_ID": None, "image_link": urls[1], "TEXT": None, "WIDTH": 5, "AESTHETIC_SCORE": 1.0},
        {"SAMPLE_ID": 11, "image_link": urls[2], "TEXT": "dup key", "WIDTH": 5, "AESTHETIC_SCORE": 2.0},
    ]
    write_shard(tmp_path / "laion" / "a.parquet", rows)
    out = tmp_path / "out"
    run_download(tmp_path / "laion", out, "--allow-private-network", "--column-map", "image_link=url")
    kept, rejected = read_outputs(out)
    assert [(r["key"], r["caption"], r["aesthetic"], r["source_width"]) for r in kept] == [
        ("11", "plain", 5.5, 5), ("000000000001", None, 1.0, 5)]
    assert [(r["input_row"], r["reason"]) for r in rejected] == [(2, "duplicate_key")]

    hostile = ["../../etc/passwd", "/abs/path", "a\x00b", "x.y/z", "ok"]
    rows = [{"key": k, "url": urls[i], "caption": "c"} for i, k in enumerate(hostile)]
    write_shard(tmp_path / "hostile" / "a.parquet", rows)
    out2 = tmp_path / "out2"
    run_download(tmp_path / "hostile", out2, "--allow-private-network")
    kept, _ = read_outputs(out2)
    assert [r["key"] for r in kept] == ["______etc_passwd", "_abs_path", "a_b", "x_y_z", "ok"]
    assert [r["source_key"] for r in kept] == hostile
    names = [m for m in __import__("tarfile").open(out2 / "00000.tar").getnames()]
    assert all("/" not in n and not n.startswith(".") for n in names)


def test_non_utf8_caption_rejected_row_by_row(server, photos, tmp_path):
    import pyarrow as pa

    url = server.put("a.jpg", jpeg(photos[1][1]))
    schema = pa.schema([("url", pa.string()), ("caption", pa.binary())])
    rows = [{"url": url, "caption": "caf\u00e9".encode()}, {"url": url, "caption": b"\xff\xfe bad"}]
    write_shard(tmp_path / "in.parquet", rows, schema)
    run_download(tmp_path / "in.parquet", tmp_path / "out", "--allow-private-network")
    kept, rejected = read_outputs(tmp_path / "out")
    assert [r["caption"] for r in kept] == ["caf\u00e9"]
    assert [(r["input_row"], r["reason"]) for r in rejected] == [(1, "caption_not_utf8")]


def _many_shards(server, photos, root: Path, n_shards: int = 5, per_shard: int = 6) -> Path:
    names = [server.put(f"{name}.jpg", jpeg(img)) for name, img, _ in photos]
    k = 0
    for s in range(n_shards):
        rows = []
        for _ in range(per_shard):
            rows.append({"url": names[k % len(names)], "caption": f"caption {k}"})
            k += 1
        rows.append({"url": f"{server.base}/gone_{s}.jpg", "caption": "missing"})
        write_shard(root / f"{s:03d}.parquet", rows)
    return root


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and "_stats" not in p.parts and p.name not in ("_stage.json",)
            and not p.name.endswith("_stats.json")}  # img2dataset's stats carry wall times


def test_sigkill_then_resume_equals_uninterrupted_run(server, photos, tmp_path):
    inputs = _many_shards(server, photos, tmp_path / "in")
    args = ("--allow-private-network", "--threads", "2", "--timeout", "5")
    reference = tmp_path / "ref"
    run_download(inputs, reference, *args)

    server.httpd.delay = 0.2  # slow each response so the kill lands mid-run
    out = tmp_path / "out"
    proc = subprocess.Popen([*CURATE, "download", str(inputs), str(out), "--no-progress", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = __import__("time").time() + 120
    while not (out / "_stats" / "00001.json").exists():
        assert proc.poll() is None, "finished before it could be killed"
        assert __import__("time").time() < deadline
        __import__("time").sleep(0.05)
    proc.kill()
    proc.wait()
    done_after_kill = sorted(p.name for p in (out / "_stats").glob("*.json"))
    assert 2 <= len(done_after_kill) < 5
    server.httpd.delay = 0.0

    result = run_download(inputs, out, *args)
    assert "30/35 rows ok" in result.stdout
    assert not (out / "_tmp").exists()
    assert _tree(out) == _tree(reference)  # byte-identical tars and tables
    kept, rejected = read_outputs(out)
    rows = sorted((r["key"]) for r in kept + rejected)
    assert len(rows) == len(set(rows)) == 35


def test_workers_and_parquet_format(server, photos, tmp_path):
    inputs = _many_shards(server, photos, tmp_path / "in", n_shards=3, per_shard=4)
    one = tmp_path / "one"
    two = tmp_path / "two"
    run_download(inputs, one, "--allow-private-network")
    run_download(inputs, two, "--allow-private-network", "--workers", "2")
    assert _tree(one) == _tree(two)

    pqout = tmp_path / "pq"
    run_download(inputs, pqout, "--allow-private-network", "--output-format", "parquet")
    assert not list(pqout.glob("*.tar"))
    table = pq.read_table(pqout / "00000.parquet")
    img = Image.open(__import__("io").BytesIO(table.column("jpg")[0].as_py()))
    assert img.size == (table.column("width")[0].as_py(), table.column("height")[0].as_py())


def test_rerun_skips_done_shards_and_numbers_new_inputs_after_old(server, photos, tmp_path):
    inputs = _many_shards(server, photos, tmp_path / "in", n_shards=2, per_shard=2)
    out = tmp_path / "out"
    run_download(inputs, out, "--allow-private-network")
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "_stats").glob("*.json")}
    write_shard(inputs / "000.5.parquet", [{"url": f"{server.base}/x.jpg", "caption": "new"}])
    run_download(inputs, out, "--allow-private-network")
    after = {p.name: p.stat().st_mtime_ns for p in (out / "_stats").glob("*.json")}
    assert {k: after[k] for k in stamp} == stamp  # finished shards were not redone
    assert sorted(after) == ["00000.json", "00001.json", "00002.json"]
    manifest = __import__("json").loads((out / "_stage.json").read_text())
    assert manifest["inputs"][2].endswith("000.5.parquet")  # new input got the next number, old ones kept theirs

    changed = run_download(inputs, out, "--allow-private-network", "--image-size", "64", check=False)
    assert changed.returncode == 2 and "image_size" in changed.stderr and "Traceback" not in changed.stderr


def test_reason_mapping():
    assert download.reason_of("HTTP Error 404: Not Found", "failed_to_download")[0] == "http_error"
    assert download.reason_of("<urlopen error timed out>", "failed_to_download")[0] == "timeout"
    assert download.reason_of("<urlopen error <urlopen error curate:blocked_network: x resolves to 10.0.0.1>>",
                              "failed_to_download") == ("blocked_network", "x resolves to 10.0.0.1")
    assert download.reason_of("aspect ratio too large", "failed_to_resize")[0] == "aspect_ratio"
    assert download.reason_of(None, "")[0] == "downloader_error"


def test_outputs_match_their_schemas(server, photos, tmp_path):
    from curate import schemas

    inputs = _many_shards(server, photos, tmp_path / "in", n_shards=1, per_shard=3)
    out = tmp_path / "out"
    run_download(inputs, out, "--allow-private-network")
    schemas.validate(pq.read_schema(out / "00000.parquet"), "image_shard", source="images")
    schemas.validate(pq.read_schema(out / "rejects" / "00000.parquet"), "rejects", source="rejects")
    stats = __import__("json").loads((out / "_stats" / "00000.json").read_text())
    assert {c.name for c in schemas.load("shard_stats").columns if c.required} <= set(stats)
    manifest = __import__("json").loads((out / "_stage.json").read_text())
    assert {c.name for c in schemas.load("stage_manifest").columns if c.required} <= set(manifest)


def test_same_layout_fields_and_images_as_img2dataset_itself(server, photos, tmp_path):
    """img2dataset's own download of the same input is the reference for the output contract: file names,
    sidecar columns and their types, per-sample JSON fields, stats fields, and per URL the status and sha256."""
    import json
    import os
    import tarfile

    inputs = _many_shards(server, photos, tmp_path / "in", n_shards=1, per_shard=5)
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    script = (
        "import sys\nfrom img2dataset import download\n"
        "download(url_list=sys.argv[1], input_format='parquet', url_col='url', caption_col='caption',"
        " output_format='webdataset', output_folder=sys.argv[2], processes_count=1, thread_count=4,"
        " image_size=512, resize_mode='keep_ratio', resize_only_if_bigger=True, compute_hash='sha256',"
        " extract_exif=True, enable_wandb=False, number_sample_per_shard=1000, timeout=5, retries=0)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # img2dataset's wandb import makes temp folders
    subprocess.run([sys.executable, "-c", script, str(inputs / "000.parquet"), str(theirs)], check=True,
                   capture_output=True, timeout=300, env=env)
    run_download(inputs, ours, "--allow-private-network", "--timeout", "5")

    assert {"00000.tar", "00000.parquet", "00000_stats.json"} <= {p.name for p in ours.iterdir()}
    assert {p.name for p in theirs.iterdir() if p.name.startswith("0")} == {"00000.tar", "00000.parquet",
                                                                           "00000_stats.json"}
    t_schema, o_schema = pq.read_schema(theirs / "00000.parquet"), pq.read_schema(ours / "00000.parquet")
    for field in t_schema:
        assert o_schema.field(field.name).type == field.type, field.name
    by_url = {}
    for side, root in (("theirs", theirs), ("ours", ours)):
        for r in pq.read_table(root / "00000.parquet").to_pylist():
            by_url.setdefault(r["url"], {})[side] = (r["status"], r["sha256"])
    assert len(by_url) == 6 and all(v["theirs"] == v["ours"] for v in by_url.values()), by_url
    assert sum(v["ours"][0] == "success" for v in by_url.values()) == 5

    def sample_json(root: Path) -> dict:
        with tarfile.open(root / "00000.tar") as tar:
            name = next(n for n in tar.getnames() if n.endswith(".json"))
            return json.load(tar.extractfile(name))

    assert set(sample_json(theirs)) <= set(sample_json(ours))
    stats = [json.loads((root / "00000_stats.json").read_text()) for root in (theirs, ours)]
    assert set(stats[0]) == set(stats[1])
    assert [(s["count"], s["successes"], s["failed_to_download"]) for s in stats] == [(6, 5, 1)] * 2
