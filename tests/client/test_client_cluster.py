"""The Python client against a live server and a real qcluster: a batch's whole life."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
import zipfile

import pytest

from batches.models import Batch, Item
from batchsite_client import Client, NotFound

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]


def echo_items(count: int, pulled: list[int], start: int = 0):
    """Yield echo items, recording how many the client has pulled so far."""
    for n in range(start, start + count):
        pulled.append(n)
        yield {"external_id": f"gen-{n}", "payload": {"n": n}}


def test_client__a_batch_from_create_to_export(client, transport, cluster, settings, tmp_path):
    settings.BATCHSITE_MAX_ITEMS_PER_REQUEST = 10
    batch_id = uuid.uuid4()

    first = client.create_batch(type="echo", id=batch_id, label="client", metadata={"a": 1})
    again = client.create_batch(type="echo", id=batch_id, label="client", metadata={"a": 1})

    assert first["id"] == again["id"] == str(batch_id)
    assert Batch.objects.count() == 1

    pulled: list[int] = []
    sent_at: list[int] = []
    transport.on_request = lambda request: sent_at.append(len(pulled))
    added = client.add_items(first, echo_items(25, pulled), per_request=10)
    transport.on_request = lambda request: None

    assert added == 25
    # Three requests of at most ten items, each sent before the generator was read further.
    assert sent_at == [11, 21, 25]
    lines = tmp_path / "more.jsonl"
    lines.write_text(
        "".join(json.dumps({"external_id": f"file-{n}", "payload": {"n": n}}) + "\n"
                for n in range(25, 40))
    )  # fmt: skip
    report = client.upload(first, lines)
    assert report["added"] == 15
    assert report["rejected"] == 0

    client.commit(first)
    seen: list[float] = []
    ended = client.wait(first, poll_interval=0.2, progress=lambda b: seen.append(b["progress"]))

    assert ended["status"] == "finished"
    assert ended["counts"]["succeeded"] == 40
    assert seen == sorted(seen)
    assert seen[-1] == 1.0

    results = list(client.iter_results(first))
    assert sorted(item["index"] for item in results) == list(range(40))
    assert all(item["result"] == item["payload"] for item in results)

    jsonl, table = tmp_path / "items.jsonl", tmp_path / "items.csv"
    client.download_export(first, jsonl)
    client.download_export(first, table, format="csv", status="succeeded")
    exported = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [row["index"] for row in exported] == list(range(40))
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert len(rows) == 40
    assert {row["status"] for row in rows} == {"succeeded"}
    assert not list(tmp_path.glob("*.part"))


def test_client__iter_results_yields_items_while_the_batch_runs(client, cluster):
    batch = client.create_batch(
        type="echo", items=[{"payload": {"n": n, "sleep_ms": 30}} for n in range(30)]
    )
    client.commit(batch)

    indexes = [item["index"] for item in client.iter_results(batch, page_size=7, poll_interval=0.1)]

    assert sorted(indexes) == list(range(30))
    assert client.get_batch(batch)["status"] == "finished"


def test_client__package_download(client, cluster, signer, tmp_path):
    documents = {"a.txt": b"first document\n", "b.pdf": b"%PDF-1.4 second\n"}
    archive = tmp_path / "documents.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name, data in documents.items():
            out.writestr(name, data)
    batch = client.create_batch(type="document.sign")
    assert client.upload(batch, archive)["added"] == 2
    client.commit(batch)
    assert client.wait(batch, poll_interval=0.2, timeout=120)["status"] == "finished"

    saved = client.download_package(batch, tmp_path / "signed.zip")

    package = zipfile.ZipFile(tmp_path / "signed.zip")
    assert saved == (tmp_path / "signed.zip").stat().st_size
    names = set(package.namelist())
    assert {"a.txt", "a.txt.p7s", "b.pdf", "b.pdf.p7s", "manifest.json"} <= names
    for entry in json.loads(package.read("manifest.json"))["files"]:
        assert entry["sha256"] == hashlib.sha256(package.read(entry["name"])).hexdigest()
    assert package.read("a.txt") == documents["a.txt"]


def test_client__pause_resume_cancel_rerun_delete(client: Client, cluster):
    batch = client.create_batch(
        type="echo", items=[{"payload": {"n": n, "sleep_ms": 100}} for n in range(40)]
    )
    client.commit(batch)

    assert client.pause(batch)["paused"] is True
    assert client.resume(batch)["paused"] is False
    cancelled = client.cancel(batch)
    assert cancelled["status"] in ("cancelling", "cancelled")
    assert client.wait(batch, poll_interval=0.2)["status"] == "cancelled"

    client.rerun(batch, items="all")
    rerun = client.wait(batch, poll_interval=0.2)
    assert rerun["status"] == "finished"
    assert rerun["counts"]["succeeded"] == 40

    client.delete_batch(batch)

    with pytest.raises(NotFound) as caught:
        client.get_batch(batch)
    assert caught.value.code == "not_found"
    assert caught.value.status == 404
    assert not Item.objects.exists()
