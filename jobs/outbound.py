"""The one guard every outbound request passes: source URLs, job types, webhooks.

A URL may be fetched only if its host is in BATCHSITE_OUTBOUND_ALLOWED_HOSTS (and its port
in BATCHSITE_OUTBOUND_ALLOWED_PORTS, when that is set); and unless the allow-list names
the host itself (not a wildcard), every address it resolves to must be public: loopback,
private, link-local and reserved addresses are refused, and so are IPv6 addresses that
carry one of those inside them (IPv4-mapped and -compatible, NAT64, 6to4, Teredo).

The check is made where the connection is made: `Client`'s transport resolves the name
once, checks the addresses and connects to the one it checked, while TLS and the Host
header still use the name. A name that answers a public address to the check and a
private one to a second lookup (DNS rebinding) cannot slip through. Proxy variables from
the environment are ignored; BATCHSITE_OUTBOUND_PROXY names a proxy when one is wanted.

Every transfer runs against a deadline (`deadline`): each socket operation waits at most
until it, so a peer that sends one byte a second cannot hold a worker past its limit.
Redirects are followed by hand, each hop checked again. `download` adds a size and a
time limit to a GET, for whatever fetches a whole file (source URLs, image origins).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx
from django.conf import settings

MAX_REDIRECTS = 5
DOWNLOAD_BLOCK = 256 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
# IPv6 ranges that carry an IPv4 address in their last 32 bits (Teredo and 6to4 aside,
# which the ipaddress module decodes): IPv4-compatible, NAT64 well-known and local-use.
IPV4_IN_LAST_32_BITS = (
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)


class OutboundRefused(ValueError):
    """The URL may not be fetched; the message says why."""


class DownloadFailed(Exception):
    """A download did not complete; the message says why, `status` is the HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class DownloadTooLarge(DownloadFailed):
    """The body is bigger than the download may be."""


# --- the rules ------------------------------------------------------------------------------------


def _allowed_hosts() -> list[str]:
    return [host.lower() for host in settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS]


def _host_allowed(host: str) -> tuple[bool, bool]:
    """Return (allowed, named explicitly) for a host against the allow-list."""
    host = host.lower().rstrip(".")
    for entry in _allowed_hosts():
        if entry == host:
            return True, True
        if entry == "*" or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True, False
    return False, False


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Return the IPv4 addresses an IPv6 address carries (and would reach through a gateway)."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    if any(ip in network for network in IPV4_IN_LAST_32_BITS):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def is_public(address: str) -> bool:
    """Say whether `address` (IPv4 or IPv6, no zone) is a public unicast address."""
    ip = ipaddress.ip_address(address)
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local:
            return False
        return all(inner.is_global and not inner.is_multicast for inner in _embedded_ipv4(ip))
    return True


def _port_of(scheme: str, port: int | None) -> int:
    return port if port is not None else DEFAULT_PORTS[scheme]


def _check_port(port: int) -> None:
    allowed = settings.BATCHSITE_OUTBOUND_ALLOWED_PORTS
    if allowed and port not in allowed:
        ports = ", ".join(str(p) for p in sorted(allowed))
        raise OutboundRefused(f"port {port} is not in BATCHSITE_OUTBOUND_ALLOWED_PORTS ({ports})")


