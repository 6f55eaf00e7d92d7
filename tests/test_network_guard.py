"""The address that was checked is the one connected, and `--timeout` is a total deadline. All traffic stays on
loopback: 127.0.0.2 plays the "public" address a rebinding resolver answers first, 127.0.0.1 the private one it
answers next, where a server holds a secret."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.net import urlpolicy
from curate.stages import download
from tests.conftest import jpeg

SECRET = b"loopback-only secret"


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(handler: type[socketserver.BaseRequestHandler]) -> tuple[_Server, int]:
    srv = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


class SecretHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(SECRET), SECRET))


def trickler(head: bytes, body: bytes, delay: float, stop: threading.Event) -> type[socketserver.BaseRequestHandler]:
    """A server that sends `head` and then `body` one byte every `delay` seconds (head too when body is empty)."""

    class Trickle(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            try:
                slow = head if not body else body
                if body:
                    self.wfile.write(head)
                for b in slow:
                    if stop.is_set():
                        return
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(delay)
            except OSError:
                pass  # the client hung up: what the deadline is for

    return Trickle


@pytest.fixture
def rebinding_dns(monkeypatch) -> Iterator[list[str]]:
    """`rebind.test` resolves to 127.0.0.2 (treated as public) the first time, 127.0.0.1 after; every lookup is
    logged."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def fake(host, port, *args, **kwargs):  # noqa: ANN001, ANN202
        if host == "rebind.test":
            ip = "127.0.0.2" if not lookups else "127.0.0.1"
            lookups.append(ip)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    real_blocked = urlpolicy.ip_blocked
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    monkeypatch.setattr(urlpolicy, "ip_blocked", lambda ip: False if ip == "127.0.0.2" else real_blocked(ip))
    yield lookups


def test_a_rebinding_resolver_cannot_move_the_connection_to_a_private_address(rebinding_dns):
    srv, port = serve(SecretHandler)
    try:
        urlpolicy.install_guarded_opener(False, 10**6)
        with pytest.raises(urllib.error.URLError) as err:  # 127.0.0.2 was checked, so 127.0.0.2 is connected:
            urllib.request.urlopen(f"http://rebind.test:{port}/secret.jpg", timeout=5).read()  # nothing listens
        assert "refused" in str(err.value).lower()
        assert rebinding_dns == ["127.0.0.2"]  # resolved once: the check's answer is the connection's
    finally:
        srv.shutdown()
        srv.server_close()


def test_download_refuses_a_rebinding_host_and_accounts_for_the_row(rebinding_dns, tmp_path):
    srv, port = serve(SecretHandler)
    try:
        (tmp_path / "in").mkdir()
        pq.write_table(pa.Table.from_pylist([{"url": f"http://rebind.test:{port}/s.jpg", "caption": "x"}]),
                       tmp_path / "in" / "0.parquet")
        summary = download.run(download.Options(inputs=(str(tmp_path / "in"),), output=str(tmp_path / "out"),
                                                timeout=5, progress=False))
        assert summary["rows_out"] == 0 and summary["rows_rejected"] == 1
        rejects = pq.read_table(tmp_path / "out" / "rejects" / "00000.parquet").to_pylist()
        assert rejects[0]["reason"] == "network_error" and "refused" in rejects[0]["detail"].lower()
        assert not any(SECRET in p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickling_server_is_cut_at_the_total_deadline(where):
    stop = threading.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n"
    body = b"x" * 5000 if where == "body" else b""
    srv, port = serve(trickler(head, body, 0.2, stop))  # one byte every 0.2 s: each read well under the timeout
    try:
        urlpolicy.install_guarded_opener(True, 10**6)
        start = time.monotonic()
        with pytest.raises(OSError) as err:  # URLError, or TimeoutError from the status line (urllib passes it on)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/x.jpg", timeout=2) as r:
                r.read()
        took = time.monotonic() - start
        assert 1.9 <= took < 3.5, took
        assert download.reason_of(str(err.value), "failed_to_download")[0] == "timeout"
    finally:
        stop.set()
        srv.shutdown()
        srv.server_close()


def test_a_redirect_spends_the_same_deadline():
    """Two hops of 1.2 s each under a 2 s deadline: the second is cut, the whole request stays near 2 s."""
    stop = threading.Event()

    class Slow(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline()
            time.sleep(1.2)
            if b"/hop" in line:
                self.wfile.write(b"HTTP/1.1 302 Found\r\nLocation: /end.jpg\r\nContent-Length: 0\r\n\r\n")
            else:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")

    srv, port = serve(Slow)
    try:
        urlpolicy.install_guarded_opener(True, 10**6)
        start = time.monotonic()
        with pytest.raises(OSError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/hop", timeout=2).read()
        assert time.monotonic() - start < 3.0
        assert download.reason_of(str(err.value), "failed_to_download")[0] == "timeout"
    finally:
        stop.set()
        srv.shutdown()
        srv.server_close()


def test_download_with_a_slow_server_rejects_as_timeout_within_the_deadline(server, photos, tmp_path):
    stop = threading.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
    srv, port = serve(trickler(head, b"\xff" * 100000, 0.1, stop))  # an endless trickle, for this test's purposes
    try:
        good = server.put("good.jpg", jpeg(photos[0][1]))
        (tmp_path / "in").mkdir()
        pq.write_table(pa.Table.from_pylist([{"url": f"http://127.0.0.1:{port}/a.jpg", "caption": "slow"},
                                             {"url": good, "caption": "good"}]), tmp_path / "in" / "0.parquet")
        start = time.monotonic()
        summary = download.run(download.Options(inputs=(str(tmp_path / "in"),), output=str(tmp_path / "out"),
                                                timeout=2, allow_private_network=True, progress=False))
        assert time.monotonic() - start < 15
        assert summary["rows_out"] == 1 and summary["reasons"] == {"timeout": 1}
    finally:
        stop.set()
        srv.shutdown()
        srv.server_close()


def test_unspecified_address_is_named_as_such():
    assert urlpolicy.check_url("http://0.0.0.0/x.jpg", True) == ("blocked_network", "0.0.0.0 is unspecified and never fetched")
    assert "link-local" in urlpolicy.check_url("http://169.254.169.254/latest", True)[1]
