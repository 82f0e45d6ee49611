"""Fill a batch from its source URL, on a worker: download, read, add, open or commit.

The download goes through the outbound guard (allow-list, public addresses, every
redirect checked), is capped in size and time, and lands in a temporary file; the file is
then read like an upload, in the format its Content-Type, its URL's extension or else its
content shows. If the source cannot be fetched or read, the batch ends
`failed` with a BatchError saying why.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from batches import engine, files, services
from batches.engine.locks import lock_acquire, lock_release
from batches.exceptions import DomainError, TooLarge
from batches.ingest import formats, staging
from batches.models import Batch
from batchsite.requestid import request_id_bound
from jobs import outbound

logger = logging.getLogger(__name__)

ACTOR = "source"


class SourceUnreadable(Exception):
    """The source could not be fetched; the message says why, for the batch's errors."""


def download(url: str) -> tuple[Path, str]:
    """Fetch `url` into a temporary file; return its path and the response's Content-Type."""
    limit = settings.BATCHSITE_MAX_UPLOAD_BYTES
    timeout = settings.BATCHSITE_SOURCE_TIMEOUT
    handle = tempfile.NamedTemporaryFile(dir=staging.work_dir(), prefix="source-", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    try:
        with handle, outbound.Client(timeout=timeout) as client:
            content_type = outbound.download(
                client, url, handle, max_bytes=limit, timeout=timeout, what="the source"
            )
    except outbound.DownloadTooLarge as exc:
        path.unlink(missing_ok=True)
        raise TooLarge(str(exc)) from exc
    except outbound.DownloadFailed as exc:
        path.unlink(missing_ok=True)
        raise SourceUnreadable(str(exc)) from exc
    except outbound.OutboundRefused as exc:
        path.unlink(missing_ok=True)
        raise SourceUnreadable(f"refused: {exc}") from exc
    except httpx.TimeoutException as exc:
        path.unlink(missing_ok=True)
        raise SourceUnreadable(f"the source took more than {timeout:g} seconds") from exc
    except httpx.HTTPError as exc:
        path.unlink(missing_ok=True)
        raise SourceUnreadable(f"cannot fetch the source: {exc}") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, content_type


def source_ingest(*, batch_id: uuid.UUID | str) -> str:
    """Download and read the batch's source; return what happened, for logs."""
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None or batch.status != Batch.Status.INGESTING:
        return "not ingesting"
    owner = engine.worker_name()
    lock = f"ingest:{batch.pk}"
    if not lock_acquire(name=lock, owner=owner, seconds=settings.BATCHSITE_SOURCE_TIMEOUT * 4):
        return "another worker is reading it"
    try:
        # Under the id of the request that created the batch, for its log lines and events.
        with request_id_bound(batch.request_id):
            return _ingest(batch)
    finally:
        lock_release(name=lock, owner=owner)


def _ingest(batch: Batch) -> str:
    try:
        path, content_type = download(batch.source_url)
    except (SourceUnreadable, TooLarge) as exc:
        services.batch_fail(batch=batch, code="source_unreadable", message=str(exc), actor=ACTOR)
        return "source unreadable"
    try:
        # The Content-Type, else the URL's extension, else the content: a file URL may have
        # no extension, and stores serve what they do not know as application/octet-stream.
        fmt = (
            formats.format_of(content_type)
            or formats.format_of_name(urlsplit(batch.source_url).path)
            or formats.format_sniff_file(path)
        )
        if fmt is None:
            message = (
                f"cannot tell the format of the source (Content-Type {content_type!r}): "
                f"its content is none of {formats.SNIFFED_FORMATS}"
            )
            services.batch_fail(batch=batch, code="source_format", message=message, actor=ACTOR)
            return "unknown format"
        try:
            staged = staging.stage(
                path,
                fmt=fmt,
                default_type=batch.type,
                files_prefix=files.inputs_prefix(batch.pk),
            )
        except (formats.FileRejected, DomainError) as exc:
            message = getattr(exc, "message", str(exc))
            details = "; ".join(
                str(error.get("message", error)) for error in getattr(exc, "errors", [])[:5]
            )
            services.batch_fail(
                batch=batch,
                code="source_unreadable",
                message=f"{message}: {details}" if details else message,
                actor=ACTOR,
            )
            return "source unreadable"
    finally:
        path.unlink(missing_ok=True)
    try:
        ingested = services.batch_ingest_finish(batch=batch, staged=staged, actor=ACTOR)
    except BaseException:
        staged.discard()
        raise
    if ingested is None:
        staged.discard()
        return "no longer ingesting"
    staged.close()
    return ingested.status
