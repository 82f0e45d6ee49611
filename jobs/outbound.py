"""The one guard every outbound request passes: source URLs, job types, webhooks.

A URL may be fetched only if its host is in BATCHSITE_OUTBOUND_ALLOWED_HOSTS; and unless
the allow-list names the host itself (not a wildcard), every address it resolves to must
be public: loopback, private, link-local and reserved addresses are refused after DNS
resolution, so a name that points inside the network cannot be used to reach it.
Redirects are followed by hand, each hop checked again.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urljoin, urlsplit

import httpx
from django.conf import settings

MAX_REDIRECTS = 5


class OutboundRefused(ValueError):
    """The URL may not be fetched; the message says why."""


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
