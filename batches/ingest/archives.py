"""Read a ZIP package: check every member, then extract each file as an item's input.

The package is judged whole before anything is extracted; a bad member refuses all of it,
as formats.FileRejected. Each member then becomes a record with a `_file` path, in the
(index, record) shape the other readers in batches.ingest.formats yield.
"""

from __future__ import annotations

import stat
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from batches.ingest.formats import COPY_BLOCK, FileRejected, Record


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


def _extract(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: list[int]
) -> None:
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
