"""Read uploaded files (JSONL, a JSON array, CSV) one record at a time, never all at once.

Each reader yields (index, record) where index is the 0-based line, row, element or member
number in the file and record is an item object to validate, or an ItemProblem when the
line itself cannot be read. A problem that condemns the whole file raises FileRejected.
ZIP packages are read by batches.ingest.archives, which shares these conventions.

A file's format comes from its Content-Type, else its name, else its first bytes
(format_sniff): a file URL often has no extension, and object stores serve what they do
not know as application/octet-stream.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from batches.ingest.items import ItemProblem
from batches.jsondepth import DEFAULT_MAX_DEPTH, json_too_deep, json_value_end

JSONL_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})
JSON_TYPES = frozenset({"application/json"})
CSV_TYPES = frozenset({"text/csv", "application/csv"})
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed"})
ITEM_COLUMNS = ("external_id", "type", "key")
UTF8_BOM = codecs.BOM_UTF8
COPY_BLOCK = 64 * 1024
# A body of this type is read by its content (format_sniff), not refused.
OCTET_STREAM = "application/octet-stream"
# How much of a file format_sniff looks at.
SNIFF_BYTES = 8 * 1024
# A ZIP starts with a local file header, or (empty) with the end of its central directory.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# What format_sniff recognises, for messages that refuse a body.
SNIFFED_FORMATS = (
    "JSON Lines, a JSON array of items, CSV (a header row of comma-separated column names) or ZIP"
)

Record = tuple[int, dict[str, Any] | ItemProblem]
# Numbers as JSON writes them, in ASCII digits only: "1_000" or full-width digits stay text.
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
NOT_BLANK = re.compile(r"[^ \t\r\n]")
# Characters read past a decoded element before it is trusted not to have been cut short.
LOOKAHEAD = 64


class FileRejected(Exception):
    """The file as a whole is refused; `errors` lists what is wrong with it."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or []


def media_type(content_type: str) -> str:
    """Return a Content-Type's media type without its parameters, in lower case."""
    return content_type.split(";", 1)[0].strip().lower()


def format_of(content_type: str) -> str | None:
    """Return "jsonl", "json", "csv" or "zip" for a Content-Type, or None if unsupported."""
    media = media_type(content_type)
    if media in JSONL_TYPES:
        return "jsonl"
    if media in JSON_TYPES:
        return "json"
    if media in CSV_TYPES:
        return "csv"
    if media in ZIP_TYPES:
        return "zip"
    return None


def format_of_name(name: str) -> str | None:
    """Guess the format from a file name's extension."""
    suffix = PurePosixPath(name).suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".zip": "zip"}.get(suffix)


def format_sniff(head: bytes) -> str | None:
    """Return the format a file's first bytes show ("zip", "json", "jsonl" or "csv"), or None.

    ZIP by its magic bytes; a JSON array by its `[` and JSON Lines by its `{` (after any
    BOM and blank space); CSV by a first line of UTF-8 text holding a comma, in a file
    without NUL bytes. So a one-column CSV needs its Content-Type or extension.
    """
    if head.startswith(ZIP_MAGIC):
        return "zip"
    text = head.removeprefix(UTF8_BOM)
    start = text.lstrip(b" \t\r\n")[:1]
    if start == b"[":
        return "json"
    if start == b"{":
        return "jsonl"
    first_line = text.split(b"\n", 1)[0].rstrip(b"\r")
    if b"\x00" in head or b"," not in first_line:
        return None
    try:
        # The first line may be cut short by the head's end, in the middle of a character.
        line = codecs.getincrementaldecoder("utf-8")().decode(first_line, final=False)
    except UnicodeDecodeError:
        return None
    return None if CONTROL_CHARACTERS.search(line) else "csv"


def format_sniff_file(path: Path) -> str | None:
    """Return the format the first bytes of the file at `path` show, or None."""
    with open(path, "rb") as file:
        return format_sniff(file.read(SNIFF_BYTES))


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


def _too_deep(index: int, field: str, max_depth: int) -> ItemProblem:
    """Return the problem of a line or element nested more than `max_depth` deep."""
    return ItemProblem(
        index, {field: f"nests more than {max_depth} levels deep"}, code="json_too_deep"
    )


def jsonl_records(
    file: IO[bytes], *, max_line: int = 1024 * 1024, max_depth: int = DEFAULT_MAX_DEPTH
) -> Iterator[Record]:
    """Yield one item object per non-blank line; a line nested more than `max_depth` deep is
    a problem, found before it is parsed."""
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
        if json_too_deep(text, max_depth):
            yield index, _too_deep(index, "line", max_depth)
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            yield index, ItemProblem(index, {"line": f"is not JSON: {exc}"}, code="invalid_json")
            continue
        yield index, record


# --- a JSON array --------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()


