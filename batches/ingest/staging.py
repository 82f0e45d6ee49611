"""Turn an uploaded or downloaded file into staged items, without holding any lock.

An upload is received into a temporary file, read record by record, and every record is
validated; the good ones are written to a staging file and the bad ones kept as
problems. Only then does services.items_add_staged insert the staged items in one short
transaction, so a large file never holds the database's write lock while it is parsed.
Memory stays flat whatever the file's size.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from django.conf import settings

from batches import files
from batches.exceptions import InvalidInput, TooLarge
from batches.ingest import archives, formats
from batches.ingest.items import ItemProblem, ItemSpec, item_parse
from jobs import get_job_type

READ_BLOCK = 1024 * 1024
REPORTED_ERRORS = 100
Regroup = Callable[[Iterator[formats.Record]], Iterator[formats.Record]]


class BinaryReader(Protocol):
    """What a body is received from: an open file, a request, an UploadedFile, or a wrapper
    that sees the bytes go by. Only `read` is ever called."""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to `size` bytes (all that is left for -1); b"" once the end is reached."""
        ...


def work_dir() -> Path:
    """Return the folder for temporary upload files, inside the data dir."""
    return files.scratch_dir()


def receive(stream: BinaryReader, *, content_length: int | None, limit: int) -> Path:
    """Copy a request body to a temporary file, refusing it once it passes `limit` bytes."""
    if content_length is not None and content_length > limit:
        raise TooLarge(f"the body is {content_length} bytes; the limit is {limit}")
    handle = tempfile.NamedTemporaryFile(dir=work_dir(), prefix="upload-", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    received = 0
    try:
        with handle:
            while block := stream.read(READ_BLOCK):
                received += len(block)
                if received > limit:
                    raise TooLarge(f"the body is more than {limit} bytes")
                handle.write(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


@dataclass
class Staged:
    """Validated items waiting in a file, and the problems found on the way."""

    path: Path
    problems_path: Path
    # The storage prefix of the files extracted for this upload's items (ZIP members).
    files_prefix: str | None
    format: str
    added: int = 0
    rejected: int = 0
    # The first problems, for the answer; all of them are in problems_path.
    problems: list[dict[str, Any]] = field(default_factory=list)
    # The job types of the staged items.
    types: set[str] = field(default_factory=set)

    def items(self) -> Iterator[tuple[str, str, str, str, str, int]]:
        """Yield (external_id, key, type, payload JSON, input file, index in the file) for
        each staged item."""
        return _read_groups(self.path)

    def all_problems(self) -> Iterator[dict[str, Any]]:
        """Yield every problem found, in file order."""
        return _read_groups(self.problems_path)

    def close(self) -> None:
        """Delete the staging files; the stored files stay for the inserted items."""
        self.path.unlink(missing_ok=True)
        self.problems_path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Delete the staging files and any files stored for items never inserted."""
        self.close()
        if self.files_prefix is not None:
            files.prefix_delete(self.files_prefix)

    def report(self, *, dry_run: bool) -> dict[str, Any]:
        """Return the answer to the upload."""
        return {
            "added": 0 if dry_run else self.added,
            "rejected": self.rejected,
            "valid": self.added,
            "dry_run": dry_run,
            "format": self.format,
            "errors": self.problems[:REPORTED_ERRORS],
        }


def stage(
    path: Path,
    *,
    fmt: str,
    default_type: str,
    files_prefix: str,
    csv_types: str = "string",
    payload: dict[str, Any] | None = None,
    regroup: Regroup | None = None,
) -> Staged:
    """Read and validate every record of the file at `path`; raise FileRejected on a
    whole-file problem and InvalidInput when it holds no record at all.

    `payload` is every ZIP member's payload (the other formats carry their own).
    `regroup`, if given, sees the records as read and yields the ones to validate (a
    dialect folds files that belong together into one record with it). ZIP members are
    extracted to a local folder, and each accepted one is saved into storage under
    `files_prefix` (in its own upload-... folder) as it is read.
    """
    upload = f"upload-{uuid.uuid4().hex[:12]}"
    extracted = work_dir() / upload
    staged = Staged(
        path=_temp_path("staged-"),
        problems_path=_temp_path("problems-"),
        files_prefix=f"{files_prefix}/{upload}" if fmt == "zip" else None,
        format=fmt,
    )
    try:
        with (
            open(path, "rb") as source,
            _GroupWriter(staged.path) as out,
            _GroupWriter(staged.problems_path) as problems_out,
        ):
            seen = 0
            records = _records(source, path, fmt, default_type, extracted, csv_types, payload)
            if regroup is not None:
                records = regroup(records)
            for index, record in records:
                seen += 1
                parsed: ItemSpec | ItemProblem
                member: Path | None = None
                if isinstance(record, dict) and "_file" in record:
                    member = record.pop("_file")
                if isinstance(record, ItemProblem):
                    parsed = record
                else:
                    parsed = item_parse(record, index=index, default_type=default_type)
                if isinstance(parsed, ItemProblem):
                    if member is not None:
                        member.unlink(missing_ok=True)
                    staged.rejected += 1
                    problem = parsed.as_dict()
                    if len(staged.problems) < REPORTED_ERRORS:
                        staged.problems.append(problem)
                    problems_out.add(problem)
                    continue
                input_file = ""
                if member is not None:
                    input_file = files.file_store(member, f"{staged.files_prefix}/{member.name}")
                staged.added += 1
                staged.types.add(parsed.type)
                out.add(
                    (
                        parsed.external_id,
                        parsed.key,
                        parsed.type,
                        parsed.payload_json,
                        input_file,
                        index,
                    )
                )
        if not seen:
            raise InvalidInput.for_field("file", "holds no items", detail="the file holds no items")
    except BaseException:
        staged.discard()
        raise
    finally:
        shutil.rmtree(extracted, ignore_errors=True)
    return staged


def _temp_path(prefix: str) -> Path:
    handle, name = tempfile.mkstemp(dir=work_dir(), prefix=prefix)
    os.close(handle)
    return Path(name)


class _GroupWriter:
    """Append values to a staging file in pickled groups (the file is ours alone)."""

    GROUP = 2000

    def __init__(self, path: Path):
        self.file = open(path, "wb")  # noqa: SIM115 - closed in __exit__
        self.group: list[Any] = []

    def __enter__(self) -> _GroupWriter:
        return self

    def add(self, value: Any) -> None:
        self.group.append(value)
        if len(self.group) >= self.GROUP:
            self.flush()

    def flush(self) -> None:
        if self.group:
            pickle.dump(self.group, self.file, protocol=pickle.HIGHEST_PROTOCOL)
            self.group = []

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.flush()
        finally:
            self.file.close()


def _read_groups(path: Path) -> Iterator[Any]:
    with open(path, "rb") as staged:
        while True:
            try:
                group = pickle.load(staged)
            except EOFError:
                return
            yield from group


def _records(
    source: IO[bytes],
    path: Path,
    fmt: str,
    default_type: str,
    dest: Path,
    csv_types: str,
    payload: dict[str, Any] | None,
) -> Iterator[formats.Record]:
    # A line or element may hold a payload at its limit, plus the item's other fields.
    max_item = settings.BATCHSITE_MAX_PAYLOAD_BYTES * 2 + 4096
    max_depth = settings.BATCHSITE_JSON_MAX_DEPTH
    if fmt == "jsonl":
        return formats.jsonl_records(source, max_line=max_item, max_depth=max_depth)
    if fmt == "json":
        return formats.json_array_records(source, max_item=max_item, max_depth=max_depth)
    if fmt == "csv":
        return formats.csv_records(source, infer_types=csv_types == "infer")
    job_type = get_job_type(default_type)
    if job_type is None or not job_type.accepts_file:
        raise InvalidInput.for_field(
            "type",
            "does not accept files",
            detail=(
                f"job type {default_type!r} does not take files, so a ZIP cannot feed this batch"
            ),
        )
    return archives.zip_records(
        path,
        dest=dest,
        max_members=settings.BATCHSITE_ZIP_MAX_MEMBERS,
        max_uncompressed=settings.BATCHSITE_ZIP_MAX_UNCOMPRESSED,
        payload=payload,
    )
