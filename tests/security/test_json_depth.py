"""JSON nested deeper than BATCHSITE_JSON_MAX_DEPTH: 400 in each surface's own shape, never a 500.

Every way JSON from a client comes in is tried through the HTTP stack: request bodies of
the API and of each dialect, JSON form fields, and the lines and elements of uploads. A body
one level over the limit, and one 5000 levels deep (which made Python's parser raise
RecursionError), is refused and writes nothing; a body exactly at the limit is taken.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from batches import services
from batches.models import Batch, Item
from tests.helpers.api import assert_problem, row_counts
from tests.helpers.files import zip_data

API = "/api/v1"
BATCHES = f"{API}/batches/"
BRIGHTLOCAL_JOBS = "/compat/brightlocal/seo-tools/api/v4/batch/jobs"
CENTRAPAY_BATCHES = "/compat/centrapay/api/batches"
SIGNING_CREATE = "/compat/signing/api/CreateBatch/1"
JSON = "application/json"
# Deep enough that Python's json module raised RecursionError before the limit existed.
VERY_DEEP = 5000


def objects(depth: int, leaf: str = "1") -> str:
    """Return JSON text of objects nested `depth` levels deep around `leaf`."""
    return '{"a": ' * depth + leaf + "}" * depth


def arrays(depth: int, leaf: str = "1") -> str:
    """Return JSON text of arrays nested `depth` levels deep around `leaf`."""
    return "[" * depth + leaf + "]" * depth


@pytest.fixture
def limit() -> int:
    """BATCHSITE_JSON_MAX_DEPTH's default, which the tests run with."""
    return 64


@dataclass
class Caller:
    """An account with a key, and a batch of each kind the surfaces need."""

    account: object
    key: str
    client: APIClient
    open_batch: Batch
    ended_batch: Batch
    brightlocal_batch: Batch

    @property
    def auth(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Api-Key {self.key}"}


@pytest.fixture
def caller(account, settings, tmp_path) -> Caller:
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]
    _, key = services.api_key_create(account=account, name="depth")
    open_batch, _ = services.batch_create(account=account, actor="test", items=[{"payload": {}}])
    ended, _ = services.batch_create(account=account, actor="test", items=[{"payload": {}}])
    services.batch_cancel(batch=ended, actor="test")
    brightlocal, _ = services.batch_create(account=account, actor="test")
    return Caller(
        account=account,
        key=key,
        # A crash must show as the 500 a client would get, not as an exception in the test.
        client=APIClient(raise_request_exception=False),
        open_batch=open_batch,
        ended_batch=ended,
        brightlocal_batch=brightlocal,
    )


def post_json(caller: Caller, path: str, text: str, content_type: str = JSON, **headers):
    return caller.client.generic("POST", path, text.encode(), content_type=content_type, **headers)


# Each surface sends a body nested exactly `depth` levels deep (the body itself is level 1).


def api_batch_create(caller: Caller, depth: int):
    body = '{"type": "echo", "metadata": ' + objects(depth - 1) + "}"
    return post_json(caller, BATCHES, body, **caller.auth)


def api_items_add(caller: Caller, depth: int):
    body = '[{"payload": ' + objects(depth - 2) + "}]"
    return post_json(caller, f"{BATCHES}{caller.open_batch.id}/items/", body, **caller.auth)


def api_rerun(caller: Caller, depth: int):
    body = '{"items": ' + arrays(depth - 1, '"all"') + "}"
    return post_json(caller, f"{BATCHES}{caller.ended_batch.id}/rerun/", body, **caller.auth)


def brightlocal_job_add(caller: Caller, depth: int):
    number = caller.brightlocal_batch.number
    body = (
        f'{{"api-key": "{caller.key}", "batch-id": "{number}", "job-type": "echo", '
        f'"q": {arrays(depth - 1)}}}'
    )
    return post_json(caller, BRIGHTLOCAL_JOBS, body)


def centrapay_batch_create(caller: Caller, depth: int):
    body = (
        f'{{"type": "echo", "url": "http://localhost/items.jsonl", '
        f'"accountId": "{caller.account.number}", "note": {objects(depth - 1)}}}'
    )
    return post_json(caller, CENTRAPAY_BATCHES, body, HTTP_X_API_KEY=caller.key)


