"""The DLCS dialect under /compat/dlcs/, exercised as a DLCS client would.

A client POSTs a hydra:Collection of images (ids and origin URLs) to its customer queue,
gets a vocab:Batch back, polls it, lists its images, and forces `superseded` to be
recomputed with /test. Origins are real PNG and JPEG files served by pytest-httpserver on
loopback; the allow-list names `localhost`, which lets them through the outbound guard.
django-q2 runs in sync mode, so the images are fetched and processed inline when the
submission's transaction commits (django_capture_on_commit_callbacks(execute=True)), that
is once the request has answered.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import datetime

import pytest
from PIL import Image
from rest_framework.test import APIClient

from batches import services
from batches.ingest import staging
from batches.models import Batch, Item
from tests.helpers import refused_port

HYDRA = "http://www.w3.org/ns/hydra/context.jsonld"
SERVER = "http://testserver"


@pytest.fixture(autouse=True)
def outbound(settings, tmp_path):
    """Give each test its own files folder; let origins on localhost through the guard."""
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.BATCHSITE_OUTBOUND_ALLOWED_HOSTS = ["localhost"]


def image_bytes(fmt: str, size=(48, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (180, 40, 90)).save(buffer, fmt)
    return buffer.getvalue()


def serve(httpserver, path: str, body: bytes, content_type: str = "image/png") -> str:
    httpserver.expect_request(path).respond_with_data(body, content_type=content_type)
    return httpserver.url_for(path)


def queue_url(account) -> str:
    return f"/compat/dlcs/customers/{account.number}/queue"


def batches_url(account) -> str:
    return f"{queue_url(account)}/batches"


def submit(client, account, members: list[dict], capture=None):
    """POST a collection of images to the account's queue; process it if `capture` is given."""
    body = {"@type": "hydra:Collection", "member": members}
    if capture is None:
        return client.post(queue_url(account), body, format="json")
    with capture(execute=True):
        return client.post(queue_url(account), body, format="json")


def submitted(client, account, members, capture) -> dict:
    response = submit(client, account, members, capture)
    assert response.status_code == 201, response.content
    return response.json()


def get(client, url: str) -> dict:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return response.json()


def relative(url: str) -> str:
    assert url.startswith(SERVER), url
    return url.removeprefix(SERVER)


def assert_error(response, status: int, title: str, description: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "@context": HYDRA,
        "@type": "Error",
        "statusCode": status,
        "title": title,
        "description": description,
    }


def is_datetime(value) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None


@pytest.fixture
def origins(httpserver) -> dict[str, str]:
    """Serve a PNG and a JPEG; return {image id: origin}."""
    return {
        "page-1": serve(httpserver, "/page-1.png", image_bytes("PNG", (48, 32))),
        "page-2": serve(httpserver, "/page-2.jpg", image_bytes("JPEG", (20, 60)), "image/jpeg"),
    }


def members_of(origins: dict[str, str]) -> list[dict]:
    return [{"id": key, "origin": url} for key, url in origins.items()]


# --- the whole life of a batch -------------------------------------------------------------------


