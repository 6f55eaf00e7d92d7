"""Which URLs curate will fetch, enforced twice: before download and at connect time; and how long a fetch may take.

A URL list is untrusted input. Only http and https are fetched. Hosts that are, or resolve to, loopback,
private, link-local (169.254.0.0/16: cloud metadata), multicast, reserved or unspecified addresses are refused
unless `allow_private` is set; link-local and unspecified addresses are refused even then. The connect-time
check runs on every connection urllib opens, so redirects and DNS names that point inside the network are caught
too, not just the literal URLs of the list; and the connection goes to the address that was checked (the name is
resolved once), so a DNS answer that changes between the check and the connect (rebinding) cannot move it.

`timeout` is a total deadline per request, redirects included: connect, TLS handshake, status line, headers and
body. A socket timeout alone bounds each read, so a server trickling one byte a second would hold a request (and
its shard) for as long as it likes; a watchdog thread shuts down the socket of a request past its deadline, and
the request fails as `timeout`.
"""

from __future__ import annotations

import functools
import heapq
import http.client
import ipaddress
import itertools
import socket
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("http", "https")
PREFIX = "curate:"


def reject_message(reason: str, detail: str) -> str:
    """The error string the downloader carries for a curate decision (parsed back by `reason_of`)."""
    return f"{PREFIX}{reason}: {detail}"