def _resolve(host: str, port: int) -> list[str]:
    """Return the addresses `host` resolves to, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundRefused(f"host {host!r} does not resolve: {exc}") from exc
    addresses = []
    for info in infos:
        address = str(info[4][0]).partition("%")[0]
        if address not in addresses:
            addresses.append(address)
    return addresses


def _checked_addresses(host: str, port: int) -> list[str]:
    """Resolve `host` and return its addresses; refuse it if one may not be reached."""
    addresses = _resolve(host, port)
    if _host_allowed(host)[1]:
        return addresses
    for address in addresses:
        if not is_public(address):
            raise OutboundRefused(
                f"host {host!r} resolves to {address}, a non-public address; "
                "name the host itself in BATCHSITE_OUTBOUND_ALLOWED_HOSTS to allow it"
            )
    return addresses


def check_url(url: str, *, resolve: bool = True) -> None:
    """Raise OutboundRefused unless `url` may be fetched now.

    With `resolve`, a host the allow-list admits by wildcard is looked up and its addresses
    checked too; `Client` checks them again at every connection, where it counts.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(f"only http and https URLs can be fetched, not {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise OutboundRefused("the URL has no host")
    try:
        port = _port_of(parts.scheme, parts.port)
    except ValueError as exc:
        raise OutboundRefused(f"the URL has a bad port: {exc}") from exc
    allowed, explicit = _host_allowed(host)
    if not allowed:
        raise OutboundRefused(f"host {host!r} is not in BATCHSITE_OUTBOUND_ALLOWED_HOSTS")
    _check_port(port)
    if resolve and not explicit:
        _checked_addresses(host, port)


# --- deadlines ------------------------------------------------------------------------------------

_deadline: ContextVar[float | None] = ContextVar("outbound_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """End every transfer started inside the block `seconds` from now, whatever the peer sends.

    A deadline already in force that falls sooner stays in force.
    """
    end = time.monotonic() + seconds
    current = _deadline.get()
    token = _deadline.set(end if current is None else min(current, end))
    try:
        yield
    finally:
        _deadline.reset(token)


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """Return `timeout` cut to what is left of the deadline; raise `error` if nothing is."""
    end = _deadline.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the transfer reached its time limit")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Open connections to addresses the guard checked, never to a second lookup's answer."""

    def __init__(self, *, check_addresses: bool):
        self._check_addresses = check_addresses
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        # Through a proxy the connection goes to the proxy the operator configured.
        addresses = _checked_addresses(host, port) if self._check_addresses else [host]
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = self._sockets.connect_tcp(
                    address, port, _bounded(timeout, httpcore.ConnectTimeout), local_address,
                    socket_options,
                )  # fmt: skip
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return _DeadlineStream(stream)
        raise failure or httpcore.ConnectError(f"host {host!r} has no address")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise OutboundRefused("outbound requests never use Unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over an httpcore pool that connects through `_GuardedBackend`."""

    def __init__(self, *, verify: Any, proxy: str | None):
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        common: dict[str, Any] = {
            "ssl_context": httpx.create_ssl_context(verify=verify, trust_env=False),
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
            "network_backend": _GuardedBackend(check_addresses=proxy is None),
        }
        # httpx's own __init__ takes no network backend: its pool is made here instead.
        if proxy is None:
            self._pool = httpcore.ConnectionPool(**common)
        else:
            url = httpx.URL(proxy)
            self._pool = httpcore.HTTPProxy(
                proxy_url=httpcore.URL(
                    scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
                ),
                **common,
            )


class Client(httpx.Client):
    """An httpx client whose connections go only where the guard allows, by the deadline.

    Environment proxy variables, .netrc and SSL_CERT_FILE are ignored (`trust_env` off):
    outbound traffic goes where the settings say, through BATCHSITE_OUTBOUND_PROXY if set.
    httpx never follows redirects here; `fetch` does, checking each hop.
    """

    def __init__(self, *, verify: Any = True, **kwargs: Any):
        proxy = settings.BATCHSITE_OUTBOUND_PROXY or None
        kwargs["follow_redirects"] = False
        transport = _GuardedTransport(verify=verify, proxy=proxy)
        super().__init__(transport=transport, trust_env=False, **kwargs)
        # Through a proxy the proxy connects; `fetch` then checks addresses before each hop.
        self.checks_addresses = proxy is None


def url_problem(url: Any, *, max_length: int) -> str:
    """Say why `url` cannot be fetched now, or return "" if it can."""
    if not isinstance(url, str) or not url:
        return "must be a non-empty string"
    if len(url) > max_length:
        return f"must be at most {max_length} characters"
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        return f"is not a valid URL: {exc}"
    try:
        check_url(url)
    except OutboundRefused as exc:
        return str(exc)
    return ""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port


@contextmanager
def fetch(
    client: httpx.Client, method: str, url: str, *, follow_redirects: bool = True, **kwargs: Any
) -> Iterator[httpx.Response]:
    """Send a request through the guard, following redirects hop by hop; yield the response.

    Without `follow_redirects` a redirect is yielded like any other answer. The response is
    streamed: read it with `iter_bytes()` inside the `with` block. Give a `Client`: it
    checks the addresses it connects to; any other client gets a lookup-time check only.
    """
    resolve = not getattr(client, "checks_addresses", False)
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url, resolve=resolve)
        request = client.build_request(method, url, **kwargs)
        response = client.send(request, stream=True, follow_redirects=False)
        if not (follow_redirects and response.has_redirect_location):
            try:
                yield response
            finally:
                response.close()
            return
        location = response.headers.get("location", "")
        response.close()
        previous, url = url, urljoin(str(response.url), location)
        if response.status_code in (301, 302, 303):
            method, kwargs = "GET", {k: v for k, v in kwargs.items() if k == "headers"}
        if _origin(previous) != _origin(url) and kwargs.get("headers"):
            # As browsers and httpx do: credentials never follow a redirect to another host.
            kwargs["headers"] = {
                name: value
                for name, value in dict(kwargs["headers"]).items()
                if name.lower() not in ("authorization", "cookie")
            }
    raise OutboundRefused(f"more than {MAX_REDIRECTS} redirects")


def download(
    client: httpx.Client, url: str, into: IO[bytes], *, max_bytes: int, timeout: float, what: str
) -> str:
    """GET `url` through the guard and write its body to `into`; return its Content-Type.

    Anything but a 200 or a body over `max_bytes` (declared or counted) raises
    DownloadFailed (DownloadTooLarge for size), its message naming the file as `what`
    ("the source"). The whole transfer, redirects included, ends within `timeout` seconds:
    past it httpx.TimeoutException is raised. OutboundRefused and httpx's errors pass through.
    """
    with deadline(timeout), fetch(client, "GET", url) as response:
        if response.status_code != 200:
            raise DownloadFailed(
                f"{what} answered HTTP {response.status_code}", status=response.status_code
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise DownloadTooLarge(f"{what} is {declared} bytes; the limit is {max_bytes}")
        received = 0
        for block in response.iter_bytes(DOWNLOAD_BLOCK):
            received += len(block)
            if received > max_bytes:
                raise DownloadTooLarge(f"{what} is more than {max_bytes} bytes")
            into.write(block)
        content_type: str = response.headers.get("content-type", "")
        return content_type