def test_dlcs__submit_poll_list_images_and_batches(
    client_a, account, origins, django_capture_on_commit_callbacks
):
    extras = {"space": 1, "family": "I", "maxUnauthorised": 400, "string1": "ignored"}
    members = [{**member, **extras} for member in members_of(origins)]

    batch = submitted(client_a, account, members, django_capture_on_commit_callbacks)

    number = int(batch["@id"].rsplit("/", 1)[1])
    batch_url = f"{SERVER}{batches_url(account)}/{number}"
    assert is_datetime(batch["submitted"])
    assert batch == {
        "@context": HYDRA,
        "@id": batch_url,
        "@type": "vocab:Batch",
        "submitted": batch["submitted"],
        "count": 2,
        "completed": 0,
        "finished": None,
        "errors": 0,
        "superseded": False,
        "estCompletion": None,
        "images": f"{batch_url}/images",
        "test": f"{batch_url}/test",
    }

    polled = get(client_a, relative(batch_url))

    assert is_datetime(polled["finished"])
    assert polled == {**batch, "completed": 2, "finished": polled["finished"]}

    images = get(client_a, relative(polled["images"]))

    assert images["@context"] == HYDRA
    assert images["@id"] == polled["images"]
    assert images["@type"] == "hydra:Collection"
    assert (images["totalItems"], images["pageSize"]) == (2, 100)
    assert "view" not in images
    for member in images["member"]:
        assert member["@id"].startswith(f"{SERVER}/api/v1/batches/")
        assert is_datetime(member["finished"])
    assert [
        {k: v for k, v in member.items() if k not in ("@id", "finished")}
        for member in images["member"]
    ] == [
        {
            "@context": HYDRA,
            "@type": "vocab:Image",
            "id": "page-1",
            "origin": origins["page-1"],
            "status": "succeeded",
            "ingesting": False,
            "error": "",
            "width": 48,
            "height": 32,
        },
        {
            "@context": HYDRA,
            "@type": "vocab:Image",
            "id": "page-2",
            "origin": origins["page-2"],
            "status": "succeeded",
            "ingesting": False,
            "error": "",
            "width": 20,
            "height": 60,
        },
    ]
    item = get(client_a, relative(images["member"][0]["@id"]))
    assert (item["external_id"], item["status"]) == ("page-1", "succeeded")

    listed = get(client_a, batches_url(account))

    assert listed == {
        "@context": HYDRA,
        "@id": f"{SERVER}{batches_url(account)}",
        "@type": "hydra:Collection",
        "totalItems": 1,
        "pageSize": 100,
        "member": [polled],
    }

    # DLCS documents no delete; batchsite's own API deletes, and the dialect then says 404.
    uuid = Batch.objects.get(number=number).pk
    assert client_a.delete(f"/api/v1/batches/{uuid}/").status_code == 204
    missing = f"batch {number} not found"
    assert_error(client_a.get(relative(batch_url)), 404, "Not Found", missing)
    assert_error(client_a.get(relative(polled["images"])), 404, "Not Found", missing)
    assert_error(client_a.post(relative(polled["test"])), 404, "Not Found", missing)
    assert get(client_a, batches_url(account))["totalItems"] == 0


def test_dlcs_queue__images_are_image_derive_items_keyed_by_their_id(
    client_a, account, origins, django_capture_on_commit_callbacks
):
    batch = submitted(client_a, account, members_of(origins), django_capture_on_commit_callbacks)

    stored = Batch.objects.get(number=int(batch["@id"].rsplit("/", 1)[1]))
    assert (stored.account, stored.type, stored.status) == (account, "image.derive", "finished")
    items = list(
        stored.items.order_by("index").values_list("external_id", "key", "payload", "input_file")
    )
    assert items == [
        ("page-1", "page-1", {"origin": origins["page-1"]}, ""),
        ("page-2", "page-2", {"origin": origins["page-2"]}, ""),
    ]


def test_dlcs_queue__accepts_json_ld_and_answers_it_when_asked(client_a, account, origins):
    response = client_a.generic(
        "POST",
        queue_url(account),
        json.dumps(
            {"@type": "hydra:Collection", "member": [{"id": "a", "origin": origins["page-1"]}]}
        ),
        "application/ld+json",
        HTTP_ACCEPT="application/ld+json",
    )

    assert response.status_code == 201, response.content
    assert response["Content-Type"] == "application/ld+json"
    assert response.json()["count"] == 1


def test_dlcs_queue__an_image_that_cannot_be_processed_counts_as_an_error(
    client_a, account, origins, httpserver, django_capture_on_commit_callbacks
):
    text = serve(httpserver, "/notes.txt", b"not an image at all", "text/plain")
    members = [*members_of(origins), {"id": "notes", "origin": text}]

    batch = submitted(client_a, account, members, django_capture_on_commit_callbacks)

    polled = get(client_a, relative(batch["@id"]))
    assert (polled["count"], polled["completed"], polled["errors"]) == (3, 2, 1)
    assert polled["finished"] is not None
    images = get(client_a, relative(polled["images"]))["member"]
    failed = images[2]
    assert (failed["id"], failed["status"], failed["ingesting"]) == ("notes", "failed", False)
    assert failed["error"].startswith("not an image this type reads")
    assert (failed["width"], failed["height"]) == (None, None)


def test_dlcs_images__lists_unprocessed_images_as_ingesting(client_a, account, origins):
    batch = submit(client_a, account, members_of(origins)).json()  # on-commit work not run

    assert get(client_a, relative(batch["@id"]))["completed"] == 0
    images = get(client_a, relative(batch["images"]))["member"]
    assert [(m["id"], m["status"], m["ingesting"], m["finished"]) for m in images] == [
        ("page-1", "queued", True, None),
        ("page-2", "queued", True, None),
    ]