def _addr(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def ip_always_blocked(ip: str) -> bool:
    """Link-local (169.254.0.0/16, fe80::/10: where cloud metadata services live) and unspecified addresses
    are never an image host: refused even with `allow_private`."""
    addr = _addr(ip)
    return addr.is_link_local or addr.is_unspecified or addr.is_multicast


def ip_blocked(ip: str) -> bool:
    addr = _addr(ip)
    return (
        addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
        or addr.is_reserved or addr.is_unspecified or not addr.is_global
    )


def check_url(url: object, allow_private: bool) -> tuple[str, str] | None:
    """(reason, detail) when `url` must not be fetched, None when it may be (DNS is checked at connect time)."""
    if url is None or (isinstance(url, str) and not url.strip()):
        return "missing_url", "the url is null or empty"
    if not isinstance(url, str):
        return "invalid_url", f"not a string: {type(url).__name__}"
    if any(ord(c) < 32 for c in url) or " " in url.strip():
        return "invalid_url", "control characters or spaces in the url"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as err:
        return "invalid_url", str(err)
    scheme = parts.scheme.lower()
    if not scheme:
        return "unsupported_scheme", "no scheme (a bare path is never read)"
    if scheme not in ALLOWED_SCHEMES:
        return "unsupported_scheme", f"{scheme}:// is not fetched (only http and https)"
    host = parts.hostname
    if not host:
        return "invalid_url", "no host"
    if port == 0:
        return "invalid_url", "port 0"
    try:
        if ip_always_blocked(host):
            what = "unspecified" if _addr(host).is_unspecified else (
                "multicast" if _addr(host).is_multicast else "link-local (cloud metadata range)")
            return "blocked_network", f"{host} is {what} and never fetched"
    except ValueError:
        pass
    if allow_private:
        return None
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return "blocked_network", f"{host} is loopback"
    try:
        blocked = ip_blocked(host)
    except ValueError:
        return None  # a name: resolved and checked when the connection opens
    if blocked:
        return "blocked_network", f"{host} is not a public address"
    return None


class _Watchdog:
    """One thread that shuts down the sockets of requests past their deadline (earliest first). Sockets are held
    weakly: a closed or collected one is skipped (a closed socket's descriptor is -1, so a reused descriptor
    is never touched)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref]] = []
        self._cv = threading.Condition()
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> None:
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._count), weakref.ref(sock)))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="curate-deadlines", daemon=True)
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                deadline, _, ref = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
            sock = ref()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed: the request finished in time


WATCHDOG = _Watchdog()


def _timeout_error(deadline_s: float | None) -> TimeoutError:
    what = f"over {deadline_s:g} s" if deadline_s else "past its deadline"
    return TimeoutError(reject_message("timeout", f"the request took {what} (--timeout is a total deadline)"))


class _GuardMixin:
    allow_private: bool = False
    deadline: float | None = None  # time.monotonic() by which the whole request must be done
    budget: float | None = None  # the --timeout it came from, for messages

    def _guarded_connection(self, address: tuple[str, int], timeout: object = socket._GLOBAL_DEFAULT_TIMEOUT,
                            source_address: tuple[str, int] | None = None) -> socket.socket:
        """socket.create_connection, but the name is resolved once, every address is checked, and the socket
        connects to a checked address (never the name again: a rebinding DNS cannot swap the address)."""
        host, port = address
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as err:
            raise OSError(f"cannot resolve {host}: {err}") from None
        for info in infos:
            ip = str(info[4][0])
            if ip_always_blocked(ip) or (not self.allow_private and ip_blocked(ip)):
                raise urllib.error.URLError(reject_message("blocked_network", f"{host} resolves to {ip}"))
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in infos:
            per_op = timeout if isinstance(timeout, (int, float)) else None
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise _timeout_error(self.budget)
                per_op = left if per_op is None else min(per_op, left)
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(per_op)
                if source_address:
                    sock.bind(source_address)
                if self.deadline is not None:
                    WATCHDOG.watch(sock, self.deadline)
                sock.connect(sockaddr)
                if isinstance(timeout, (int, float)):
                    sock.settimeout(timeout)
                return sock
            except OSError as err:
                error = err
                sock.close()
        raise error or OSError(f"cannot connect to {host}")

    def getresponse(self) -> http.client.HTTPResponse:
        try:
            return super().getresponse()  # type: ignore[misc]
        except (OSError, http.client.HTTPException):
            if self.deadline is not None and time.monotonic() >= self.deadline - 0.05:
                raise _timeout_error(self.budget) from None  # the watchdog cut a slow status line or headers
            raise


class GuardedHTTPConnection(_GuardMixin, http.client.HTTPConnection):
    def __init__(self, *args: object, allow_private: bool = False, deadline: float | None = None,
                 budget: float | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.allow_private, self.deadline, self.budget = allow_private, deadline, budget
        self._create_connection = self._guarded_connection


class GuardedHTTPSConnection(_GuardMixin, http.client.HTTPSConnection):
    def __init__(self, *args: object, allow_private: bool = False, deadline: float | None = None,
                 budget: float | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.allow_private, self.deadline, self.budget = allow_private, deadline, budget
        self._create_connection = self._guarded_connection

    def connect(self) -> None:
        """HTTPSConnection.connect with the handshake under the deadline too: TLS names the original host
        (server_hostname: SNI and the certificate check), the TCP socket goes to the checked address."""
        http.client.HTTPConnection.connect(self)
        server_hostname = getattr(self, "_tunnel_host", None) or self.host
        self.sock = self._context.wrap_socket(self.sock, server_hostname=server_hostname,
                                              do_handshake_on_connect=False)
        if self.deadline is not None:
            WATCHDOG.watch(self.sock, self.deadline)
        try:
            self.sock.do_handshake()
        except OSError:
            if self.deadline is not None and time.monotonic() >= self.deadline - 0.05:
                raise _timeout_error(self.budget) from None
            raise


def _deadline(req: urllib.request.Request) -> tuple[float | None, float | None]:
    """(deadline, budget) of a request: set at its first connection, carried over to its redirects."""
    if getattr(req, "curate_deadline", None) is None:
        timeout = getattr(req, "timeout", None)
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            req.curate_deadline = time.monotonic() + timeout  # type: ignore[attr-defined]
            req.curate_budget = float(timeout)  # type: ignore[attr-defined]
        else:
            req.curate_deadline, req.curate_budget = None, None  # type: ignore[attr-defined]
    return req.curate_deadline, req.curate_budget  # type: ignore[attr-defined]


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self.allow_private = allow_private

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        deadline, budget = _deadline(req)
        conn = functools.partial(GuardedHTTPConnection, allow_private=self.allow_private, deadline=deadline,
                                 budget=budget)
        return self.do_open(conn, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self.allow_private = allow_private

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        deadline, budget = _deadline(req)
        conn = functools.partial(GuardedHTTPSConnection, allow_private=self.allow_private, deadline=deadline,
                                 budget=budget)
        return self.do_open(conn, req, context=self._context)


class _GuardedRedirectHandler(urllib.request.HTTPRedirectHandler):
    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self.allow_private = allow_private

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 (urllib's signature)
        verdict = check_url(newurl, self.allow_private)
        if verdict is not None:
            raise urllib.error.URLError(reject_message(verdict[0], f"redirect to {newurl}: {verdict[1]}"))
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:  # the redirect spends the same deadline
            new.curate_deadline, new.curate_budget = _deadline(req)
        return new


class _SizeLimitHandler(urllib.request.BaseHandler):
    """Refuse responses over `max_bytes`, by Content-Length and while reading (chunked responses); and a body
    the deadline cut short is a timeout, never a short image."""

    handler_order = 100

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def http_response(self, req, response):  # noqa: ANN001, ANN201 (urllib's signature)
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise urllib.error.URLError(reject_message("too_large", f"Content-Length {length} > {self.max_bytes} bytes"))
        original = response.read
        limit = self.max_bytes
        deadline, budget = _deadline(req)

        def timed(read: Callable[[], bytes]) -> bytes:
            try:
                data = read()
            except (OSError, http.client.HTTPException):
                if deadline is not None and time.monotonic() >= deadline - 0.05:
                    raise urllib.error.URLError(_timeout_error(budget)) from None
                raise
            if deadline is not None and time.monotonic() >= deadline - 0.05:
                raise urllib.error.URLError(_timeout_error(budget))  # what came before the cut is not the image
            return data

        def bounded_read(amt: int | None = None) -> bytes:
            if amt is not None:
                return timed(lambda: original(amt))
            data = timed(lambda: original(limit + 1))
            if len(data) > limit:
                raise urllib.error.URLError(reject_message("too_large", f"response over {limit} bytes"))
            return data

        response.read = bounded_read
        return response

    https_response = http_response


def install_guarded_opener(allow_private: bool, max_bytes: int) -> None:
    """Make every `urllib.request.urlopen` of this process (img2dataset's downloader uses it) go through the guards."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({}),  # direct connections only: a proxy would hide the real peer address
        urllib.request.UnknownHandler(),
        _GuardedHTTPHandler(allow_private),
        _GuardedHTTPSHandler(allow_private),
        urllib.request.HTTPDefaultErrorHandler(),
        _GuardedRedirectHandler(allow_private),
        urllib.request.HTTPErrorProcessor(),
        _SizeLimitHandler(max_bytes),
    ):
        opener.add_handler(handler)
    urllib.request.install_opener(opener)
