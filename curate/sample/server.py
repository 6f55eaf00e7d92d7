"""A static file server on 127.0.0.1 for the sample's URLs (demo and tests); never binds a public address."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(SimpleHTTPRequestHandler):
    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts in tests): not an error
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        pass


def make_server(directory: str, host: str = "127.0.0.1", port: int = 0,
                handler: type[SimpleHTTPRequestHandler] = QuietHandler) -> ThreadingHTTPServer:
    """A threaded HTTP server for `directory` (port 0 picks a free port: read it from `server.server_address`)."""
    server = ThreadingHTTPServer((host, port), functools.partial(handler, directory=directory))
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="curate-sample-server", daemon=True)
    thread.start()
    return thread
