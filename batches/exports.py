"""Streamed exports of a batch: its items as JSONL or CSV, its errors as CSV, its package.

`batch_download` is the one response that every interface sends them in. With
BATCHSITE_PACKAGE_REDIRECT and an S3 storage, a package is built once into the bucket and
answered with a redirect to a presigned URL instead.

Rows are read in index order a page at a time (keyset pagination: no long-held cursor,
no long read transaction) and written out as they come, so memory stays flat at a
million items.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.utils import timezone

from batches import files
from batches.exceptions import BatchNotFinished, DomainError, ResultsHidden
from batches.models import Batch, BatchError, Item

PAGE = 2000
COPY_BLOCK = 256 * 1024
ITEM_FIELDS = [
    "index", "external_id", "key", "type", "status", "result", "error_code",
    "error_message", "attempts", "started_at", "finished_at",
]  # fmt: skip
ERROR_FIELDS = ["index", "external_id", "code", "message", "created_at"]


def item_rows(batch: Batch, statuses: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the batch's items as dicts in index order, one page of rows at a time."""
    items = Item.objects.filter(batch=batch)
    if statuses:
        items = items.filter(status__in=statuses)
    visible = batch.results_visible
    after = -1
    while True:
        page = list(items.filter(index__gt=after).order_by("index").values(*ITEM_FIELDS)[:PAGE])
        for row in page:
            if not visible:
                row["result"] = None
            yield row
        if len(page) < PAGE:
            return
        after = page[-1]["index"]


def error_rows(batch: Batch) -> Iterator[dict[str, Any]]:
    """Yield the batch's errors in the order they were recorded."""
    after = 0
    while True:
        page = list(
            BatchError.objects.filter(batch=batch, id__gt=after)
            .order_by("id")
            .values("id", *ERROR_FIELDS)[:PAGE]
        )
        for row in page:
            yield {name: row[name] for name in ERROR_FIELDS}
        if len(page) < PAGE:
            return
        after = page[-1]["id"]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return json.dumps(value, separators=(",", ":"))


