"""`curate embed`: real decoding, real weights (EfficientNet-Lite), open_clip, TorchScript, hashes, alignment."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from curate import schemas
from curate.cli import cli
from curate.errors import CurateError
from curate.models import load_image_model, load_text_model
from curate.models.hashes import hamming
from curate.sample.copies import TRANSFORMS
from curate.stages import embed
from tests.conftest import jpeg
from tests.test_download import png_bomb


def image_shard(path, samples: list[tuple[str, bytes | None, str]]) -> None:
    """An image shard in `--output-format parquet` form: key, input_row, url, caption, jpg bytes."""
    rows = [{"key": k, "input_row": i, "url": f"http://x/{k}", "caption": c, "jpg": b}
            for i, (k, b, c) in enumerate(samples)]
    schema = pa.schema([("key", pa.string()), ("input_row", pa.int64()), ("url", pa.string()),
                        ("caption", pa.string()), ("jpg", pa.binary())])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def load_run(out, i: int = 0):
    emb = np.load(out / "img_emb" / f"img_emb_{i:05d}.npy")
    meta = pq.read_table(out / "metadata" / f"metadata_{i:05d}.parquet").to_pylist()
    rej = pq.read_table(out / "rejects" / f"{i:05d}.parquet").to_pylist()
    return emb, meta, rej


def test_effnet_real_weights_put_a_copy_closer_than_another_photo(photos):
    model = load_image_model("effnet-lite0")
    assert model.runtime == "onnx"
    cat = dict((n, im) for n, im, _ in photos)["chelsea"]
    cup = dict((n, im) for n, im, _ in photos)["coffee"]
    rng = np.random.default_rng(0)
    copy, _ = TRANSFORMS["crop"](cat, rng)
    copy = Image.open(io.BytesIO(jpeg(copy, quality=30)))
    e = model.embed([model.preprocess(x.convert("RGB")) for x in (cat, copy, cup)])
    assert e.shape == (3, 1280)
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    assert e[0] @ e[1] > 0.75 > 0.3 > e[0] @ e[2]


def test_effnet_pad_keeps_the_whole_picture_at_its_own_size(photos):
    """--resize pad --size N: the long edge to N on a grey square, so a meme bar or a screenshot frame stays in
    view (crop cuts it); its own ONNX file per size; a meme of a photo stays nearer its photo than another
    photo (measured 0.74 vs 0.21; crop, which cuts most of the bar away, 0.83 vs 0.21)."""
    from curate.models.effnet import onnx_path
    from curate.sample.copies import TEMPLATE_TRANSFORMS

    pad, crop = load_image_model("effnet-lite0", resize="pad", size=256), load_image_model("effnet-lite0")
    tall = Image.new("RGB", (100, 300), "white")
    tall.paste((255, 0, 0), (0, 0, 100, 30))  # a red band across the top
    x, y = pad.preprocess(tall), crop.preprocess(tall)
    assert x.shape == (3, 256, 256) and y.shape == (3, 224, 224)
    assert abs(float(x[:, :, :20].mean())) < 0.01  # the side padding is grey: about 0 once normalised
    assert x[0, 5, 128] > 0.9 and x[1, 5, 128] < -0.9  # the red band is in the picture
    assert y[1, 5, 112] > 0.9  # crop kept only the white middle
    assert onnx_path("effnet-lite0", "avg", 256).exists() and onnx_path("effnet-lite0", "avg", 256) != onnx_path(
        "effnet-lite0", "avg")
    src = dict((n, im) for n, im, _ in photos)["astronaut"].convert("RGB")
    other = dict((n, im) for n, im, _ in photos)["coffee"].convert("RGB")
    meme = TEMPLATE_TRANSFORMS["meme"](src, np.random.default_rng(0))[0].convert("RGB")
    sims = {}
    for name, m in (("pad", pad), ("crop", crop)):
        e = m.embed([m.preprocess(im) for im in (src, meme, other)])
        sims[name] = (float(e[0] @ e[1]), float(e[0] @ e[2]))
        assert sims[name][0] > sims[name][1], (name, sims)
    assert np.allclose(np.linalg.norm(pad.embed([x]), axis=1), 1, atol=1e-4)


def test_onnx_runtime_matches_eager_torch(photos):
    onnx = load_image_model("effnet-lite0", runtime="onnx")
    eager = load_image_model("effnet-lite0", runtime="torch")
    batch = [onnx.preprocess(im.convert("RGB")) for _, im, _ in photos[:4]]
    assert np.abs(onnx.embed(batch) - eager.embed(batch)).max() < 1e-4


def test_stage_alignment_and_bad_images(photos, tmp_path):
    good = photos[:5]
    base = good[0][1].convert("RGB")
    cmyk = encoded(base.convert("CMYK"), "JPEG")
    sixteen = encoded(Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257), "PNG")
    palette = base.convert("P")
    palette.info["transparency"] = 0
    pal = encoded(palette, "PNG", transparency=0)
    data = jpeg(base)
    samples = [(n, jpeg(im), c) for n, im, c in good[:3]]
    samples += [("truncated", data[: len(data) // 3], "t"), ("zero", b"", "z"), ("cmyk", cmyk, "c"),
                ("bomb", png_bomb(20_000, 20_000), "b"), ("sixteen", sixteen, "s"), ("palette", pal, "p"),
                ("missing", None, "m"), ("html", b"<html>no</html>", "h")]
    samples += [(n, jpeg(im), c) for n, im, c in good[3:5]]
    image_shard(tmp_path / "images" / "images" / "00000.parquet", samples)
    out = tmp_path / "emb"
    summary = embed.run(embed.Options(images=str(tmp_path / "images"), output=str(out), batch_size=3, text_model="minilm", progress=False))
    emb, meta, rej = load_run(out)
    kept = [n for n, _, _ in good[:3]] + ["cmyk", "sixteen", "palette"] + [n for n, _, _ in good[3:5]]
    assert [m["key"] for m in meta] == kept
    assert {r["key"]: r["reason"] for r in rej} == {"truncated": "truncated", "zero": "empty_file",
                                                    "bomb": "decompression_bomb", "missing": "missing_image",
                                                    "html": "not_an_image"}
    assert summary["rows_in"] == len(samples) == len(meta) + len(rej)
    assert emb.dtype == np.float16 and emb.shape == (len(kept), 1280)
    # row k of the npy is the embedding of metadata row k: recompute each one directly
    model = load_image_model("effnet-lite0")
    by_key = {k: b for k, b, _ in samples}
    for k, m in enumerate(meta):
        img = Image.open(io.BytesIO(by_key[m["key"]]))
        from curate.io.images import to_rgb

        direct = model.embed([model.preprocess(to_rgb(img))])[0]
        assert float(direct @ emb[k].astype(np.float32)) > 0.99, m["key"]
    text = np.load(out / "text_emb" / "text_emb_00000.npy")
    assert text.shape == (len(kept), 384)
    minilm = load_text_model("minilm")
    direct = minilm.embed_text([meta[0]["caption"]])[0]
    assert float(direct @ text[0].astype(np.float32)) > 0.99
    schemas.validate(pq.read_schema(out / "metadata" / "metadata_00000.parquet"), "embeddings", source="metadata")
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["model"] == "effnet-lite0" and doc["dim"] == 1280 and doc["normalization"] == "l2"


def test_open_clip_random_and_checkpoint_round_trip(photos, tmp_path):
    random_model = load_image_model("open_clip:ViT-S-32/random")
    assert random_model.dim > 0
    ckpt = tmp_path / "vit_s_32.pt"
    torch.save(random_model.model.state_dict(), ckpt)
    loaded = load_image_model(f"open_clip:ViT-S-32/{ckpt}")
    batch = [random_model.preprocess(im.convert("RGB")) for _, im, _ in photos[:2]]
    assert np.abs(random_model.embed(batch) - loaded.embed(batch)).max() < 1e-5
    text = load_text_model("same", image_model=loaded)
    t = text.embed_text(["a cat", "a rocket"])
    assert t.shape == (2, loaded.dim) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-4)


def test_unavailable_weights_fail_fast_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(CurateError, match="local checkpoint"):
        load_image_model("open_clip:ViT-B-32/laion2b_s34b_b79k")
    assert time.time() - start < 30
    image_shard(tmp_path / "images" / "00000.parquet", [("a", b"", "c")])
    tmp_path = tmp_path / "images"
    result = CliRunner().invoke(cli, ["embed", str(tmp_path), str(tmp_path / "o"), "--model", "torchscript:/nope.pt"])
    assert result.exit_code == 2 and "Traceback" not in result.output and "no TorchScript file" in result.output
    result = CliRunner().invoke(cli, ["embed", str(tmp_path), str(tmp_path / "o"), "--model", "resnet9000"])
    assert result.exit_code == 2 and "unknown image model" in result.output


def test_torchscript_module_traced_saved_and_loaded(photos, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 16)).eval()
    path = tmp_path / "sscd_like.torchscript.pt"
    torch.jit.trace(net, torch.zeros(1, 3, 64, 64)).save(str(path))
    model = load_image_model(f"torchscript:{path}", resize="short", size=96)
    assert model.dim == 16
    imgs = [im.convert("RGB") for _, im, _ in photos[:3]]
    items = [model.preprocess(im) for im in imgs]
    assert min(items[0].shape[1:]) == 96  # short edge 288-style resizing keeps the aspect ratio
    got = model.embed(items)
    with torch.no_grad():
        for k, item in enumerate(items):
            ref = net(torch.from_numpy(item[None])).numpy()[0]
            assert np.allclose(got[k], ref / np.linalg.norm(ref), atol=1e-5)


def test_phash_of_a_resized_copy_is_within_a_few_bits(photos):
    model = load_image_model("phash")
    rocket = dict((n, im) for n, im, _ in photos)["rocket"].convert("RGB")
    coins = dict((n, im) for n, im, _ in photos)["coins"].convert("RGB")
    h = model.embed([model.preprocess(x) for x in (rocket, rocket.resize((320, 213)), coins)])
    assert h.dtype == np.uint8 and h.shape == (3, 8)
    assert hamming(h[0], h[1]) <= 4 < 20 <= hamming(h[0], h[2])


def test_embed_the_downloaded_sample_copies_near_their_sources(tmp_path):
    """download output -> embed: planted copies are nearer their source than unrelated photos on average."""
    from curate.config import SampleOptions
    from curate.sample.build import build_sample
    from curate.sample.server import make_server, serve_in_thread
    from curate.stages import download

    sample = tmp_path / "sample"
    sample.mkdir()
    httpd = make_server(str(sample))
    serve_in_thread(httpd)
    try:
        build_sample(SampleOptions(output=str(sample), seed=0, base_url=f"http://127.0.0.1:{httpd.server_address[1]}", bad_rows=False))
        download.run(download.Options(inputs=tuple(str(p) for p in sorted((sample / "input").glob("*.parquet"))), output=str(tmp_path / "images"), allow_private_network=True, progress=False))
    finally:
        httpd.shutdown()
        httpd.server_close()
    out = tmp_path / "emb"
    embed.run(embed.Options(images=str(tmp_path / "images"), output=str(out), workers=2, progress=False))
    emb = np.concatenate([np.load(p) for p in sorted((out / "img_emb").glob("*.npy"))]).astype(np.float32)
    keys = [r["key"] for p in sorted((out / "metadata").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    truth = {r["key"]: r["source_key"] for r in pq.read_table(sample / "truth.parquet").to_pylist()}
    sims = emb @ emb.T
    idx = {k: i for i, k in enumerate(keys)}
    copy_sims, other_sims = [], []
    for k, src in truth.items():
        if k == src:
            continue
        copy_sims.append(sims[idx[k], idx[src]])
        others = [sims[idx[k], idx[o]] for o, s in truth.items() if o == s and o != src]
        other_sims.append(max(others))
    assert np.mean(copy_sims) > 0.7 > 0.45 > np.mean(other_sims)
    assert np.mean(np.array(copy_sims) > np.array(other_sims)) >= 0.85


def test_model_threads_follow_omp_num_threads_then_the_cpus_this_process_may_use(monkeypatch):
    """ONNX Runtime reads neither OMP_NUM_THREADS (Dask's nanny sets 1 per worker) nor the process's affinity
    or cgroup quota; a pool sized to the host's CPUs in every worker starved a 2-worker cluster."""
    from curate.models.base import cpu_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads() == 1
    assert load_image_model("effnet-lite0").session.get_session_options().intra_op_num_threads == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= cpu_threads() <= len(os.sched_getaffinity(0))
    pinned = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                             "from curate.models.base import cpu_threads; print(cpu_threads())"],
                            capture_output=True, text=True, check=True, env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert pinned.stdout.strip() == "1"
