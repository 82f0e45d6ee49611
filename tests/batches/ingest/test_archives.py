"""Tests for batches.ingest.archives (the ZIP reader), and the ZIP packages other tests send.

Everything here runs without the database: the reader sees a file on disk.
"""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import pytest

from batches.ingest import archives
from batches.ingest.formats import FileRejected
from tests.helpers.files import (
    MB,
    bomb_data,
    encrypted_zip_data,
    lying_zip_data,
    make_zip,
    symlink_info,
    tree,
)


def read_zip(path: Path, dest: Path, *, max_members=100, max_uncompressed=10 * MB):
    return list(
        archives.zip_records(
            path, dest=dest, max_members=max_members, max_uncompressed=max_uncompressed
        )
    )


def test_zip_records__each_member_becomes_a_file_record(tmp_path):
    path = make_zip(tmp_path / "in.zip", [("a.pdf", b"%PDF-a"), ("b.txt", b"bee")])
    dest = tmp_path / "out"

    found = read_zip(path, dest)

    assert [(index, r["external_id"], r["key"], r["payload"]) for index, r in found] == [
        (0, "a.pdf", "a.pdf", {}),
        (1, "b.txt", "b.txt", {}),
    ]
    assert [r["_file"].read_bytes() for _, r in found] == [b"%PDF-a", b"bee"]
    assert all(r["_file"].parent == dest for _, r in found)
    assert len(tree(dest)) == 2


def test_zip_records__stored_members_are_read_too(tmp_path):
    path = make_zip(tmp_path / "in.zip", [("a.txt", b"aaa")], compression=zipfile.ZIP_STORED)

    [(_, record)] = read_zip(path, tmp_path / "out")

    assert record["_file"].read_bytes() == b"aaa"


@pytest.mark.parametrize(
    ("members", "index", "message"),
    [
        ([("ok.txt", b"x"), ("docs/", b"")], 1, "is a directory"),
        ([("ok.txt", b"x"), ("docs/a.txt", b"x")], 1, "inside a directory"),
        ([("ok.txt", b"x"), ("../evil.txt", b"x")], 1, "'..' path"),
        ([("ok.txt", b"x"), ("..", b"x")], 1, "'..' path"),
        ([("/etc/passwd", b"x"), ("ok.txt", b"x")], 0, "absolute path"),
        ([("ok.txt", b"x"), ("C:evil.txt", b"x")], 1, "absolute path"),
        ([("ok.txt", b"x"), ("..\\evil.txt", b"x")], 1, "'..' path"),
        ([("ok.txt", b"x"), (symlink_info("link"), b"/etc/passwd")], 1, "symbolic link"),
        ([("a.txt", b"x"), ("b.txt", b"y"), ("a.txt", b"z")], 2, "duplicate name"),
    ],
    ids=[
        "directory",
        "nested",
        "dotdot",
        "dotdot-alone",
        "absolute",
        "drive",
        "backslash-dotdot",
        "symlink",
        "duplicate",
    ],
)
def test_zip_records__bad_member_rejects_the_whole_package(tmp_path, members, index, message):
    path = make_zip(tmp_path / "in.zip", members)
    dest = tmp_path / "out"

    with pytest.raises(FileRejected) as caught:
        read_zip(path, dest)

    assert any(
        error.get("index") == index and message in error["message"] for error in caught.value.errors
    ), caught.value.errors
    assert tree(dest) == []


def test_zip_records__encrypted_member_rejects_the_whole_package(tmp_path):
    path = tmp_path / "in.zip"
    path.write_bytes(encrypted_zip_data())

    with pytest.raises(FileRejected) as caught:
        read_zip(path, tmp_path / "out")

    assert caught.value.errors == [
        {"index": 1, "external_id": "secret.txt", "message": "is encrypted"}
    ]
    assert tree(tmp_path / "out") == []