def as_jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """Render rows as JSON lines, a page of lines per chunk."""
    buffer: list[str] = []
    for row in rows:
        buffer.append(json.dumps(row, default=_text, separators=(",", ":")))
        if len(buffer) >= PAGE:
            yield ("\n".join(buffer) + "\n").encode()
            buffer = []
    if buffer:
        yield ("\n".join(buffer) + "\n").encode()


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP's "CSV
# injection"), so a CSV cell that does is written with a leading apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """Return the value as CSV cell text that no spreadsheet runs as a formula."""
    text = _text(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def as_csv(rows: Iterable[dict[str, Any]], fields: list[str]) -> Iterator[bytes]:
    """Render rows as CSV with a header row; nested values are written as JSON.

    Every cell goes through csv_cell; JSONL exports and the API keep values as they are.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(fields)
    for count, row in enumerate(rows, start=1):
        writer.writerow([csv_cell(row[name]) for name in fields])
        if count % PAGE == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()


# --- packages ------------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """A write-only stream that hands what is written to whoever drains it."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def package_refusal(batch: Batch) -> DomainError | None:
    """Return why the batch's package cannot be had now, or None when it can.

    A batch that has not ended has no package yet. An ended atomic batch that did not
    finish published no result, so it has none either: a refusal says so, where an empty
    ZIP would look like a batch without output.
    """
    if not batch.is_terminal:
        return BatchNotFinished(f"batch is {batch.status}; its package is ready once it ends")
    if not batch.results_visible:
        return ResultsHidden(
            f"batch is {batch.status}; an atomic batch publishes its results and output "
            "files only once it has finished"
        )
    return None


def package_check(batch: Batch) -> None:
    """Raise the refusal of the batch's package, if it has one."""
    refusal = package_refusal(batch)
    if refusal is not None:
        raise refusal


MANIFEST_NAME = "manifest.json"


def package_entries(batch: Batch) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (name in the package, storage name, item facts) for every output file.

    Names are unique regardless of case (archives are unpacked on case-blind disks too),
    and the manifest's name is reserved: an output called that is renamed like any clash.
    """
    taken: set[str] = {MANIFEST_NAME.casefold()}
    items = Item.objects.filter(batch=batch, status=Item.Status.SUCCEEDED).exclude(output_files=[])
    after = -1
    while True:
        page = list(
            items.filter(index__gt=after)
            .order_by("index")
            .values("index", "external_id", "output_files", "result")[:PAGE]
        )
        for row in page:
            facts = {"index": row["index"], "external_id": row["external_id"]}
            result = row["result"] if isinstance(row["result"], dict) else {}
            # Job types that sign say who signed and when; the manifest carries it on.
            facts.update({k: result[k] for k in ("signer", "signed_at") if k in result})
            for output in row["output_files"]:
                name = output["name"]
                attempt = 1
                while name.casefold() in taken:
                    name = f"{row['index']}-{attempt}-{output['name']}"
                    attempt += 1
                taken.add(name.casefold())
                yield name, output["path"], facts
        if len(page) < PAGE:
            return
        after = page[-1]["index"]


def package_stream(batch: Batch) -> Iterator[bytes]:
    """Stream a ZIP of every output file of the batch, then its manifest.json."""
    sink = _Sink()
    manifest: list[dict[str, Any]] = []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, stored, facts in package_entries(batch):
            digest = hashlib.sha256()
            size = 0
            with (
                files.file_open(stored) as source,
                archive.open(name, "w", force_zip64=True) as target,
            ):
                while block := source.read(COPY_BLOCK):
                    digest.update(block)
                    size += len(block)
                    target.write(block)
                    if len(sink.parts) > 8:
                        yield sink.drain()
            manifest.append({"name": name, "sha256": digest.hexdigest(), "bytes": size, **facts})
            yield sink.drain()
        summary = {
            "batch": str(batch.pk),
            "number": batch.number,
            "status": batch.status,
            "created": timezone.now().isoformat(),
            "files": manifest,
        }
        archive.writestr(MANIFEST_NAME, json.dumps(summary, indent=2))
    yield sink.drain()


DOWNLOAD_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "zip": "application/zip",
}


def attachment_response(
    chunks: Iterable[bytes], *, filename: str, content_type: str | None = None
) -> StreamingHttpResponse:
    """Stream `chunks` as a file to save; its type follows the name's extension unless given."""
    if content_type is None:
        content_type = DOWNLOAD_TYPES[filename.rsplit(".", 1)[1]]
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def package_redirect(batch: Batch, *, filename: str) -> HttpResponseRedirect | None:
    """Redirect to a presigned URL of the batch's package, storing it first if need be.

    None unless BATCHSITE_PACKAGE_REDIRECT is on and the storage presigns URLs. The stored
    package is named after the batch's finish time, so a rerun's package is a new one.
    """
    if not settings.BATCHSITE_PACKAGE_REDIRECT or not files.presigns():
        return None
    assert batch.finished_at is not None, "package_check lets only ended batches through"
    name = f"{files.packages_prefix(batch.pk)}/{batch.finished_at:%Y%m%dT%H%M%S%f}.zip"
    if not files.storage().exists(name):
        built = files.scratch_dir() / f"package-{uuid.uuid4().hex}"
        try:
            with open(built, "wb") as out:
                for block in package_stream(batch):
                    out.write(block)
            files.file_store(built, name)
        finally:
            built.unlink(missing_ok=True)
    return HttpResponseRedirect(files.download_url(name, filename=filename))


def batch_download(
    batch: Batch, name: str, *, statuses: list[str] | None = None
) -> StreamingHttpResponse | HttpResponseRedirect:
    """Stream the batch's `items.jsonl` or `items.csv` (of `statuses`, if given), `errors.csv`
    or `package.zip` as `batch-<number>-<name>`.

    The caller has checked what it answers in its own way: the statuses are known ones,
    and the package is ready (`package_check`).
    """
    chunks: Iterable[bytes]
    if name == "items.jsonl":
        chunks = as_jsonl(item_rows(batch, statuses))
    elif name == "items.csv":
        chunks = as_csv(item_rows(batch, statuses), ITEM_FIELDS)
    elif name == "errors.csv":
        chunks = as_csv(error_rows(batch), ERROR_FIELDS)
    elif name == "package.zip":
        redirect = package_redirect(batch, filename=f"batch-{batch.number}-{name}")
        if redirect is not None:
            return redirect
        chunks = package_stream(batch)
    else:
        raise ValueError(f"no download named {name!r}")
    return attachment_response(chunks, filename=f"batch-{batch.number}-{name}")
