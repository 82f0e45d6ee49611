"""The `http.request` job type: one HTTP request per item, through the outbound guard.

Every request goes through `jobs.outbound.fetch`, so the allow-list and the public-address
rule apply after DNS resolution and again on every redirect hop.

Connections: a JobType instance is shared by every item a process runs, and the engine
gives job types no per-chunk hook, so this module keeps one `httpx.Client` per process,
created lazily and reused by every item (keep-alive connections and TLS sessions carry
over from item to item and chunk to chunk). It is keyed by `os.getpid()`: a worker forked
from a process that already had a client makes its own, because a connection pool (its
sockets and locks) must never be shared across a fork. httpx clients are thread-safe,
so threads of one process share the client. Next to it sits a bounded semaphore per host,
so one process never has more than BATCHSITE_HTTP_PER_HOST_CONCURRENCY requests in flight
to the same host.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import json
import os
import re
import threading
import time
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from jobs import outbound
from jobs.base import (
    JobContext,
    JobError,
    JobType,
    PayloadError,
    PermanentError,
    TransientError,
)
from jobs.payloads import json_path

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 60.0
MAX_URL_LENGTH = 8192
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_PER_HOST_CONCURRENCY = 4
READ_BLOCK = 64 * 1024
# How much of a failed response's body goes into the item's error message.
ERROR_SNIPPET = 200
USER_AGENT = "batchsite"

# Headers that frame the message or the connection are httpx's to write: set by a
# payload they could smuggle a second request or point the request at another virtual host.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
TEXT_TYPES = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/x-www-form-urlencoded",
        "application/xml",
    }
)


def _max_body_bytes() -> int:
    return getattr(settings, "BATCHSITE_HTTP_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)


def _per_host_concurrency() -> int:
    return getattr(settings, "BATCHSITE_HTTP_PER_HOST_CONCURRENCY", DEFAULT_PER_HOST_CONCURRENCY)


# --- per-process connections --------------------------------------------------------------------


class Connections:
    """One process's HTTP client and its per-host concurrency slots."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        # Each item's own `timeout` is the deadline of its whole request (`outbound.deadline`);
        # the client's is only the most any one step could wait.
        self.client = outbound.Client(timeout=MAX_TIMEOUT, headers={"User-Agent": USER_AGENT})
        self._slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def host_slot(self, host: str, limit: int) -> threading.BoundedSemaphore:
        """Return the semaphore that caps this process's requests in flight to `host`."""
        key = (host, limit)
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = threading.BoundedSemaphore(limit)
            return slot


_connections: dict[int, Connections] = {}
_connections_lock = threading.Lock()


def connections() -> Connections:
    """Return this process's Connections, creating them on first use (and after a fork)."""
    pid = os.getpid()
    current = _connections.get(pid)
    if current is not None:
        return current
    with _connections_lock:
        current = _connections.get(pid)
        if current is None:
            # Whatever the parent left here belongs to the parent: drop it, never close it
            # (closing would shut connections the parent still uses).
            _connections.clear()
            current = _connections[pid] = Connections()
        return current


def _after_fork_in_child() -> None:
    global _connections_lock
    # A lock held by another thread at the fork would stay held forever in the child.
    _connections_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- responses ----------------------------------------------------------------------------------


def _mime_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower()


def _is_json(mime: str) -> bool:
    return mime == "application/json" or mime.endswith("+json")


def _is_textual(mime: str) -> bool:
    return mime.startswith("text/") or mime in TEXT_TYPES or mime.endswith(("+json", "+xml"))


