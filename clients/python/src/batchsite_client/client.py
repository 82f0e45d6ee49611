"""The batchsite API client: one method per API operation, over one httpx.Client."""

from __future__ import annotations

import json
import mimetypes
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, cast

import httpx

from batchsite_client import _http
from batchsite_client.errors import (
    BatchsiteError,
    ConnectionFailed,
    WaitTimeout,
    error_from_response,
)
from batchsite_client.types import (
    TERMINAL_STATUSES,
    Batch,
    Item,
    ItemsAdded,
    UploadReport,
)

__all__ = ["DEFAULT_TIMEOUT", "UNSET", "BatchRef", "Client", "FileArg", "Progress"]

#: A batch named by its id (a string or a UUID) or given as the JSON the API answered.
BatchRef = str | uuid.UUID | Mapping[str, Any]
#: A file named by its path, or a binary file object open for reading.
FileArg = str | os.PathLike[str] | IO[bytes]
#: What `wait` reports progress to: a function of the batch, or "tqdm" for a progress bar.
Progress = Callable[[Batch], object] | Literal["tqdm"] | None
#: A function that returns the keywords of one attempt's request body (a fresh stream each time).
BodyFactory = Callable[[], dict[str, Any]]

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
#: Items per POST items/ request (the server allows BATCHSITE_MAX_ITEMS_PER_REQUEST, 10,000).
DEFAULT_ITEMS_PER_REQUEST = 1000
#: Bytes of JSON per POST items/ request: well under the server's 64 MB body limit.
DEFAULT_REQUEST_BYTES = 8 * 1024 * 1024
MAX_REDIRECTS = 5
READ_SIZE = 64 * 1024
UPLOAD_TYPES = {
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".json": "application/json",
    ".csv": "text/csv",
    ".zip": "application/zip",
}
VERSION = "0.1.0"


class _Unset:
    """The type of UNSET: a keyword left out, as opposed to one given as None."""

    def __repr__(self) -> str:
        return "UNSET"


#: The default of update_batch's keywords: the field is left as it is.
UNSET: Any = _Unset()


def batch_id_of(batch: BatchRef) -> str:
    """Return the id of a batch given by id or as the API's JSON."""
    if isinstance(batch, Mapping):
        return str(batch["id"])
    return str(batch)