# --- origins are fetched by workers, one image at a time -----------------------------------------


def test_dlcs_queue__answers_at_once_and_a_dead_origin_fails_only_its_image(
    client_a, account, httpserver, django_capture_on_commit_callbacks
):
    live = serve(httpserver, "/live.png", image_bytes("PNG", (48, 32)))
    dead = f"http://localhost:{refused_port()}/dead.png"
    members = [{"id": "live", "origin": live}, {"id": "dead", "origin": dead}]

    with django_capture_on_commit_callbacks(execute=True):
        response = submit(client_a, account, members)

        # The answer comes before any worker runs: nothing fetched, both images queued.
        assert response.status_code == 201, response.content
        batch = response.json()
        assert (batch["count"], batch["completed"], batch["errors"]) == (2, 0, 0)
        assert httpserver.log == []
        queued = get(client_a, relative(batch["images"]))["member"]
        assert [(m["id"], m["origin"], m["status"], m["ingesting"]) for m in queued] == [
            ("live", live, "queued", True),
            ("dead", dead, "queued", True),
        ]

    polled = get(client_a, relative(batch["@id"]))
    assert (polled["count"], polled["completed"], polled["errors"]) == (2, 1, 1)
    assert polled["finished"] is not None
    done, failed = get(client_a, relative(batch["images"]))["member"]
    assert (done["id"], done["status"], done["error"]) == ("live", "succeeded", "")
    assert (done["width"], done["height"]) == (48, 32)
    assert (failed["id"], failed["status"], failed["ingesting"]) == ("dead", "failed", False)
    assert failed["error"].startswith(
        "gave up after 2 attempts: cannot reach the origin localhost: "
    ), failed["error"]
    assert Item.objects.get(external_id="dead").error_code == "origin_unreachable"
    assert len(httpserver.log) == 1


@pytest.mark.parametrize(
    ("status", "limit", "code", "error"),
    [
        (404, None, "origin_unreadable", "the origin answered HTTP 404 ({origin})"),
        (200, 100, "origin_too_large", "the origin is {size} bytes; the limit is 100"),
    ],
)
def test_dlcs_queue__origin_that_cannot_be_fetched_fails_only_its_image(
    client_a, account, origins, httpserver, settings, django_capture_on_commit_callbacks,
    status, limit, code, error,
):  # fmt: skip
    big = image_bytes("PNG", (300, 300))
    httpserver.expect_request("/bad.png").respond_with_data(
        big, status=status, content_type="image/png"
    )
    origin = httpserver.url_for("/bad.png")
    if limit:
        settings.BATCHSITE_MAX_UPLOAD_BYTES = limit
        origins = {"small": serve(httpserver, "/small.png", image_bytes("PNG", (4, 4)))}
        assert len(image_bytes("PNG", (4, 4))) <= limit
    members = [*members_of(origins), {"id": "bad", "origin": origin}]

    batch = submitted(client_a, account, members, django_capture_on_commit_callbacks)

    polled = get(client_a, relative(batch["@id"]))
    assert (polled["completed"], polled["errors"]) == (len(origins), 1)
    images = get(client_a, relative(batch["images"]))["member"]
    assert [image["status"] for image in images] == ["succeeded"] * len(origins) + ["failed"]
    assert images[-1]["error"] == error.format(origin=origin, size=len(big))
    assert Item.objects.get(external_id="bad").error_code == code


# --- refused submissions -------------------------------------------------------------------------


def assert_nothing_stored() -> None:
    assert not Batch.objects.exists()
    assert not Item.objects.exists()
    assert not list(staging.work_dir().glob("source-*")), "a downloaded origin was left behind"


def test_dlcs_queue__origin_outside_the_allow_list_refuses_the_whole_submission(
    client_a, account, origins, django_capture_on_commit_callbacks
):
    members = [*members_of(origins), {"id": "far", "origin": "http://example.com/far.png"}]

    response = submit(client_a, account, members, django_capture_on_commit_callbacks)

    assert_error(
        response,
        400,
        "Bad Request",
        "1 of 3 items are invalid; nothing was added: far: payload.origin: host 'example.com' "
        "is not in BATCHSITE_OUTBOUND_ALLOWED_HOSTS",
    )
    assert_nothing_stored()
    assert get(client_a, batches_url(account))["totalItems"] == 0


