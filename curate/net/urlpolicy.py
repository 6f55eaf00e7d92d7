"""Which URLs curate will fetch, enforced twice: before download and at connect time.

A URL list is untrusted input. Only http and https are fetched. Hosts that are, or resolve to, loopback,
private, link-local (169.254.0.0/16: cloud metadata), multicast, reserved or unspecified addresses are refused
unless `allow_private` is set; link-local addresses are refused even then. The connect-time check runs on every connection urllib opens, so redirects and
DNS names that point inside the network are caught too, not just the literal URLs of the list.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import urllib.error
import urllib.request
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
            return "blocked_network", f"{host} is link-local (cloud metadata range) and never fetched"
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


class _GuardMixin:
    allow_private: bool = False

    def connect(self) -> None:
        host = getattr(self, "_tunnel_host", None) or self.host
        try:
            infos = socket.getaddrinfo(host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as err:
            raise OSError(f"cannot resolve {host}: {err}") from None
        for info in infos:
            ip = str(info[4][0])
            if ip_always_blocked(ip) or (not self.allow_private and ip_blocked(ip)):
                raise urllib.error.URLError(reject_message("blocked_network", f"{host} resolves to {ip}"))
        super().connect()  # type: ignore[misc]


class GuardedHTTPConnection(_GuardMixin, http.client.HTTPConnection):
    def __init__(self, *args: object, allow_private: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.allow_private = allow_private


class GuardedHTTPSConnection(_GuardMixin, http.client.HTTPSConnection):
    def __init__(self, *args: object, allow_private: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.allow_private = allow_private


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self._conn = functools.partial(GuardedHTTPConnection, allow_private=allow_private)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._conn, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self._conn = functools.partial(GuardedHTTPSConnection, allow_private=allow_private)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._conn, req, context=self._context)


class _GuardedRedirectHandler(urllib.request.HTTPRedirectHandler):
    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self.allow_private = allow_private

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 (urllib's signature)
        verdict = check_url(newurl, self.allow_private)
        if verdict is not None:
            raise urllib.error.URLError(reject_message(verdict[0], f"redirect to {newurl}: {verdict[1]}"))
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _SizeLimitHandler(urllib.request.BaseHandler):
    """Refuse responses over `max_bytes`, by Content-Length and while reading (chunked responses)."""

    handler_order = 100

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def http_response(self, req, response):  # noqa: ANN001, ANN201 (urllib's signature)
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise urllib.error.URLError(reject_message("too_large", f"Content-Length {length} > {self.max_bytes} bytes"))
        original = response.read
        limit = self.max_bytes

        def bounded_read(amt: int | None = None) -> bytes:
            if amt is not None:
                return original(amt)
            data = original(limit + 1)
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
