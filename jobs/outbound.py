"""The one guard every outbound request passes: source URLs, job types, webhooks.

A URL may be fetched only if its host is in BATCHSITE_OUTBOUND_ALLOWED_HOSTS; and unless
the allow-list names the host itself (not a wildcard), every address it resolves to must
be public: loopback, private, link-local and reserved addresses are refused after DNS
resolution, so a name that points inside the network cannot be used to reach it.
Redirects are followed by hand, each hop checked again. `download` adds a size and a
time limit to a GET, for whatever fetches a whole file (source URLs, image origins).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import httpx
from django.conf import settings

MAX_REDIRECTS = 5
DOWNLOAD_BLOCK = 256 * 1024


class OutboundRefused(ValueError):
    """The URL may not be fetched; the message says why."""


class DownloadFailed(Exception):
    """A download did not complete; the message says why, `status` is the HTTP status if any."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class DownloadTooLarge(DownloadFailed):
    """The body is bigger than the download may be."""


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


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> None:
    """Raise OutboundRefused unless `url` may be fetched now."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(f"only http and https URLs can be fetched, not {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise OutboundRefused("the URL has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"the URL has a bad port: {exc}") from exc
    allowed, explicit = _host_allowed(host)
    if not allowed:
        raise OutboundRefused(f"host {host!r} is not in BATCHSITE_OUTBOUND_ALLOWED_HOSTS")
    if explicit:
        return
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundRefused(f"host {host!r} does not resolve: {exc}") from exc
    for info in infos:
        address = info[4][0]
        if not _is_public(address):
            raise OutboundRefused(
                f"host {host!r} resolves to {address}, a non-public address; "
                "name the host itself in BATCHSITE_OUTBOUND_ALLOWED_HOSTS to allow it"
            )


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
def fetch(client: httpx.Client, method: str, url: str, **kwargs) -> Iterator[httpx.Response]:
    """Send a request through the guard, following redirects hop by hop; yield the response.

    The response is streamed: read it with `iter_bytes()` inside the `with` block.
    """
    for _ in range(MAX_REDIRECTS + 1):
        check_url(url)
        request = client.build_request(method, url, **kwargs)
        response = client.send(request, stream=True, follow_redirects=False)
        if not response.has_redirect_location:
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

    Anything but a 200, a body over `max_bytes` (declared or counted) or a transfer longer
    than `timeout` seconds raises DownloadFailed (DownloadTooLarge for size), its message
    naming the file as `what` ("the source"); OutboundRefused and httpx's errors pass through.
    """
    deadline = time.monotonic() + timeout
    with fetch(client, "GET", url) as response:
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
            if time.monotonic() > deadline:
                raise DownloadFailed(f"the download took more than {timeout} seconds")
            into.write(block)
        return response.headers.get("content-type", "")