class Client:
    """A client of one batchsite server, authenticated with one API key.

    `base_url` is the server's URL (its /api/v1/ is added) and `api_key` the raw key;
    either one, when None, is read from BATCHSITE_URL or BATCHSITE_KEY. Requests answered
    429 or 503 are sent again after the Retry-After they carry, up to `max_retries` times;
    requests that failed without an answer are sent again only when that is safe (reads,
    deletes, and creating a batch with its id). Use it as a context manager, or `close()` it.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        backoff_factor: float = 0.5,
        max_retry_wait: float = 120.0,
        items_per_request: int = DEFAULT_ITEMS_PER_REQUEST,
        max_request_bytes: int = DEFAULT_REQUEST_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base_url = base_url or os.environ.get("BATCHSITE_URL") or "http://127.0.0.1:8000"
        api_key = api_key if api_key is not None else os.environ.get("BATCHSITE_KEY")
        if not api_key:
            raise ValueError("no API key: pass api_key or set BATCHSITE_KEY")
        self.root = _http.api_root(base_url)
        self.max_retries = max_retries
        self.backoff_factor = backoff_factor
        self.max_retry_wait = max_retry_wait
        self.items_per_request = items_per_request
        self.max_request_bytes = max_request_bytes
        self._api_key = api_key
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": f"batchsite-client/{VERSION}"},
        )

    def __repr__(self) -> str:
        return f"Client({str(self.root)!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # --- batches ---------------------------------------------------------------------------

    def create_batch(
        self,
        *,
        type: str | None = None,
        id: str | uuid.UUID | None = None,
        label: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        items: Iterable[Mapping[str, Any]] | None = None,
        source_url: str | None = None,
        commit: bool = False,
    ) -> Batch:
        """Create a batch; safe to retry, since the client picks its id when none is given.

        The same id again gives back the batch it created. `items` (at most one request's
        worth; see `add_items` for more) are added at once, all or none, and `commit`
        commits the batch right away.
        """
        body: dict[str, Any] = {"id": str(id or uuid.uuid4()), "commit": commit}
        fields = {"type": type, "label": label, "metadata": metadata, "options": options}
        body.update(
            {
                name: dict(value) if isinstance(value, Mapping) else value
                for name, value in fields.items()
                if value is not None
            }
        )
        if items is not None:
            body["items"] = [dict(item) for item in items]
        if source_url is not None:
            body["source_url"] = source_url
        return cast(Batch, self._json("POST", "batches/", json=body, idempotent=True))

    def get_batch(self, batch: BatchRef) -> Batch:
        """Return the batch with its counters, progress and first errors."""
        return cast(Batch, self._json("GET", self._batch_path(batch)))

    def list_batches(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        label: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Batch]:
        """Yield the account's batches, newest first, filtered, page after page."""
        params = _http.clean_params(
            {
                "status": status,
                "type": type,
                "label": label,
                "created_after": _iso(created_after),
                "created_before": _iso(created_before),
                "page_size": page_size,
            }
        )
        while True:
            page = self._json("GET", "batches/", params=params)
            yield from page["results"]
            if not page.get("next"):
                return
            params = _http.query_of(page["next"])

    def update_batch(
        self,
        batch: BatchRef,
        *,
        label: str = UNSET,
        metadata: Mapping[str, Any] = UNSET,
        priority: int = UNSET,
        max_concurrency: int | None = UNSET,
        deadline: datetime | str | None = UNSET,
    ) -> Batch:
        """Change a batch that has not ended; only the keywords given are changed.

        `max_concurrency` and `deadline` take None to remove the limit. Workers see the
        change from the next chunk they claim.
        """
        fields = {
            "label": label,
            "metadata": dict(metadata) if isinstance(metadata, Mapping) else metadata,
            "priority": priority,
            "max_concurrency": max_concurrency,
            "deadline": _iso(deadline) if not isinstance(deadline, _Unset) else deadline,
        }
        body = {name: value for name, value in fields.items() if not isinstance(value, _Unset)}
        return cast(Batch, self._json("PATCH", self._batch_path(batch), json=body))

    def delete_batch(self, batch: BatchRef) -> None:
        """Delete the batch with its items, files and errors; every later read is NotFound."""
        self._call("DELETE", self._batch_path(batch), idempotent=True).close()

    def commit(self, batch: BatchRef) -> Batch:
        """Close the batch to new items and queue it for the workers."""
        return self._action(batch, "commit")

    def cancel(self, batch: BatchRef) -> Batch:
        """Cancel the batch: unstarted items are cancelled, ended ones keep their results."""
        return self._action(batch, "cancel")

    def pause(self, batch: BatchRef) -> Batch:
        """Stop workers from taking new chunks of the batch; chunks in flight finish."""
        return self._action(batch, "pause")

    def resume(self, batch: BatchRef) -> Batch:
        """Let workers take the paused batch's chunks again."""
        return self._action(batch, "resume")

    def rerun(self, batch: BatchRef, items: Literal["failed", "all"] = "failed") -> Batch:
        """Run an ended batch's failed items (or all of its items) again."""
        return self._action(batch, "rerun", {"items": items})

    def wait(
        self,
        batch: BatchRef,
        *,
        poll_interval: float = 2.0,
        timeout: float | None = None,
        progress: Progress = None,
    ) -> Batch:
        """Poll the batch until it ends and return it; raise WaitTimeout after `timeout` s.

        `progress` is called with the batch after every poll, or is "tqdm" for a progress
        bar on stderr (`pip install 'batchsite-client[progress]'`).
        """
        report, close = _progress_reporter(progress)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                current = self.get_batch(batch)
                report(current)
                if current["status"] in TERMINAL_STATUSES:
                    return current
                pause = poll_interval
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        raise WaitTimeout(
                            f"batch {current['id']} is still {current['status']} after {timeout} s",
                            batch=current,
                        )
                _http.sleep(pause)
        finally:
            close()

    # --- items -----------------------------------------------------------------------------

    def add_items(
        self,
        batch: BatchRef,
        items: Iterable[Mapping[str, Any]],
        *,
        per_request: int | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Add items from any iterable, read lazily, in requests of `per_request` items at most.

        Each request also stays under `max_bytes` of JSON. Each item is an object with a
        `payload` and optionally `external_id`, `type` and `key`. Returns how many were
        added. A refused request raises; the requests before it stay added, and the error's
        `items_added` says how many items they held.
        """
        limit = per_request or self.items_per_request
        byte_limit = max_bytes or self.max_request_bytes
        added = 0
        try:
            for body in _json_arrays(items, limit=limit, max_bytes=byte_limit):
                path = self._batch_path(batch, "items/")
                answer = self._json("POST", path, body=_json_body(body))
                added += int(answer["added"])
        except BatchsiteError as error:
            error.items_added = added
            raise
        return added

    def add_file_item(
        self,
        batch: BatchRef,
        file: FileArg,
        *,
        payload: Mapping[str, Any] | None = None,
        external_id: str | None = None,
        type: str | None = None,
        key: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> ItemsAdded:
        """Add one item with a file (for job types that accept one), sent as multipart."""
        fields = _http.clean_params(
            {
                "payload": json.dumps(dict(payload)) if payload is not None else None,
                "external_id": external_id,
                "type": type,
                "key": key,
            }
        )

        def body() -> dict[str, Any]:
            stream, name = _reopen(file)
            media = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
            return {"files": {"file": (filename or name, stream, media)}, "data": fields}

        path = self._batch_path(batch, "items/file/")
        return cast(ItemsAdded, self._json("POST", path, body=body))

    def upload(
        self,
        batch: BatchRef,
        file: FileArg,
        content_type: str | None = None,
        *,
        on_error: Literal["skip", "reject"] | None = None,
        dry_run: bool = False,
        csv_types: Literal["string", "infer"] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> UploadReport:
        """Add the items of a JSONL, JSON, CSV or ZIP file, streamed from disk, never read whole.

        The content type follows the file name's extension unless given. `on_error="reject"`
        refuses the whole file if any line is bad; `payload` is given to every ZIP member.
        """
        with _sized(file) as (stream, size, name):
            start = stream.tell()
            media = content_type or UPLOAD_TYPES.get(Path(name).suffix.lower())
            params = _http.clean_params(
                {
                    "on_error": on_error,
                    "dry_run": "true" if dry_run else None,
                    "csv_types": csv_types,
                    "payload": json.dumps(dict(payload)) if payload is not None else None,
                }
            )

            def body() -> dict[str, Any]:
                stream.seek(start)
                headers = {
                    "Content-Type": media or "application/octet-stream",
                    "Content-Length": str(size),
                }
                return {"content": _chunks(stream), "headers": headers}

            path = self._batch_path(batch, "upload/")
            return cast(UploadReport, self._json("POST", path, params=params, body=body))

    def get_item(self, batch: BatchRef, index: int) -> Item:
        """Return one item of the batch by its index."""
        return cast(Item, self._json("GET", self._batch_path(batch, f"items/{int(index)}/")))

    def iter_items(
        self,
        batch: BatchRef,
        *,
        status: str | Iterable[str] | None = None,
        type: str | None = None,
        external_id: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Item]:
        """Yield the batch's items in index order, filtered, following the cursor."""
        statuses = [status] if isinstance(status, str) else status
        params = _http.clean_params(
            {
                "status": list(statuses) if statuses is not None else None,
                "type": type,
                "external_id": external_id,
                "page_size": page_size,
            }
        )
        path = self._batch_path(batch, "items/")
        while True:
            page = self._json("GET", path, params=params)
            yield from page["results"]
            if not page.get("next"):
                return
            params = _http.query_of(page["next"])

    def iter_results(
        self,
        batch: BatchRef,
        *,
        type: str | None = None,
        status: Literal["succeeded", "failed"] | None = None,
        page_size: int = 100,
        poll_interval: float = 1.0,
        follow: bool = True,
    ) -> Iterator[Item]:
        """Yield each ended item once, in the order items ended, as they end.

        With `follow` (the default) this waits for more until the batch has ended, polling
        every `poll_interval` seconds; without it, it stops at what has ended so far. An
        atomic batch shows its results only once it has finished.
        """
        path = self._batch_path(batch, "results/")
        params = _http.clean_params({"type": type, "status": status, "limit": page_size})
        after = 0
        while True:
            page = self._json("GET", path, params={**params, "after": after})
            items = [item for group in page["results"].values() for item in group]
            yield from items
            if not page.get("next"):
                return
            after = int(_http.query_of(page["next"])["after"])
            if len(items) < page_size:
                if not follow:
                    return
                _http.sleep(poll_interval)

    # --- downloads -------------------------------------------------------------------------

    def download_export(
        self,
        batch: BatchRef,
        dest: FileArg,
        format: Literal["jsonl", "csv"] = "jsonl",
        status: str | Iterable[str] | None = None,
    ) -> int:
        """Save every item (or those in `status`) as JSON lines or CSV; return the bytes saved."""
        statuses = [status] if isinstance(status, str) else status
        params = _http.clean_params(
            {"format": format, "status": list(statuses) if statuses is not None else None}
        )
        return self._download(self._batch_path(batch, "export/"), dest, params)

    def download_package(self, batch: BatchRef, dest: FileArg) -> int:
        """Save the ended batch's ZIP of output files; return the bytes saved.

        The server may redirect to a presigned object-store URL: it is followed, and the
        API key goes only to the API's own host.
        """
        return self._download(self._batch_path(batch, "package/"), dest, None)

    # --- plumbing --------------------------------------------------------------------------

    def _batch_path(self, batch: BatchRef, suffix: str = "") -> str:
        return f"batches/{batch_id_of(batch)}/{suffix}"

    def _action(self, batch: BatchRef, name: str, body: dict[str, Any] | None = None) -> Batch:
        path = self._batch_path(batch, f"{name}/")
        return cast(Batch, self._json("POST", path, json=body))

    def _json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        body: BodyFactory | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        if body is None and json is not None:
            body = lambda: {"json": json}  # noqa: E731 - a fresh body for each attempt
        response = self._call(method, path, params=params, body=body, idempotent=idempotent)
        return response.json()

    def _call(
        self,
        method: str,
        path_or_url: str | httpx.URL,
        *,
        params: Mapping[str, Any] | None = None,
        body: BodyFactory | None = None,
        idempotent: bool | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send a request (retrying as allowed) and return its answer, raising on an error."""
        url = self.root.join(path_or_url) if isinstance(path_or_url, str) else path_or_url
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "DELETE")
        response = self._send(method, url, params, body, idempotent=idempotent, stream=stream)
        if response.status_code >= 400:
            response.read()
            response.close()
            raise error_from_response(response)
        return response

    def _send(
        self,
        method: str,
        url: httpx.URL,
        params: Mapping[str, Any] | None,
        body: BodyFactory | None,
        *,
        idempotent: bool,
        stream: bool,
    ) -> httpx.Response:
        attempt = 0
        while True:
            request = self._build(method, url, params, body)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if not idempotent or attempt >= self.max_retries:
                    # Without the query: a presigned URL's signature stays out of logs.
                    where = url.copy_with(query=None)
                    raise ConnectionFailed(
                        f"{method} {where}: {type(exc).__name__}: {exc}", code="connection_failed"
                    ) from exc
                delay = _http.backoff(attempt, self.backoff_factor)
            else:
                if response.status_code not in _http.RETRY_STATUSES or attempt >= self.max_retries:
                    return response
                delay = _http.retry_after(response.headers.get("Retry-After")) or _http.backoff(
                    attempt, self.backoff_factor
                )
                if delay > self.max_retry_wait:
                    return response
                response.close()
            attempt += 1
            _http.sleep(delay)

    def _build(
        self,
        method: str,
        url: httpx.URL,
        params: Mapping[str, Any] | None,
        body: BodyFactory | None,
    ) -> httpx.Request:
        kwargs = body() if body is not None else {}
        headers = dict(kwargs.pop("headers", {}))
        if _http.same_origin(url, self.root):
            headers["Authorization"] = f"Api-Key {self._api_key}"
        return self._http.build_request(
            method, url, params=dict(params) if params else None, headers=headers, **kwargs
        )

    def _download(self, path: str, dest: FileArg, params: Mapping[str, Any] | None) -> int:
        url: httpx.URL = self.root.join(path)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._call("GET", url, params=params, stream=True)
            try:
                if not response.is_redirect:
                    return _save(response, dest)
                url = response.url.join(response.headers["Location"])
                params = None  # the Location carries its own query
            finally:
                response.close()
        raise BatchsiteError(f"more than {MAX_REDIRECTS} redirects from {path}", code="redirects")


def _json_body(content: bytes) -> BodyFactory:
    """Return a body factory for JSON text already encoded."""
    return lambda: {"content": content, "headers": {"Content-Type": "application/json"}}


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def _json_arrays(
    items: Iterable[Mapping[str, Any]], *, limit: int, max_bytes: int
) -> Iterator[bytes]:
    """Yield JSON arrays of the items, each of at most `limit` items and about `max_bytes`.

    An item bigger than `max_bytes` on its own goes alone (for the server to judge).
    """
    encoded: list[bytes] = []
    size = 2
    for item in items:
        text = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
        if encoded and (len(encoded) >= limit or size + len(text) + 1 > max_bytes):
            yield b"[" + b",".join(encoded) + b"]"
            encoded, size = [], 2
        encoded.append(text)
        size += len(text) + 1
    if encoded:
        yield b"[" + b",".join(encoded) + b"]"


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while block := stream.read(READ_SIZE):
        yield block


def _reopen(file: FileArg) -> tuple[IO[bytes], str]:
    """Return a stream of the file from its start, and its name."""
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        return path.open("rb"), path.name
    if file.seekable():
        file.seek(0)
    return file, Path(str(getattr(file, "name", "file"))).name


class _sized:
    """Open a file argument for streaming with a known length (Content-Length).

    A path is opened (and closed after); a seekable file object is measured from where it
    stands; anything else is first copied to a temporary file, so that memory stays small.
    """

    def __init__(self, file: FileArg) -> None:
        self.file = file
        self.owned: IO[bytes] | None = None

    def __enter__(self) -> tuple[IO[bytes], int, str]:
        if isinstance(self.file, str | os.PathLike):
            path = Path(self.file)
            self.owned = path.open("rb")
            return self.owned, path.stat().st_size, path.name
        name = str(getattr(self.file, "name", ""))
        if self.file.seekable():
            start = self.file.tell()
            size = self.file.seek(0, os.SEEK_END) - start
            self.file.seek(start)
            return self.file, size, name
        self.owned = tempfile.TemporaryFile()
        shutil.copyfileobj(self.file, self.owned, READ_SIZE)
        size = self.owned.tell()
        self.owned.seek(0)
        return self.owned, size, name

    def __exit__(self, *exc_info: object) -> None:
        if self.owned is not None:
            self.owned.close()


def _save(response: httpx.Response, dest: FileArg) -> int:
    """Write a streamed answer to `dest`; a path is written whole or not at all."""
    if not isinstance(dest, str | os.PathLike):
        return _copy(response, dest)
    path = Path(dest)
    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as out:
            written = _copy(response, out)
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written


def _copy(response: httpx.Response, out: IO[bytes]) -> int:
    written = 0
    for block in response.iter_bytes(READ_SIZE):
        out.write(block)
        written += len(block)
    return written


def _progress_reporter(progress: Progress) -> tuple[Callable[[Batch], object], Callable[[], None]]:
    """Return the function `wait` reports each poll to, and the one it calls at the end."""
    if progress is None:
        return (lambda batch: None), (lambda: None)
    if progress != "tqdm":
        return progress, (lambda: None)
    try:
        from tqdm import tqdm
    except ImportError as exc:
        raise ImportError(
            "progress='tqdm' needs tqdm: pip install 'batchsite-client[progress]'"
        ) from exc
    bar = tqdm(total=0, unit="item", dynamic_ncols=True)

    def report(batch: Batch) -> None:
        counts = batch["counts"]
        bar.total = counts["total"]
        bar.n = counts["succeeded"] + counts["failed"] + counts["cancelled"]
        bar.set_postfix_str(f"{batch['status']}, {counts['failed']} failed", refresh=False)
        bar.refresh()

    return report, bar.close