def test_dlcs_queue__image_refused_after_others_were_added_leaves_nothing_behind(
    client_a, account, origins, settings, django_capture_on_commit_callbacks
):
    settings.BATCHSITE_MAX_ITEMS_PER_BATCH = 1

    response = submit(client_a, account, members_of(origins), django_capture_on_commit_callbacks)

    assert_error(
        response,
        400,
        "Bad Request",
        "a batch holds at most 1 items: items: too many items for one batch",
    )
    assert_nothing_stored()
    files = settings.MEDIA_ROOT / "batches"
    assert not files.exists() or not any(files.iterdir()), "an added image's file was left"


A_PNG = "http://localhost/a.png"


@pytest.mark.parametrize(
    ("body", "description"),
    [
        ({"@type": "hydra:Collection"}, "member: This field is required."),
        ({"member": []}, "member: This list may not be empty."),
        ({"member": [{"id": "a"}]}, "member.0.origin: This field is required."),
        ({"member": [{"origin": A_PNG}]}, "member.0.id: This field is required."),
        ({"member": [{"id": 5, "origin": A_PNG}]}, "member.0.id: Not a valid string."),
        ({"member": [{"id": "a", "origin": "not a url"}]}, "member.0.origin: Enter a valid URL."),
        (
            {"member": [{"id": "a", "origin": A_PNG}, {"id": "a", "origin": A_PNG}]},
            "member: image id 'a' is repeated",
        ),
        (
            [{"id": "a", "origin": A_PNG}],
            "body: Invalid data. Expected a dictionary, but got list.",
        ),
    ],
)
def test_dlcs_queue__malformed_submission_is_refused(client_a, account, body, description):
    response = client_a.post(queue_url(account), body, format="json")

    assert_error(response, 400, "Bad Request", description)
    assert_nothing_stored()


def test_dlcs_queue__body_that_is_not_json_is_refused(client_a, account):
    response = client_a.generic("POST", queue_url(account), "{member", "application/json")

    assert response.status_code == 400
    body = response.json()
    assert (body["@type"], body["statusCode"], body["title"]) == ("Error", 400, "Bad Request")
    assert body["description"].startswith("JSON parse error")
    assert_nothing_stored()


# --- superseded ----------------------------------------------------------------------------------


def test_dlcs_superseded__a_later_batch_that_redoes_every_image_supersedes_an_earlier_one(
    client_a, account, origins, django_capture_on_commit_callbacks
):
    def run(ids: list[str]) -> str:
        members = [{"id": key, "origin": origins[key]} for key in ids]
        batch = submitted(client_a, account, members, django_capture_on_commit_callbacks)
        return relative(batch["@id"])

    first = run(["page-1", "page-2"])
    assert get(client_a, first)["superseded"] is False

    second = run(["page-1"])
    assert get(client_a, first)["superseded"] is False  # page-2 is still first's

    third = run(["page-2"])
    assert get(client_a, first)["superseded"] is True
    assert get(client_a, second)["superseded"] is False
    assert get(client_a, third)["superseded"] is False


def test_dlcs_test__recomputes_a_stale_superseded_flag(
    client_a, account, origins, django_capture_on_commit_callbacks
):
    first = submitted(client_a, account, members_of(origins), django_capture_on_commit_callbacks)
    second = submitted(client_a, account, members_of(origins), django_capture_on_commit_callbacks)
    assert get(client_a, relative(first["@id"]))["superseded"] is True
    # Stale, as it would be had the flag been set before `second` was submitted.
    Batch.objects.filter(number=int(first["@id"].rsplit("/", 1)[1])).update(superseded=False)
    assert get(client_a, relative(first["@id"]))["superseded"] is False

    response = client_a.post(relative(first["test"]))

    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    assert get(client_a, relative(first["@id"]))["superseded"] is True
    assert client_a.post(relative(second["test"])).json() == {"success": True}
    assert get(client_a, relative(second["@id"]))["superseded"] is False


def test_dlcs_test__clears_superseded_when_no_later_batch_redid_the_images(
    client_a, account, origins, django_capture_on_commit_callbacks
):
    batch = submitted(client_a, account, members_of(origins), django_capture_on_commit_callbacks)
    Batch.objects.filter(number=int(batch["@id"].rsplit("/", 1)[1])).update(superseded=True)

    assert client_a.post(relative(batch["test"])).json() == {"success": True}

    assert get(client_a, relative(batch["@id"]))["superseded"] is False


