"""Give every request an id, and carry it to the log lines and work that follow from it.

RequestIdMiddleware takes the client's `X-Request-ID` when it is a sane token (a UUID, or
1 to 64 of `A-Z a-z 0-9 . _ -`), else makes a uuid4, and sends it back in the response's
`X-Request-ID`. While the request runs the id is the context's (`request_id_get()`):
batchsite.logging's RequestIdFilter puts it on every log line, problem documents name it,
and a batch created, committed or re-ran records it, so a worker running the batch's
chunks sets it again (`request_id_bound`) and its log lines carry it too.

This module is imported by logging configuration before Django's apps are ready: it must
not import models or read settings at import time.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
# A client's id kept as it is: a UUID, or a short token of URL- and log-safe characters.
SANE_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")

_current: ContextVar[str] = ContextVar("batchsite_request_id", default="")


def request_id_get() -> str:
    """Return the id of the request (or of the request a worker acts for); "" outside one."""
    return _current.get()


@contextmanager
def request_id_bound(request_id: str) -> Iterator[None]:
    """Make `request_id` (if any) the context's for the duration of the block."""
    token = _current.set(request_id or _current.get())
    try:
        yield
    finally:
        _current.reset(token)


def request_id_accept(presented: str | None) -> str:
    """Return the client's id if it is a sane token, else a new uuid4."""
    if presented and SANE_TOKEN.fullmatch(presented):
        return presented
    return str(uuid.uuid4())


def request_id_uri(request_id: str, path: str) -> str:
    """Return a URI reference for one request: `urn:uuid:<id>`, or the path with the id.

    Ids batchsite makes are UUIDs; a client's token that is not one is named by the
    request path with `?request_id=<token>` (the token's characters need no escaping).
    """
    try:
        return uuid.UUID(request_id).urn
    except ValueError:
        return f"{path}?request_id={request_id}"


class RequestIdMiddleware:
    """Give the request an id, make it the context's while it runs, and send it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Run the request under its id and add the id to the response's headers."""
        request_id = request_id_accept(request.headers.get(HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        with request_id_bound(request_id):
            response = self.get_response(request)
        response[HEADER] = request_id
        return response