def dlcs_queue(caller: Caller, depth: int, content_type: str = JSON):
    member = f'{{"id": "i1", "origin": "http://localhost/a.png", "tags": {arrays(depth - 3)}}}'
    body = f'{{"@type": "hydra:Collection", "member": [{member}]}}'
    path = f"/compat/dlcs/customers/{caller.account.number}/queue"
    return post_json(caller, path, body, content_type, **caller.auth)


def dlcs_queue_as_json_ld(caller: Caller, depth: int):
    return dlcs_queue(caller, depth, "application/ld+json")


def signing_batch_create(caller: Caller, depth: int):
    body = '{"providerSettingsId": "1", "note": ' + objects(depth - 1) + "}"
    return post_json(caller, SIGNING_CREATE, body, **caller.auth)


# How each surface answers a body it refuses as too deep.


def api_refusal(response) -> str:
    body = assert_problem(response, 400, "json_too_deep")
    assert body["errors"][0]["field"] == "body"
    return body["detail"]


def brightlocal_refusal(response) -> str:
    body = dialect_error(response)
    assert body["success"] is False
    assert list(body["errors"]) == ["JSON_TOO_DEEP"]
    return body["errors"]["JSON_TOO_DEEP"]


def centrapay_refusal(response) -> str:
    body = dialect_error(response)
    assert list(body) == ["message"]
    return body["message"]


def dlcs_refusal(response) -> str:
    body = dialect_error(response)
    assert body["@type"] == "Error"
    assert body["statusCode"] == 400
    return body["description"]


def signing_refusal(response) -> str:
    body = dialect_error(response)
    assert list(body) == ["error"]
    return body["error"]


def dialect_error(response) -> dict:
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == "application/json"
    return response.json()


@dataclass
class Surface:
    send: Callable
    refusal: Callable
    # The status of a body at the limit: the request goes through.
    taken: int


SURFACES = {
    "api batch create": Surface(api_batch_create, api_refusal, 201),
    "api items add": Surface(api_items_add, api_refusal, 201),
    "api rerun": Surface(api_rerun, api_refusal, 400),
    "brightlocal job add": Surface(brightlocal_job_add, brightlocal_refusal, 200),
    "centrapay batch create": Surface(centrapay_batch_create, centrapay_refusal, 200),
    "dlcs queue": Surface(dlcs_queue, dlcs_refusal, 201),
    "dlcs queue (JSON-LD)": Surface(dlcs_queue_as_json_ld, dlcs_refusal, 201),
    "signing batch create": Surface(signing_batch_create, signing_refusal, 201),
}


@pytest.mark.parametrize("name", SURFACES)
@pytest.mark.parametrize("over", [1, VERY_DEEP], ids=["limit+1", "5000 deep"])
def test_json_body__deeper_than_the_limit_is_400_in_the_surfaces_shape(caller, limit, name, over):
    surface = SURFACES[name]
    before = row_counts()

    response = surface.send(caller, limit + over if over == 1 else over)

    message = surface.refusal(response)
    assert f"nests more than {limit} levels deep" in message
    assert row_counts() == before


@pytest.mark.parametrize("name", SURFACES)
def test_json_body__exactly_at_the_limit_is_taken(caller, limit, name):
    surface = SURFACES[name]

    response = surface.send(caller, limit)

    assert response.status_code == surface.taken, response.content[:300]
    assert b"levels deep" not in response.content


def test_json_body__a_rerun_body_at_the_limit_reaches_the_rerun(caller, limit):
    # A rerun body is a choice, not a container: at the limit it is refused for its value.
    body = api_rerun(caller, limit).json()

    assert body["code"] == "invalid"
    assert body["errors"][0]["field"] == "items"


def test_json_body__the_default_limit_is_64(settings):
    assert settings.BATCHSITE_JSON_MAX_DEPTH == 64


def test_json_body__the_limit_follows_the_setting(caller, settings):
    settings.BATCHSITE_JSON_MAX_DEPTH = 5

    assert api_batch_create(caller, 5).status_code == 201
    assert "more than 5 levels" in api_refusal(api_batch_create(caller, 6))


def test_json_body__brackets_inside_strings_do_not_count(caller, limit):
    metadata = {"open": "[{" * 5000, "close": "]}" * 5000, "quoted": '\\"[[[[\\'}
    text = json.dumps({"metadata": metadata})

    response = post_json(caller, BATCHES, text, **caller.auth)

    assert response.status_code == 201, response.content[:300]
    assert response.json()["metadata"] == metadata


