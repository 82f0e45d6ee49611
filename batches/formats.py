"""Read uploaded files (JSONL, CSV, ZIP) one record at a time, never all at once.

Each reader yields (index, record) where index is the 0-based line, row or member number
in the file and record is an item object to validate, or an ItemProblem when the line
itself cannot be read. A problem that condemns the whole file raises FileRejected.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import stat
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from batches.ingest import ItemProblem

JSONL_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})
CSV_TYPES = frozenset({"text/csv", "application/csv"})
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed"})
ITEM_COLUMNS = ("external_id", "type", "key")
UTF8_BOM = codecs.BOM_UTF8
COPY_BLOCK = 64 * 1024

Record = tuple[int, dict[str, Any] | ItemProblem]
# Numbers as JSON writes them, in ASCII digits only: "1_000" or full-width digits stay text.
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")


class FileRejected(Exception):
    """The file as a whole is refused; `errors` lists what is wrong with it."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or []


def format_of(content_type: str) -> str | None:
    """Return "jsonl", "csv" or "zip" for a Content-Type, or None if unsupported."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in JSONL_TYPES:
        return "jsonl"
    if media in CSV_TYPES:
        return "csv"
    if media in ZIP_TYPES:
        return "zip"
    return None


def format_of_name(name: str) -> str | None:
    """Guess the format from a file name's extension."""
    suffix = PurePosixPath(name).suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".zip": "zip"}.get(suffix)


# --- JSONL ---------------------------------------------------------------------------------------


def _lines(file: IO[bytes], max_line: int) -> Iterator[bytes | None]:
    """Yield the file's lines; None in place of a line longer than `max_line` bytes,
    which is skipped without ever being held in memory whole."""
    while raw := file.readline(max_line + 1):
        if len(raw) <= max_line or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := file.readline(COPY_BLOCK)) and not rest.endswith(b"\n"):
            pass
        yield None


def jsonl_records(file: IO[bytes], *, max_line: int = 1024 * 1024) -> Iterator[Record]:
    """Yield one item object per non-blank line."""
    for index, raw in enumerate(_lines(file, max_line)):
        if raw is None:
            message = f"is longer than {max_line} bytes"
            yield index, ItemProblem(index, {"line": message}, code="line_too_long")
            continue
        if index == 0 and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM) :]
        line = raw.strip()
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield (
                index,
                ItemProblem(index, {"line": f"is not UTF-8: {exc.reason}"}, code="invalid_utf8"),
            )
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            yield index, ItemProblem(index, {"line": f"is not JSON: {exc}"}, code="invalid_json")
            continue
        yield index, record


# --- CSV -----------------------------------------------------------------------------------------


def _infer(value: str) -> Any:
    """Turn a CSV cell into an int, float, bool or null when it plainly is one."""
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("", "null"):
        return None
    if not JSON_NUMBER.fullmatch(value):
        return value
    if JSON_INTEGER.fullmatch(value):
        return int(value)
    number = float(value)
    return number if abs(number) != float("inf") else value


def _has_bad_bytes(values: list[str]) -> bool:
    # Undecodable bytes come through as lone surrogates (surrogateescape).
    return any(any("\udc80" <= ch <= "\udcff" for ch in value) for value in values)