# --- paging --------------------------------------------------------------------------------------


def test_dlcs_batches__pages_with_page_and_page_size(client_a, account, origins):
    numbers = [
        int(submit(client_a, account, members_of(origins)).json()["@id"].rsplit("/", 1)[1])
        for _ in range(3)
    ]
    base = f"{SERVER}{batches_url(account)}"

    first = get(client_a, f"{batches_url(account)}?pageSize=2")
    last = get(client_a, f"{batches_url(account)}?page=2&pageSize=2")

    assert (first["totalItems"], first["pageSize"]) == (3, 2)
    assert first["view"] == {
        "@id": f"{base}?page=1&pageSize=2",
        "@type": "hydra:PartialCollectionView",
        "next": f"{base}?page=2&pageSize=2",
        "last": f"{base}?page=2&pageSize=2",
        "page": 1,
        "pageSize": 2,
        "totalPages": 2,
    }
    assert last["view"] == {
        "@id": f"{base}?page=2&pageSize=2",
        "@type": "hydra:PartialCollectionView",
        "first": f"{base}?page=1&pageSize=2",
        "previous": f"{base}?page=1&pageSize=2",
        "page": 2,
        "pageSize": 2,
        "totalPages": 2,
    }
    listed = [int(m["@id"].rsplit("/", 1)[1]) for m in first["member"] + last["member"]]
    assert listed == sorted(numbers, reverse=True)


def test_dlcs_images__pages_in_submission_order(client_a, account, origins):
    members = [{"id": f"img-{n}", "origin": origins["page-1"]} for n in range(3)]
    batch = submit(client_a, account, members).json()

    second = get(client_a, f"{relative(batch['images'])}?page=2&pageSize=2")

    assert (second["totalItems"], second["view"]["totalPages"]) == (3, 2)
    assert [member["id"] for member in second["member"]] == ["img-2"]


@pytest.mark.parametrize(
    ("query", "description"),
    [
        ("pageSize=0", "pageSize: Ensure this value is greater than or equal to 1."),
        ("pageSize=1001", "pageSize: Ensure this value is less than or equal to 1000."),
        ("page=0", "page: Ensure this value is greater than or equal to 1."),
        ("page=first", "page: A valid integer is required."),
        # Its offset would not fit the database's integers: refused, never a crash.
        (f"page={10**30}", "page: Ensure this value is less than or equal to 1000000000."),
    ],
)
def test_dlcs_batches__bad_paging_is_refused(client_a, account, query, description):
    response = client_a.get(f"{batches_url(account)}?{query}")

    assert_error(response, 400, "Bad Request", description)


def test_dlcs_batches__list_runs_a_constant_number_of_queries(
    client_a, account, origins, django_assert_max_num_queries
):
    for _ in range(4):
        submit(client_a, account, members_of(origins))

    with django_assert_max_num_queries(4):
        listed = get(client_a, batches_url(account))

    assert listed["totalItems"] == 4


# --- authentication, tenancy, unknown paths ------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_dlcs__basic_auth_carries_the_key_whole_or_split_at_its_dot(account):
    _, raw = services.api_key_create(account=account, name="dlcs")
    prefix, secret = raw.split(".")

    for credentials in (basic("any-user", raw), basic(prefix, secret)):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=credentials)
        listed = get(client, batches_url(account))

        assert listed["totalItems"] == 0


def test_dlcs__requests_without_a_usable_key_are_refused_with_a_basic_challenge(account):
    _, raw = services.api_key_create(account=account, name="dlcs")
    prefix = raw.split(".")[0]
    challenge = 'Basic realm="batchsite"'

    anonymous = APIClient().get(batches_url(account))

    assert_error(anonymous, 401, "Unauthorized", "Authentication credentials were not provided.")
    assert anonymous["WWW-Authenticate"] == challenge
    for credentials, description in [
        (basic(prefix, "wrong-secret"), "Invalid API key."),
        (basic("any-user", f"{prefix}.wrong-secret"), "Invalid API key."),
        (basic("", ""), "Invalid API key."),
        ("Basic not-base64!", "Invalid basic header. Credentials not correctly base64 encoded."),
        ("Basic", "Invalid basic header. No credentials provided."),
        ("Api-Key abc.def", "Invalid API key."),
    ]:
        forged = APIClient()
        forged.credentials(HTTP_AUTHORIZATION=credentials)
        response = forged.get(batches_url(account))

        assert_error(response, 401, "Unauthorized", description)
        assert response["WWW-Authenticate"] == challenge, credentials


