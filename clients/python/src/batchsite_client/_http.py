"""What the client's requests share: URLs, the API key's scope, and when to retry."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

#: Statuses that mean "not now": the request was not acted on, so sending it again is safe.
RETRY_STATUSES = frozenset({429, 503})


def api_root(base_url: str) -> httpx.URL:
    """Return the API's root URL (ending in /api/v1/) for a server's URL or the API's own."""
    url = httpx.URL(base_url.rstrip("/") + "/")
    if not url.path.rstrip("/").endswith("/api/v1"):
        url = url.join("api/v1/")
    return url


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Say whether two URLs have the same scheme, host and port (the API key's scope)."""
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return the seconds a Retry-After header asks to wait (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff(attempt: int, factor: float, cap: float = 30.0) -> float:
    """Return the wait before retry number `attempt` (0-based) when the server named none."""
    return float(min(cap, factor * (2**attempt)))


def query_of(url: str) -> dict[str, Any]:
    """Return the query parameters of a `next` link, repeated ones as lists."""
    params: dict[str, Any] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name in params:
            earlier = params[name]
            params[name] = [*earlier, value] if isinstance(earlier, list) else [earlier, value]
        else:
            params[name] = value
    return params


def clean_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Drop parameters that are None, so that callers can pass every filter as a keyword."""
    return {name: value for name, value in (params or {}).items() if value is not None}


def sleep(seconds: float) -> None:
    """Wait `seconds` (a function of its own so that a subclass can wait differently)."""
    if seconds > 0:
        time.sleep(seconds)