def csv_records(file: IO[bytes], *, infer_types: bool = False) -> Iterator[Record]:
    """Yield one item object per data row; `external_id`, `type`, `key` columns are item
    fields and every other column goes into the payload."""
    text = io.TextIOWrapper(file, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise FileRejected("the CSV file is empty: it needs a header row") from None
    except csv.Error as exc:
        raise FileRejected(f"the CSV header cannot be read: {exc}") from None
    header = [name.strip() for name in header]
    problems = []
    if _has_bad_bytes(header):
        problems.append({"field": "header", "message": "is not UTF-8"})
    if any(not name for name in header):
        problems.append({"field": "header", "message": "has an empty column name"})
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        problems.append({"field": "header", "message": f"repeats {', '.join(duplicates)}"})
    if problems:
        raise FileRejected("the CSV header is not usable", problems)
    index = -1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            index += 1
            yield index, ItemProblem(index, {"row": f"cannot be read: {exc}"}, code="invalid_csv")
            continue
        index += 1
        if not row:
            continue
        if len(row) != len(header):
            yield (
                index,
                ItemProblem(
                    index,
                    {"row": f"has {len(row)} columns; the header has {len(header)}"},
                    code="wrong_column_count",
                ),
            )
            continue
        if _has_bad_bytes(row):
            yield index, ItemProblem(index, {"row": "is not UTF-8"}, code="invalid_utf8")
            continue
        record: dict[str, Any] = {}
        payload: dict[str, Any] = {}
        for name, value in zip(header, row, strict=True):
            if name in ITEM_COLUMNS:
                if value != "":
                    record[name] = value
            else:
                payload[name] = _infer(value) if infer_types else value
        record["payload"] = payload
        yield index, record


# --- ZIP -----------------------------------------------------------------------------------------


def _member_problems(info: zipfile.ZipInfo) -> list[str]:
    name = info.filename
    problems = []
    if info.is_dir() or name.endswith("/"):
        problems.append("is a directory; the package must hold files only")
    elif "/" in name or "\\" in name:
        problems.append("is inside a directory; the package must hold files only")
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        problems.append("has an absolute path")
    if ".." in path.parts:
        problems.append("has a '..' path")
    if stat.S_ISLNK(info.external_attr >> 16):
        problems.append("is a symbolic link")
    if info.flag_bits & 0x1:
        problems.append("is encrypted")
    if not name or name in (".", ".."):
        problems.append("has no usable name")
    return problems


def zip_records(
    path: Path,
    *,
    dest: Path,
    max_members: int,
    max_uncompressed: int,
    payload: dict[str, Any] | None = None,
) -> Iterator[Record]:
    """Check the whole package, then extract each member file into `dest` as it is read.

    The sizes in a ZIP's headers are the sender's word; the bytes actually inflated are
    counted while extracting, and the package is refused once they pass the limit.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileRejected(f"the body is not a ZIP file: {exc}") from None
    with archive:
        infos = archive.infolist()
        errors = []
        seen: set[str] = set()
        for position, info in enumerate(infos):
            for message in _member_problems(info):
                errors.append({"index": position, "external_id": info.filename, "message": message})
            if info.filename in seen:
                errors.append(
                    {
                        "index": position,
                        "external_id": info.filename,
                        "message": "is a duplicate name",
                    }
                )
            seen.add(info.filename)
        if len(infos) > max_members:
            errors.append(
                {
                    "field": "package",
                    "message": f"has {len(infos)} members; the limit is {max_members}",
                }
            )
        declared = sum(info.file_size for info in infos)
        if declared > max_uncompressed:
            errors.append(
                {
                    "field": "package",
                    "message": f"unpacks to {declared} bytes; the limit is {max_uncompressed}",
                }
            )
        if not infos:
            errors.append({"field": "package", "message": "is empty"})
        if errors:
            raise FileRejected("the ZIP package is refused", errors)
        dest.mkdir(parents=True, exist_ok=True)
        budget = [max_uncompressed]
        for position, info in enumerate(infos):
            target = dest / uuid.uuid4().hex
            try:
                _extract(archive, info, target, budget)
            except (
                zipfile.BadZipFile,
                zipfile.LargeZipFile,
                OSError,
                EOFError,
                RuntimeError,
            ) as exc:
                problem = {"index": position, "external_id": info.filename}
                problem["message"] = f"cannot be read: {exc}"
                raise FileRejected("the ZIP package is damaged", [problem]) from None
            record = {"external_id": info.filename, "key": info.filename, "payload": payload or {}}
            yield position, {**record, "_file": target}


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: list[int]):
    """Inflate one member to `target`, spending `budget[0]` bytes; refuse it once spent."""
    with archive.open(info) as source, open(target, "wb") as out:
        while block := source.read(COPY_BLOCK):
            budget[0] -= len(block)
            if budget[0] < 0:
                message = "unpacks to more than the limit (checked while unpacking)"
                raise FileRejected(
                    "the ZIP package unpacks to more than its limit",
                    [{"field": "package", "message": message}],
                )
            out.write(block)