# --- JSON form fields --------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [65, VERY_DEEP])
def test_form_field__deep_metadata_in_a_form_is_400_json_too_deep(caller, limit, depth):
    before = row_counts()

    response = caller.client.post(
        BATCHES, {"type": "echo", "metadata": objects(depth)}, format="multipart", **caller.auth
    )

    body = assert_problem(response, 400, "json_too_deep")
    message = f"nests more than {limit} levels deep"
    assert body["errors"] == [{"field": "metadata", "message": message}]
    assert row_counts() == before


@pytest.mark.parametrize("depth", [65, VERY_DEEP])
def test_form_field__deep_payload_of_a_file_item_is_400_json_too_deep(caller, depth):
    batch, _ = services.batch_create(account=caller.account, actor="test", type="test.stamp")
    before = row_counts()

    response = caller.client.post(
        f"{BATCHES}{batch.id}/items/",
        {"file": SimpleUploadedFile("a.txt", b"x"), "payload": objects(depth)},
        format="multipart",
        **caller.auth,
    )

    body = assert_problem(response, 400, "json_too_deep")
    assert body["errors"][0]["field"] == "payload"
    assert row_counts() == before


@pytest.mark.parametrize("depth", [65, VERY_DEEP])
def test_query_parameter__deep_payload_of_a_zip_upload_is_400_json_too_deep(caller, depth):
    batch, _ = services.batch_create(account=caller.account, actor="test", type="test.stamp")
    before = row_counts()
    query = urlencode({"payload": objects(depth)})

    response = caller.client.generic(
        "POST",
        f"{BATCHES}{batch.id}/upload/?{query}",
        zip_data([("a.txt", b"a")]),
        content_type="application/zip",
        **caller.auth,
    )

    body = assert_problem(response, 400, "json_too_deep")
    assert body["errors"][0]["field"] == "payload"
    assert row_counts() == before


# --- uploads: each line or element on its own ----------------------------------------------------


def upload(caller: Caller, body: bytes, content_type: str, **params):
    query = f"?{urlencode(params)}" if params else ""
    path = f"{BATCHES}{caller.open_batch.id}/upload/{query}"
    return caller.client.generic("POST", path, body, content_type=content_type, **caller.auth)


def lines(*texts: str) -> bytes:
    return "".join(f"{text}\n" for text in texts).encode()


def item(depth: int) -> str:
    """Return an item whose line or element nests `depth` levels deep."""
    return '{"external_id": "deep", "payload": ' + objects(depth - 1) + "}"