def test_dlcs_batches__lists_and_finds_image_batches_only(
    client_a, account, origins, django_capture_on_commit_callbacks
):
    echo = client_a.post(
        "/api/v1/batches/", {"type": "echo", "items": [{"payload": {}}]}, format="json"
    ).json()
    image = submitted(client_a, account, members_of(origins), django_capture_on_commit_callbacks)

    listed = get(client_a, batches_url(account))

    assert listed["totalItems"] == 1
    assert [member["@id"] for member in listed["member"]] == [image["@id"]]
    missing = f"batch {echo['number']} not found"
    echo_url = f"{batches_url(account)}/{echo['number']}"
    assert_error(client_a.get(echo_url), 404, "Not Found", missing)
    assert_error(client_a.get(f"{echo_url}/images"), 404, "Not Found", missing)
    assert_error(client_a.post(f"{echo_url}/test"), 404, "Not Found", missing)


def test_dlcs_images__a_batch_made_through_the_api_has_images_without_an_origin(client_a, account):
    body = {"type": "image.derive", "items": [{"external_id": "x", "payload": {}}]}
    created = client_a.post("/api/v1/batches/", body, format="json").json()

    images = get(client_a, f"{batches_url(account)}/{created['number']}/images")
    schema = APIClient().get("/compat/dlcs/schema/?format=json").json()

    origin = schema["components"]["schemas"]["DlcsImage"]["properties"]["origin"]

    assert [image["origin"] for image in images["member"]] == [""]
    assert (origin["type"], origin.get("format")) == ("string", None)


def test_dlcs__another_customer_is_not_found(client_a, client_b, account, other_account, origins):
    batch = submit(client_a, account, members_of(origins)).json()
    number = batch["@id"].rsplit("/", 1)[1]
    theirs = f"customer {account.number} not found"

    assert_error(client_b.get(batches_url(account)), 404, "Not Found", theirs)
    assert_error(client_b.get(relative(batch["@id"])), 404, "Not Found", theirs)
    assert_error(client_b.get(relative(batch["images"])), 404, "Not Found", theirs)
    assert_error(client_b.post(relative(batch["test"])), 404, "Not Found", theirs)
    response = submit(client_b, account, members_of(origins))
    assert_error(response, 404, "Not Found", theirs)
    # Under its own customer, the other account's batch number names nothing.
    own = f"{batches_url(other_account)}/{number}"
    assert_error(client_b.get(own), 404, "Not Found", f"batch {number} not found")
    assert_error(client_b.get(f"{own}/images"), 404, "Not Found", f"batch {number} not found")
    assert get(client_b, batches_url(other_account))["totalItems"] == 0
    assert Batch.objects.filter(account=other_account).count() == 0
    assert get(client_a, batches_url(account))["totalItems"] == 1


def test_dlcs__unknown_customer_batch_and_path_are_not_found(client_a, account):
    assert_error(
        client_a.get("/compat/dlcs/customers/acme/queue/batches"),
        404,
        "Not Found",
        "customer acme not found",
    )
    assert_error(
        client_a.get(f"{batches_url(account)}/999999"), 404, "Not Found", "batch 999999 not found"
    )
    assert_error(
        client_a.get(f"{batches_url(account)}/first"), 404, "Not Found", "batch first not found"
    )
    path = f"{queue_url(account)}/priority"
    assert_error(client_a.get(path), 404, "Not Found", f"no resource at {path}")
    assert_error(
        client_a.delete(f"{batches_url(account)}/1"),
        405,
        "Method Not Allowed",
        'Method "DELETE" not allowed.',
    )


# --- schema --------------------------------------------------------------------------------------


def test_dlcs__schema_lists_every_endpoint_under_its_tag(db):
    response = APIClient().get("/compat/dlcs/schema/?format=json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    base = "/compat/dlcs/customers/{customer}/queue"
    expected = {
        (base, "post"),
        (f"{base}/batches", "get"),
        (f"{base}/batches/{{batchId}}", "get"),
        (f"{base}/batches/{{batchId}}/images", "get"),
        (f"{base}/batches/{{batchId}}/test", "post"),
    }
    for path, method in expected:
        assert paths[path][method]["tags"] == ["compat: dlcs"], path
    tagged = {
        (path, method)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "compat: dlcs" in operation.get("tags", [])
    }
    assert tagged == expected
