"""One rule for what a client may see: an atomic batch's results stay hidden until it finishes.

Every surface that shows an item's result or output files is read twice: while an atomic
batch runs with a succeeded item (hidden), and once the batch has finished (shown). The
rule itself is Batch.results_visible.
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from batches import services
from batches.models import Batch, Item
from tests.compat.test_signing import API as SIGNING
from tests.factories import BatchFactory, ItemFactory
from tests.helpers.api import assert_problem, batch_url

SECRET = "s3cret-result"
OUTPUT_NAME = "photo-200.webp"


@dataclass
class Reader:
    """A batch and the clients that read it through every interface."""

    batch: Batch
    api: APIClient
    key: str
    staff: object
    admin: object


@pytest.fixture
def reader(settings, tmp_path, account, client_a, staff, admin_client) -> Reader:
    """A running atomic batch: item 0 succeeded with a result and an output file, item 1 runs."""
    settings.MEDIA_ROOT = tmp_path / "files"
    batch = BatchFactory(
        account=account,
        type="image.derive",
        atomic=True,
        status=Batch.Status.RUNNING,
        total_items=2,
        succeeded_items=1,
        running_items=1,
    )
    output = Path(settings.MEDIA_ROOT) / "batches" / str(batch.pk) / "out" / uuid.uuid4().hex
    output.parent.mkdir(parents=True)
    output.write_bytes(b"webp bytes")
    ItemFactory(
        batch=batch,
        index=0,
        type="image.derive",
        status=Item.Status.SUCCEEDED,
        result={"secret": SECRET, "source": {"width": 48, "height": 32}},
        output_files=[{"name": OUTPUT_NAME, "path": str(output.relative_to(settings.MEDIA_ROOT))}],
        seq=1,
    )
    ItemFactory(batch=batch, index=1, type="image.derive", status=Item.Status.RUNNING)
    _, key = services.api_key_create(account=account, name="visibility")
    return Reader(batch=batch, api=client_a, key=key, staff=staff, admin=admin_client)


def finish(batch: Batch) -> None:
    """Let the batch end `finished`, as the engine would once item 1 succeeded."""
    Item.objects.filter(batch=batch, index=1).update(
        status=Item.Status.SUCCEEDED, result={"n": 1}, seq=2
    )
    Batch.objects.filter(pk=batch.pk).update(
        status=Batch.Status.FINISHED,
        running_items=0,
        succeeded_items=2,
        last_seq=2,
        finished_at=timezone.now(),
    )


def body(response) -> str:
    assert response.status_code == 200, response.content
    data = b"".join(response.streaming_content) if response.streaming else response.content
    return data.decode()


def zip_names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()


def api(reader: Reader, suffix: str) -> str:
    return body(reader.api.get(batch_url(reader.batch, suffix)))


def brightlocal(reader: Reader) -> str:
    query = {"api-key": reader.key, "batch-id": reader.batch.number}
    return body(APIClient().get("/compat/brightlocal/seo-tools/api/v4/batch", query))


def signing_signed(reader: Reader) -> bool:
    status = reader.api.get(f"{SIGNING}/BatchStatus/{reader.batch.number}").json()
    return (
        status["documents"][0]["signed"]
        == "true"
        == status["documents"][0]["signingResult_Success"]
    )


def dlcs_width(reader: Reader) -> bool:
    customer, number = reader.batch.account.number, reader.batch.number
    url = f"/compat/dlcs/customers/{customer}/queue/batches/{number}/images"
    return reader.api.get(url).json()["member"][0]["width"] == 48


def dashboard(reader: Reader, view: str, *args) -> str:
    return body(reader.staff.get(reverse(f"dashboard:{view}", args=[reader.batch.pk, *args])))


def admin_item(reader: Reader) -> str:
    item = Item.objects.get(batch=reader.batch, index=0)
    return body(reader.admin.get(reverse("admin:batches_item_change", args=[item.pk])))


# Each surface answers: does it show item 0's result (or output file)?
SURFACES: dict[str, Callable[[Reader], bool]] = {
    "api items": lambda r: SECRET in api(r, "items/"),
    "api item": lambda r: SECRET in api(r, "items/0/"),
    "api results": lambda r: SECRET in api(r, "results/"),
    "api export jsonl": lambda r: SECRET in api(r, "export/"),
    "api export csv": lambda r: SECRET in api(r, "export/?format=csv"),
    "brightlocal batch": lambda r: SECRET in brightlocal(r),
    "signing status": signing_signed,
    "dlcs images": dlcs_width,
    "dashboard item result": lambda r: SECRET in dashboard(r, "item-detail", 0),
    "dashboard item output files": lambda r: OUTPUT_NAME in dashboard(r, "item-detail", 0),
    "dashboard export": lambda r: SECRET in dashboard(r, "batch-download", "items.jsonl"),
    "dashboard package link": lambda r: "export-package" in dashboard(r, "batch-detail"),
    "admin item result": lambda r: SECRET in admin_item(r),
    "admin item output files": lambda r: OUTPUT_NAME in admin_item(r),
}


@pytest.mark.parametrize("surface", SURFACES)
def test_results_visible__running_atomic_batch_hides_them_on_every_surface(reader, surface):
    assert not SURFACES[surface](reader)


@pytest.mark.parametrize("surface", SURFACES)
def test_results_visible__finished_atomic_batch_shows_them_on_every_surface(reader, surface):
    finish(reader.batch)

    assert SURFACES[surface](reader)


def test_results_visible__only_a_finished_atomic_batch_shows_results():
    def visible(status: str, *, atomic: bool) -> bool:
        return Batch(atomic=atomic, status=status).results_visible

    assert [s for s in Batch.Status.values if visible(s, atomic=True)] == ["finished"]
    assert all(visible(status, atomic=False) for status in Batch.Status.values)


# --- packages -------------------------------------------------------------------------------------


def test_package__running_atomic_batch_is_refused_everywhere(reader):
    number = reader.batch.number

    assert_problem(reader.api.get(batch_url(reader.batch, "package/")), 409, "batch_not_finished")
    signing = reader.api.get(f"{SIGNING}/batchfile/{number}")
    assert (signing.status_code, signing.json()) == (
        404,
        {"error": f"batch {number} is not closed yet; its package is not ready"},
    )
    refused = reader.staff.get(
        reverse("dashboard:batch-download", args=[reader.batch.pk, "package.zip"]), follow=True
    )
    assert [str(m) for m in refused.context["messages"]] == [
        "batch is running; its package is ready once it ends"
    ]


def test_package__atomic_batch_that_did_not_finish_is_refused_everywhere(reader):
    Batch.objects.filter(pk=reader.batch.pk).update(status=Batch.Status.FAILED)
    message = (
        "batch is failed; an atomic batch publishes its results and output files only once "
        "it has finished"
    )

    problem = assert_problem(
        reader.api.get(batch_url(reader.batch, "package/")), 409, "results_hidden"
    )
    signing = reader.api.get(f"{SIGNING}/batchfile/{reader.batch.number}")
    refused = reader.staff.get(
        reverse("dashboard:batch-download", args=[reader.batch.pk, "package.zip"]), follow=True
    )

    assert problem["detail"] == message
    assert (signing.status_code, signing.json()) == (409, {"error": message})
    assert [str(m) for m in refused.context["messages"]] == [message]
    assert "export-package" not in dashboard(reader, "batch-detail")


def test_package__finished_atomic_batch_holds_its_output_files_everywhere(reader):
    finish(reader.batch)
    download = reverse("dashboard:batch-download", args=[reader.batch.pk, "package.zip"])

    api_names = zip_names(reader.api.get(batch_url(reader.batch, "package/")))
    signing_names = zip_names(reader.api.get(f"{SIGNING}/batchfile/{reader.batch.number}"))
    dashboard_names = zip_names(reader.staff.get(download))

    assert api_names == signing_names == dashboard_names == [OUTPUT_NAME, "manifest.json"]
