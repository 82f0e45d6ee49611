"""Assertions about batches, and other small helpers, that many test modules share."""

from __future__ import annotations

import io
import socket
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes
from wsgiref.util import setup_testing_defaults

from django.db import connection, transaction
from django.db.models import Count

from batches.models import Batch, BatchEvent, Item


def recount(batch: Batch) -> dict[str, int]:
    """Count the batch's items by status, in the shape of Batch.counts()."""
    rows = (
        Item.objects.filter(batch_id=batch.pk)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    counted = dict.fromkeys(Item.Status.values, 0)
    counted.update(dict(rows))
    counted["total"] = sum(counted.values())
    return counted


def counts_and_recount(batch: Batch) -> tuple[dict[str, int], dict[str, int]]:
    """Return the batch's counters and a recount of its items, read in one snapshot.

    For a batch whose workers are still writing: read apart, a slice committed between the
    two reads would look like a counter out of step.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        current = Batch.objects.get(pk=batch.pk)
        return current.counts(), recount(current)


def assert_counters_exact(batch: Batch) -> Batch:
    """Assert the stored counters equal a recount of the items; return the fresh batch."""
    batch = Batch.objects.get(pk=batch.pk)
    assert batch.counts() == recount(batch)
    return batch


def kinds(batch: Batch) -> list[str]:
    """Return the kinds of the batch's events, oldest first."""
    return list(
        BatchEvent.objects.filter(batch_id=batch.pk)
        .order_by("created_at", "id")
        .values_list("kind", flat=True)
    )


def statuses(batch: Batch) -> list[str]:
    """Return the batch's item statuses in index order."""
    return list(Item.objects.filter(batch=batch).order_by("index").values_list("status", flat=True))


def refused_port() -> int:
    """Return a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class WsgiResponse:
    """What a WSGI application answered."""

    status_code: int
    headers: dict[str, str]
    content: bytes


def wsgi_request(
    application, method: str, path: str, body: bytes = b"", content_type: str = "", **environ
) -> WsgiResponse:
    """Send one request to a WSGI application as a WSGI server would, and read its answer.

    Unlike Django's test client, this goes through the application's own entry point
    (batchsite.wsgi wraps Django's). `environ` adds CGI variables such as HTTP_X_API_KEY.
    """
    path, _, query = path.partition("?")
    request = {
        "REQUEST_METHOD": method,
        "PATH_INFO": unquote_to_bytes(path).decode("iso-8859-1"),
        "QUERY_STRING": query,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **environ,
    }
    setup_testing_defaults(request)
    started: dict = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=status, headers=headers)

    result = application(request, start_response)
    try:
        content = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return WsgiResponse(int(started["status"].split()[0]), dict(started["headers"]), content)
