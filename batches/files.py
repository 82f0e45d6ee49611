"""Keep a batch's files in Django's "default" storage: the data dir, or an S3 bucket.

Names are relative to the storage and the same in both: `batches/<id>/in/...` for file
items, `batches/<id>/out/...` for output files. Files are made on local disk (an upload, a
ZIP member, a job's output) and then saved; a FileSystemStorage on the same disk takes
them by a rename, any other storage by a streamed upload. Deletes go by a batch's prefix,
so files that no row names any more (a lost lease's outputs) go too.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages


def storage() -> Storage:
    """Return the storage that keeps batchsite's files."""
    return storages["default"]


def batch_prefix(batch_id: uuid.UUID | str) -> str:
    """Return the storage prefix under which a batch's files are kept."""
    return f"batches/{batch_id}"


def inputs_prefix(batch_id: uuid.UUID | str) -> str:
    """Return the storage prefix of a batch's input files (file items)."""
    return f"{batch_prefix(batch_id)}/in"


def outputs_prefix(batch_id: uuid.UUID | str) -> str:
    """Return the storage prefix of a batch's output files."""
    return f"{batch_prefix(batch_id)}/out"


def packages_prefix(batch_id: uuid.UUID | str) -> str:
    """Return the storage prefix of a batch's stored packages (BATCHSITE_PACKAGE_REDIRECT)."""
    return f"{batch_prefix(batch_id)}/package"


def presigns() -> bool:
    """Say whether the storage hands out signed URLs a client can download from itself."""
    # Imported here: boto3 added some 7 MB to every worker and web process, and only S3
    # set-ups need it.
    from storages.backends.s3 import S3Storage

    return isinstance(storage(), S3Storage)


def download_url(name: str, *, filename: str) -> str:
    """Return a presigned URL that downloads the stored file `name` saved as `filename`."""
    from storages.backends.s3 import S3Storage

    store = storage()
    assert isinstance(store, S3Storage), "only an S3 storage presigns URLs"
    disposition = f'attachment; filename="{filename}"'
    url: str = store.url(name, parameters={"ResponseContentDisposition": disposition})
    return url


def prefixes_delete(prefixes: list[str]) -> None:
    """Delete every stored file under each of `prefixes`."""
    for prefix in prefixes:
        prefix_delete(prefix)


def scratch_dir() -> Path:
    """Return this host's folder for files on their way into storage, inside the data dir.

    Inside the data dir, so that a FileSystemStorage under it takes them by a rename.
    """
    path = Path(settings.BATCHSITE_DATA_DIR) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


class _LocalFile(File):
    """A finished local file: FileSystemStorage moves it into place instead of copying it."""

    def temporary_file_path(self) -> str:
        """Return the file's path (Django's storage moves a file that has one)."""
        return str(self.name)


def file_store(path: Path, name: str) -> str:
    """Save the local file at `path` into storage as `name`; return the name it got.

    The local file is gone afterwards, moved or uploaded; on failure it is left as it was.
    """
    store = storage()
    if isinstance(store, FileSystemStorage):
        # file_move_safe renames within one file system, else copies in blocks.
        return store.save(name, _LocalFile(None, name=str(path)))
    with open(path, "rb") as handle:
        stored = store.save(name, File(handle))
    path.unlink(missing_ok=True)
    return stored


def upload_store(upload: IO[bytes], name: str) -> str:
    """Save an uploaded file (or any binary file object) into storage; return its name."""
    content = upload if isinstance(upload, File) else File(upload)
    return storage().save(name, content)


def file_open(name: str) -> File:
    """Open a stored file for reading, in binary.

    S3's file object downloads into a temporary file that spools to disk, never whole into
    memory past the storage's max_memory_size.
    """
    return storage().open(name, "rb")


def files_delete(names: list[str]) -> None:
    """Delete stored files by name; one that is already gone is no error."""
    store = storage()
    for name in names:
        store.delete(name)


def prefix_delete(prefix: str) -> None:
    """Delete every stored file under `prefix` (a folder, or an S3 key prefix)."""
    store = storage()
    if isinstance(store, FileSystemStorage):
        shutil.rmtree(store.path(prefix), ignore_errors=True)
        return
    # Object stores have no folders: walk the prefix's "directories" and delete each key.
    # Our names are at most a few levels deep, so the walk is short.
    pending = [prefix.rstrip("/")]
    while pending:
        current = pending.pop()
        folders, names = store.listdir(current)
        for name in names:
            store.delete(f"{current}/{name}")
        pending.extend(f"{current}/{folder}" for folder in folders)
