"""Files that tests feed to uploads, sources and readers: ZIPs (good, hostile, broken), JSONL
and CSV bodies, and the sample files every sniffable format is recognised by."""

from __future__ import annotations

import csv
import io
import json
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

MB = 1024 * 1024


def zip_data(members, *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """Return a ZIP of `members`: (name or ZipInfo, bytes) pairs, or a dict of name to bytes."""
    if isinstance(members, dict):
        members = members.items()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point of some tests
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return buffer.getvalue()


def make_zip(path: Path, members, **kwargs) -> Path:
    """Write a ZIP of `members` to `path` and return it."""
    path.write_bytes(zip_data(members, **kwargs))
    return path


def encrypted_zip_data() -> bytes:
    """Return a ZIP whose second member is flagged as encrypted."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.txt", b"fine")
        archive.writestr("secret.txt", b"hidden")
        # The central directory is written at close from these infos: flag it as encrypted.
        archive.getinfo("secret.txt").flag_bits |= 0x1
    return buffer.getvalue()


def symlink_info(name: str) -> zipfile.ZipInfo:
    """Return a member entry that says it is a symbolic link."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def lying_zip_data(*, real_size: int, declared: int) -> bytes:
    """Return a ZIP whose second member holds `real_size` zeros but claims `declared` bytes."""
    data = bytearray(zip_data([("ok.txt", b"fine"), ("big.bin", b"\0" * real_size)]))
    local = data.find(b"PK\x03\x04", 1)  # the second member's local header
    struct.pack_into("<I", data, local + 22, declared)
    central = data.find(b"PK\x01\x02")
    central = data.find(b"PK\x01\x02", central + 1)
    struct.pack_into("<I", data, central + 24, declared)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        assert archive.getinfo("big.bin").file_size == declared
    return bytes(data)


def bomb_data(size: int = 10 * MB) -> bytes:
    """Return a ZIP of one member: `size` zeros, compressed a thousandfold."""
    data = zip_data([("zeros.bin", b"\0" * size)])
    assert len(data) < size // 500
    return data


def jsonl(*objs) -> bytes:
    """Return the objects as JSONL, one per line."""
    return b"".join(json.dumps(obj).encode() + b"\n" for obj in objs)


def csv_bytes(*rows, lineterminator="\n", quoting=csv.QUOTE_MINIMAL) -> bytes:
    """Return the rows as a CSV file."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=lineterminator, quoting=quoting)
    writer.writerows(rows)
    return out.getvalue().encode()


SNIFFED_FILES = [
    pytest.param(
        "jsonl",
        jsonl({"external_id": "a", "payload": {"n": "1"}}, {"external_id": "b", "payload": {}}),
        "echo",
        id="jsonl",
    ),
    pytest.param(
        "json",
        json.dumps(
            [{"external_id": "a", "payload": {"n": "1"}}, {"external_id": "b", "payload": {}}]
        ).encode(),
        "echo",
        id="json",
    ),
    pytest.param("csv", csv_bytes(["external_id", "n"], ["a", "1"], ["b", ""]), "echo", id="csv"),
    pytest.param("zip", zip_data([("a", b"alpha"), ("b", b"beta")]), "test.stamp", id="zip"),
]


UNRECOGNISABLE = [
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", id="png"),
    pytest.param(b"hello world\nthis is not a batch file\n", id="text-without-a-comma"),
]


def tree(path: Path) -> list[str]:
    """Return every file under `path`, relative to it."""
    if not path.exists():
        return []
    return sorted(str(found.relative_to(path)) for found in path.rglob("*") if found.is_file())


def jsonl_text(lines: list) -> str:
    """Return JSONL text: each line is a string as it is, or an object to dump."""
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


def batch_files_dir(batch_id) -> Path:
    """Return the folder where the file system storage (the default) keeps a batch's files."""
    from django.conf import settings

    from batches import files

    return Path(settings.MEDIA_ROOT) / files.batch_prefix(batch_id)