OK_ITEM = '{"external_id": "ok", "payload": {}}'
FORMATS = {
    "jsonl": ("application/x-ndjson", lambda *texts: lines(*texts)),
    "json array": (JSON, lambda *texts: f"[{', '.join(texts)}]".encode()),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("depth", [65, VERY_DEEP])
def test_upload__a_deep_line_is_refused_alone_as_json_too_deep(caller, limit, fmt, depth):
    content_type, body = FORMATS[fmt]

    response = upload(caller, body(OK_ITEM, item(depth), OK_ITEM), content_type)

    assert response.status_code == 200, response.content[:300]
    report = response.json()
    assert (report["added"], report["rejected"]) == (2, 1)
    [problem] = report["errors"]
    assert (problem["index"], problem["code"]) == (1, "json_too_deep")
    assert f"nests more than {limit} levels deep" in problem["message"]
    external_ids = Item.objects.filter(batch=caller.open_batch).values_list("external_id")
    assert sorted(external_ids) == [("",), ("ok",), ("ok",)]
    assert caller.open_batch.errors.get().code == "json_too_deep"


@pytest.mark.parametrize("fmt", FORMATS)
def test_upload__a_deep_line_with_on_error_reject_adds_nothing(caller, fmt):
    content_type, body = FORMATS[fmt]
    before = row_counts()

    response = upload(caller, body(OK_ITEM, item(VERY_DEEP)), content_type, on_error="reject")

    body = assert_problem(response, 400, "invalid")
    assert body["errors"][0]["code"] == "json_too_deep"
    assert row_counts() == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_upload__a_line_at_the_limit_is_added(caller, fmt, limit):
    content_type, body = FORMATS[fmt]

    response = upload(caller, body(item(limit)), content_type)

    assert response.status_code == 200, response.content[:300]
    assert (response.json()["added"], response.json()["rejected"]) == (1, 0)


def test_upload__a_deep_element_longer_than_a_read_is_skipped_to_its_end(caller):
    # 200,000 characters: the reader must read on to find where the element ends.
    deep = '{"payload": {"pad": "' + "x" * 150_000 + '", "deep": ' + arrays(VERY_DEEP) + "}}"

    response = upload(caller, f"[{deep}, {OK_ITEM}]".encode(), JSON)

    assert response.status_code == 200, response.content[:300]
    assert response.json()["added"] == 1
    assert [error["code"] for error in response.json()["errors"]] == ["json_too_deep"]


def test_source_url__a_deep_line_of_the_file_is_refused_alone(
    caller, httpserver, django_capture_on_commit_callbacks
):
    file = lines(OK_ITEM, item(VERY_DEEP), OK_ITEM)
    httpserver.expect_request("/items.jsonl").respond_with_data(file, content_type="text/plain")
    body = json.dumps({"type": "echo", "source_url": httpserver.url_for("/items.jsonl")})

    with django_capture_on_commit_callbacks(execute=True):
        created = post_json(caller, BATCHES, body, **caller.auth)

    assert created.status_code == 201, created.content[:300]
    batch = Batch.objects.get(pk=created.json()["id"])
    assert (batch.status, batch.total_items) == (Batch.Status.OPEN, 2)
    error = batch.errors.get()
    assert (error.index, error.code) == (1, "json_too_deep")


# --- over real HTTP ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_live_server__deep_bodies_are_400_json_not_a_crash(live_server, account):
    _, key = services.api_key_create(account=account, name="live")
    deep = objects(VERY_DEEP)
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        api = client.post(
            BATCHES,
            content=f'{{"metadata": {deep}}}',
            headers={"Authorization": f"Api-Key {key}", "Content-Type": JSON},
        )
        centrapay = client.post(
            CENTRAPAY_BATCHES,
            content=f'{{"type": "echo", "note": {deep}}}',
            headers={"X-Api-Key": key, "Content-Type": JSON},
        )

    assert api.status_code == 400
    assert api.headers["Content-Type"] == "application/problem+json"
    assert api.json()["code"] == "json_too_deep"
    assert centrapay.status_code == 400
    assert centrapay.headers["Content-Type"] == "application/json"
    assert "levels deep" in centrapay.json()["message"]
    assert not Batch.objects.exists()


# The most BATCHSITE_JSON_MAX_DEPTH may be set to.
HIGHEST_LIMIT = 200


@pytest.mark.parametrize("name", SURFACES)
def test_json_body__at_the_highest_limit_allowed_nothing_recurses_too_deep(caller, settings, name):
    settings.BATCHSITE_JSON_MAX_DEPTH = HIGHEST_LIMIT
    surface = SURFACES[name]

    response = surface.send(caller, HIGHEST_LIMIT)

    assert response.status_code == surface.taken, response.content[:300]


def test_json_body__a_batch_at_the_highest_limit_reads_back_everywhere(
    caller, settings, django_user_model
):
    settings.BATCHSITE_JSON_MAX_DEPTH = HIGHEST_LIMIT
    body = (
        f'{{"metadata": {objects(HIGHEST_LIMIT - 1)}, '
        f'"items": [{{"payload": {objects(HIGHEST_LIMIT - 3)}}}]}}'
    )
    created = post_json(caller, BATCHES, body, **caller.auth)
    assert created.status_code == 201, created.content[:300]
    batch = Batch.objects.get(pk=created.json()["id"])
    staff = Client()
    staff.force_login(django_user_model.objects.create_superuser("root", password="pw"))

    pages = [
        caller.client.get(f"{BATCHES}{batch.pk}/", **caller.auth),
        caller.client.get(f"{BATCHES}{batch.pk}/items/", **caller.auth),
        caller.client.get(f"{BATCHES}{batch.pk}/export/?format=jsonl", **caller.auth),
        staff.get(f"/batches/{batch.pk}/"),
        staff.get(f"/admin/batches/batch/{batch.pk}/change/"),
        staff.get(f"/admin/batches/item/{batch.items.get().pk}/change/"),
    ]

    assert [page.status_code for page in pages] == [200] * len(pages)