def test_zip_records__more_members_than_the_limit_is_rejected(tmp_path):
    path = make_zip(tmp_path / "in.zip", [(f"{n}.txt", b"x") for n in range(4)])

    with pytest.raises(FileRejected) as caught:
        read_zip(path, tmp_path / "out", max_members=3)

    assert any("4 members; the limit is 3" in e["message"] for e in caught.value.errors)
    assert tree(tmp_path / "out") == []


def test_zip_records__members_at_the_limit_are_accepted(tmp_path):
    path = make_zip(tmp_path / "in.zip", [(f"{n}.txt", b"x") for n in range(3)])

    assert len(read_zip(path, tmp_path / "out", max_members=3)) == 3


def test_zip_records__bomb_is_rejected_by_declared_size(tmp_path):
    path = tmp_path / "in.zip"
    path.write_bytes(bomb_data())

    with pytest.raises(FileRejected) as caught:
        read_zip(path, tmp_path / "out", max_uncompressed=MB)

    assert any("the limit is" in e["message"] for e in caught.value.errors)
    assert tree(tmp_path / "out") == []


def test_zip_records__uncompressed_size_at_the_limit_is_accepted(tmp_path):
    path = make_zip(tmp_path / "in.zip", [("a.bin", b"\0" * 1000), ("b.bin", b"\0" * 24)])

    assert len(read_zip(path, tmp_path / "out", max_uncompressed=1024)) == 2


def test_zip_records__header_lying_about_its_size_is_rejected(tmp_path):
    path = tmp_path / "in.zip"
    path.write_bytes(lying_zip_data(real_size=2 * MB, declared=100))
    dest = tmp_path / "out"

    with pytest.raises(FileRejected) as caught:
        read_zip(path, dest, max_uncompressed=MB)

    assert caught.value.errors
    assert any(
        e.get("external_id") == "big.bin" or "limit" in e["message"] for e in caught.value.errors
    )
    # Records yielded before the bad member leave files behind; stage() discards them.


def test_zip_records__inflated_bytes_are_counted_while_extracting(tmp_path, monkeypatch):
    """Headers that understate the sizes pass the declared check; the real bytes do not."""
    path = make_zip(tmp_path / "in.zip", [("a.bin", b"\0" * MB), ("b.bin", b"\0" * MB)])
    real_infolist = zipfile.ZipFile.infolist
    real_open = zipfile.ZipFile.open

    def lying_infolist(self):
        lies = [copy.copy(info) for info in real_infolist(self)]
        for lie in lies:
            lie.file_size = 10
        return lies

    def honest_open(self, name, *args, **kwargs):
        if isinstance(name, zipfile.ZipInfo):
            name = name.filename
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying_infolist)
    monkeypatch.setattr(zipfile.ZipFile, "open", honest_open)
    found = []

    with pytest.raises(FileRejected) as caught:  # noqa: PT012 - records read before the refusal
        for record in archives.zip_records(
            path, dest=tmp_path / "out", max_members=10, max_uncompressed=MB + 1
        ):
            found.append(record)

    assert [index for index, _ in found] == [0]
    assert caught.value.errors == [
        {"field": "package", "message": "unpacks to more than the limit (checked while unpacking)"}
    ]


@pytest.mark.parametrize(
    "body", [b"", b"not a zip at all", b"PK\x03\x04garbage"], ids=["empty", "text", "bad-magic"]
)
def test_zip_records__not_a_zip_is_rejected(tmp_path, body):
    path = tmp_path / "in.zip"
    path.write_bytes(body)

    with pytest.raises(FileRejected, match="not a ZIP"):
        read_zip(path, tmp_path / "out")


def test_zip_records__package_without_members_is_rejected(tmp_path):
    path = make_zip(tmp_path / "in.zip", [])

    with pytest.raises(FileRejected) as caught:
        read_zip(path, tmp_path / "out")

    assert caught.value.errors == [{"field": "package", "message": "is empty"}]
