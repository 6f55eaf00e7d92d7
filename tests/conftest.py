"""Shared fixtures: real photos, a local HTTP server with hostile endpoints, input shard writers."""

from __future__ import annotations

import io
import os
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.sample.photos import bundled_photos
from curate.sample.server import QuietHandler, make_server, serve_in_thread

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("NLTK_DATA", str(REPO / ".data" / "nltk_data"))


class HostileHandler(QuietHandler):
    """Static files, plus /slow/NAME (sleeps past any test timeout) and /redirect/URL-ENCODED (302)."""

    delay = 0.0

    def do_GET(self) -> None:  # noqa: N802 (stdlib's name)
        if self.server.delay:  # type: ignore[attr-defined]
            time.sleep(self.server.delay)  # type: ignore[attr-defined]
        if self.path.startswith("/slow/"):
            time.sleep(8)  # well past the tests' download timeout (3 s), even on a loaded machine
            self.path = "/" + self.path[len("/slow/") :]
        elif self.path.startswith("/redirect/"):
            target = urllib.parse.unquote(self.path[len("/redirect/") :])
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        super().do_GET()


REAL_LAION = Path(__file__).resolve().parents[2] / "shared" / "data" / "laion_captions_1k.parquet"


def real_laion(columns: list[str] | None = None) -> pa.Table:
    """The 1,000 real LAION captions of the project's shared/ folder, which sits beside the repository (it is not
    in it): one clear line when it is not there, rather than pyarrow's FileNotFoundError."""
    if not REAL_LAION.exists():
        pytest.fail(f"{REAL_LAION}: not there. These tests read the real LAION captions in the project's shared/ "
                    "folder, beside the repository (a clone elsewhere needs it linked as ../shared)", pytrace=False)
    return pq.read_table(REAL_LAION, columns=columns)


@pytest.fixture(scope="session")
def photos() -> list[tuple[str, Image.Image, str]]:
    """Real photos (scikit-image, scikit-learn) as (name, image, caption)."""
    return [(p.source_id.split("/")[1].split(".")[0], p.load(), p.caption) for p in bundled_photos()]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.httpd = make_server(str(root), handler=HostileHandler)
        self.httpd.delay = 0.0  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        serve_in_thread(self.httpd)

    def put(self, name: str, data: bytes) -> str:
        (self.root / name).write_bytes(data)
        return f"{self.base}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    srv = Server(root)
    yield srv
    srv.close()


def write_shard(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """`curate sample` -> download -> embed (effnet-lite0 and phash), once per test session."""
    from curate.config import SampleOptions
    from curate.sample.build import build_sample
    from curate.stages import download, embed

    root = tmp_path_factory.mktemp("sample_run")
    sample = root / "sample"
    sample.mkdir()
    httpd = make_server(str(sample))
    serve_in_thread(httpd)
    try:
        build_sample(SampleOptions(output=str(sample), seed=0, base_url=f"http://127.0.0.1:{httpd.server_address[1]}"))
        download.run(download.Options(inputs=tuple(str(p) for p in sorted((sample / "input").glob("*.parquet"))), output=str(root / "images"), allow_private_network=True, timeout=5, progress=False))
    finally:
        httpd.shutdown()
        httpd.server_close()
    embed.run(embed.Options(images=str(root / "images"), output=str(root / "emb"), text_model="minilm", progress=False))
    embed.run(embed.Options(images=str(root / "images"), output=str(root / "phash"), model="phash", progress=False))
    truth = {r["key"]: r for r in pq.read_table(sample / "truth.parquet").to_pylist()}
    return {"root": root, "sample": sample, "images": root / "images", "emb": root / "emb",
            "phash": root / "phash", "truth": truth}