class _JsonArrayReader:
    """Decode the elements of a JSON array one at a time from a sliding text buffer.

    The buffer holds the element being decoded and at most the next read, so memory is
    bounded by `max_item` however many elements the array has. Bytes that are not UTF-8
    come through as lone surrogates, which item_parse refuses for their item only.

    No element nested more than `max_depth` deep is decoded: the buffer is checked once
    from the first element it holds, and only a buffer that nests too deep somewhere has
    its elements' ends found one by one, so the deep ones can be skipped.
    """

    def __init__(self, file: IO[bytes], max_item: int, max_depth: int):
        self.file = file
        self.max_item = max_item
        self.max_depth = max_depth
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")
        self.buffer = ""
        self.pos = 0
        self.eof = False
        # Whether no element from `pos` to the buffer's end nests too deep; None: not known.
        self.shallow: bool | None = None

    def more(self, size: int = COPY_BLOCK) -> bool:
        """Read up to `size` more bytes into the buffer; False once the file has ended."""
        if self.eof:
            return False
        block = self.file.read(size)
        self.eof = not block
        self.buffer = self.buffer[self.pos :] + self.decoder.decode(block, final=self.eof)
        self.pos = 0
        self.shallow = None
        return True

    def peek(self) -> str:
        """Skip blank space; return the next character without taking it, "" at the end."""
        while True:
            found = NOT_BLANK.search(self.buffer, self.pos)
            if found:
                self.pos = found.start()
                return self.buffer[self.pos]
            self.pos = len(self.buffer)
            if not self.more():
                return ""

    def value(self, index: int) -> Any:
        """Decode the element that starts at the next non-blank character, and take it; an
        element nested too deep is taken undecoded, as its ItemProblem."""
        self.peek()
        while True:
            if self.shallow is None:
                self.shallow = not json_too_deep(self.buffer[self.pos :], self.max_depth)
            unended = False
            if not self.shallow and self.buffer[self.pos : self.pos + 1] in ("[", "{"):
                end = json_value_end(self.buffer, self.pos)
                if end is not None and json_too_deep(self.buffer[self.pos : end], self.max_depth):
                    self.pos, self.shallow = end, None
                    return _too_deep(index, "item", self.max_depth)
                unended = end is None
            if unended:
                # Decoding it before its end is read could go as deep as the text does.
                error, cut = "it does not end", True
            else:
                try:
                    value, end = _DECODER.raw_decode(self.buffer, self.pos)
                except json.JSONDecodeError as exc:
                    error = exc.msg
                    # An element cut by the buffer's end fails near it, or inside an open string.
                    cut = exc.pos >= len(self.buffer) - LOOKAHEAD or exc.msg.startswith(
                        "Unterminated string"
                    )
                except ValueError as exc:
                    # An integer of more digits than Python converts: no more text mends it.
                    error, cut = str(exc), False
                else:
                    # A number cut by the buffer's end reads as a shorter one: decode it again.
                    if self.eof or end <= len(self.buffer) - LOOKAHEAD:
                        self.pos = end
                        return value
                    error, cut = "it is cut short", True
            if not cut or self.eof:
                raise _element_rejected(index, f"is not JSON: {error}")
            held = len(self.buffer) - self.pos
            if held > self.max_item:
                raise _element_rejected(index, f"is longer than {self.max_item} characters")
            # Read as much again as is held, so a long element is decoded a few times at most.
            self.more(max(COPY_BLOCK, held))


def _element_rejected(index: int, message: str) -> FileRejected:
    """Return the refusal of a whole JSON array for what is wrong at its element `index`."""
    return FileRejected(
        f"item {index} of the JSON array {message}", [{"index": index, "message": message}]
    )


def json_array_records(
    file: IO[bytes], *, max_item: int = 1024 * 1024, max_depth: int = DEFAULT_MAX_DEPTH
) -> Iterator[Record]:
    """Yield each element of a JSON array of items, indexed by its position.

    Unlike a bad line of JSON Lines, a syntax error leaves no way to tell where the next
    element starts, so it refuses the whole file, naming the element's index; so does an
    element longer than `max_item` characters, which is never held whole. An element
    nested more than `max_depth` deep is a problem of its own, as a line of JSON Lines is.
    """
    reader = _JsonArrayReader(file, max_item, max_depth)
    start = reader.peek()
    if start != "[":
        found = f"starts with {start!r}" if start else "is empty"
        raise FileRejected(
            f"the body is not a JSON array of items: it {found} "
            "(JSON Lines go as application/x-ndjson)",
            [{"field": "file", "message": "must be a JSON array of item objects"}],
        )
    reader.pos += 1
    if reader.peek() == "]":
        reader.pos += 1
    else:
        index = 0
        while True:
            yield index, reader.value(index)
            after = reader.peek()
            reader.pos += 1
            if after == "]":
                break
            if after != ",":
                found = repr(after) if after else "the end of the file"
                raise _element_rejected(index, f"is followed by {found}, not ',' or ']'")
            index += 1
    rest = reader.peek()
    if rest:
        raise FileRejected(
            "the JSON array is followed by more text",
            [{"field": "file", "message": f"has {rest!r} after the closing ']'"}],
        )


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
    problems = _header_problems(header)
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
        yield index, _csv_record(header, row, infer_types)


def _header_problems(header: list[str]) -> list[dict[str, str]]:
    problems = []
    if _has_bad_bytes(header):
        problems.append({"field": "header", "message": "is not UTF-8"})
    if any(not name for name in header):
        problems.append({"field": "header", "message": "has an empty column name"})
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        problems.append({"field": "header", "message": f"repeats {', '.join(duplicates)}"})
    return problems


def _csv_record(header: list[str], row: list[str], infer_types: bool) -> dict[str, Any]:
    """Return the item object of a row: item columns as fields, the rest as the payload."""
    record: dict[str, Any] = {}
    payload: dict[str, Any] = {}
    for name, value in zip(header, row, strict=True):
        if name in ITEM_COLUMNS:
            if value != "":
                record[name] = value
        else:
            payload[name] = _infer(value) if infer_types else value
    record["payload"] = payload
    return record