def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Read at most `limit` bytes of the body; return them and whether there was more."""
    received = bytearray()
    for block in response.iter_bytes(READ_BLOCK):
        room = limit - len(received)
        if len(block) > room:
            received += block[:room]
            return bytes(received), True
        received += block
    return bytes(received), False


def _decode_text(response: httpx.Response, data: bytes, truncated: bool) -> str | None:
    """Return the body as text in its declared charset (UTF-8 if none), or None if it is not."""
    try:
        decoder = codecs.getincrementaldecoder(response.charset_encoding or "utf-8")()
        # A truncated body may end inside a character: leave that character out.
        return decoder.decode(data, final=not truncated)
    except (LookupError, UnicodeDecodeError):
        return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _body_fields(response: httpx.Response, data: bytes, truncated: bool) -> dict[str, Any]:
    mime = _mime_type(response)
    text = _decode_text(response, data, truncated) if _is_textual(mime) or not data else None
    if text is None:
        return {"body": base64.b64encode(data).decode("ascii"), "body_encoding": "base64"}
    fields: dict[str, Any] = {"body": text, "body_encoding": "text"}
    if _is_json(mime) and not truncated and text:
        # A body that says it is JSON but is not stays text, without `json`.
        with contextlib.suppress(ValueError):
            fields["json"] = json.loads(text, parse_constant=_reject_constant)
    return fields


def _status_error(response: httpx.Response, snippet: str, expected: set[int] | None) -> JobError:
    """Return the error for a response whose status is not a success."""
    status = response.status_code
    host = response.url.host
    message = f"HTTP {status} {response.reason_phrase} from {host}".rstrip()
    if snippet:
        message += f": {snippet[:ERROR_SNIPPET]}"
    if status >= 500:
        return TransientError(message, code="http_5xx")
    if status == 429:
        return TransientError(message, code="http_429")
    if 400 <= status < 500:
        return PermanentError(message, code="http_4xx")
    wanted = ", ".join(str(code) for code in sorted(expected)) if expected else "2xx"
    return PermanentError(f"{message} (expected {wanted})", code="unexpected_status")


def _expected_statuses(payload: dict[str, Any]) -> set[int] | None:
    expected = payload.get("expect_status")
    if expected is None:
        return None
    return {expected} if isinstance(expected, int) else set(expected)


# --- the job type -------------------------------------------------------------------------------


class HttpRequest(JobType):
    """Send one HTTP request and return the response's status, headers and body."""

    name = "http.request"
    description = (
        "Sends one HTTP request to a host in BATCHSITE_OUTBOUND_ALLOWED_HOSTS and returns "
        "`status`, `headers`, `body` (text, or base64 with `body_encoding: base64`), `json` "
        "for JSON responses, `truncated` and `elapsed_ms`. 5xx, 429, timeouts and connection "
        "errors are retried; 4xx and statuses outside `expect_status` fail the item."
    )
    payload_schema = {
        "type": "object",
        "required": ["url"],
        "properties": {
            "method": {
                "type": "string",
                "enum": [*METHODS, *(method.lower() for method in METHODS)],
                "default": "GET",
            },
            "url": {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH},
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "printable ASCII; not the headers that frame the connection",
            },
            "json": {"description": "any JSON value, sent as application/json"},
            "body": {"type": "string", "description": "sent as UTF-8; not with `json`"},
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_TIMEOUT,
                "default": DEFAULT_TIMEOUT,
                "description": "seconds the whole request, redirects and body included, may take",
            },
            "expect_status": {
                "description": "the status or statuses that count as success; default any 2xx",
                "oneOf": [
                    {"type": "integer", "minimum": 100, "maximum": 599},
                    {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 100, "maximum": 599},
                        "minItems": 1,
                    },
                ],
            },
        },
        "not": {"required": ["json", "body"]},
        "additionalProperties": False,
    }
    # Small chunks spread a batch's requests over every worker.
    chunk_size = 50
    slice_size = 10
    max_attempts = 4
    # The request ends by its own `timeout` (at most MAX_TIMEOUT); a timed-out item is retried.
    time_limit = MAX_TIMEOUT + 10
    timeouts_transient = True
    retry_backoff = 0.5
    retry_backoff_max = 30.0

    def validate_payload(self, payload: dict[str, Any]) -> None:
        """Check what the schema cannot: that the URL may be fetched now, and the headers.

        Header syntax is checked here rather than by schema patterns: a pattern's `$` lets
        a final newline through in Python's engine, and a header must never carry one.
        """
        errors = {}
        url_error = outbound.url_problem(payload["url"], max_length=MAX_URL_LENGTH)
        if url_error:
            errors["payload.url"] = url_error
        for name, value in payload.get("headers", {}).items():
            path = json_path(["headers", name])
            if not HEADER_NAME.fullmatch(name):
                errors[path] = "is not a valid header name"
            elif name.lower() in FORBIDDEN_HEADERS:
                errors[path] = "is set by the HTTP client and cannot be given"
            elif not HEADER_VALUE.fullmatch(value):
                errors[path] = "must be printable ASCII on one line"
        if errors:
            raise PayloadError(errors)

    def process(self, payload: dict[str, Any], file: IO[bytes] | None, context: JobContext) -> Any:
        """Send the request through the outbound guard and describe the response."""
        method = payload.get("method", "GET").upper()
        url = payload["url"]
        timeout = float(payload.get("timeout", DEFAULT_TIMEOUT))
        headers = dict(payload.get("headers", {}))
        content = None
        if "json" in payload:
            content = json.dumps(payload["json"], ensure_ascii=False).encode()
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        elif "body" in payload:
            content = payload["body"].encode()
        expected = _expected_statuses(payload)
        conns = connections()
        parts = urlsplit(url)
        slot = conns.host_slot(f"{parts.hostname}:{parts.port or ''}", _per_host_concurrency())
        started = time.monotonic()
        try:
            with (
                slot,
                outbound.deadline(timeout),
                outbound.fetch(conns.client, method, url, headers=headers, content=content) as resp,
            ):
                data, truncated = _read_capped(resp, _max_body_bytes())
        except outbound.OutboundRefused as exc:
            raise PermanentError(f"refused: {exc}", code="refused") from exc
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out after {timeout:g}s: {url}", code="timeout") from exc
        except httpx.TransportError as exc:
            raise TransientError(
                f"cannot reach {parts.hostname}: {exc}", code="connect_error"
            ) from exc
        elapsed_ms = round((time.monotonic() - started) * 1000)
        body = _body_fields(resp, data, truncated)
        status = resp.status_code
        succeeded = status in expected if expected is not None else 200 <= status < 300
        if not succeeded:
            snippet = body["body"] if body["body_encoding"] == "text" else ""
            raise _status_error(resp, snippet, expected)
        return {
            "status": status,
            "url": str(resp.url),
            "headers": dict(resp.headers),
            **body,
            "truncated": truncated,
            "elapsed_ms": elapsed_ms,
        }
