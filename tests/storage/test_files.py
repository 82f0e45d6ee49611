"""batches.files on the default FileSystemStorage: moves instead of copies, prefix deletes."""

from __future__ import annotations

from pathlib import Path

from batches import files


def test_file_store__file_system_storage_takes_the_file_by_a_rename(settings, tmp_path):
    settings.BATCHSITE_DATA_DIR = tmp_path
    settings.MEDIA_ROOT = tmp_path / "files"
    made = files.scratch_dir() / "output"
    made.write_bytes(b"derived")
    inode = made.stat().st_ino

    name = files.file_store(made, "batches/b1/out/abc")

    stored = Path(settings.MEDIA_ROOT) / name
    assert name == "batches/b1/out/abc"
    assert stored.read_bytes() == b"derived"
    assert stored.stat().st_ino == inode  # moved, not copied
    assert not made.exists()


def test_prefix_delete__removes_the_batch_folder_and_nothing_else(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "files"
    for name in ("batches/b1/in/x", "batches/b1/out/y", "batches/b2/out/z"):
        path = Path(settings.MEDIA_ROOT) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"data")

    files.prefix_delete(files.batch_prefix("b1"))

    assert not (Path(settings.MEDIA_ROOT) / "batches" / "b1").exists()
    assert (Path(settings.MEDIA_ROOT) / "batches/b2/out/z").read_bytes() == b"data"
