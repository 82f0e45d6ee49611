"""The BrightLocal dialect, used as a BrightLocal client would, from the documented shapes.

django-q2 runs in sync mode: a commit's chunks run inline once its transaction's on-commit
callbacks run, which the tests trigger with django_capture_on_commit_callbacks.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from batches import services, tasks
from batches.models import Batch, Chunk
from jobs.echo import Echo
from tests.factories import AccountFactory

BATCH = "/compat/brightlocal/seo-tools/api/v4/batch"
JOBS = f"{BATCH}/jobs"
NOT_FOUND = {"success": False, "errors": {"INVALID_BATCH_ID": "Batch ID not found"}}
ALREADY_COMMITTED = {
    "success": False,
    "errors": {"BATCH_ALREADY_COMMITTED": "This batch has been committed already"},
}


@pytest.fixture
def key(account) -> str:
    return services.api_key_create(account=account, name="brightlocal")[1]


@pytest.fixture
def other_key(other_account) -> str:
    return services.api_key_create(account=other_account, name="brightlocal")[1]


@pytest.fixture
def client() -> APIClient:
    return APIClient()


def failure(response, status_code: int) -> dict:
    """Return the body of a failure, checking it is BrightLocal's shape, not a problem."""
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["success"] is False
    assert isinstance(body["errors"], dict)
    return body


def create(client, key, **params) -> str:
    response = client.post(BATCH, {"api-key": key, **params})
    assert response.status_code == 201, response.content
    return response.json()["batch-id"]


def add_job(client, key, batch_id, job_type="echo", *, json=False, **params) -> int:
    body = {"api-key": key, "batch-id": batch_id, "job-type": job_type, **params}
    response = client.post(JOBS, body, format="json" if json else None)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True
    assert set(body) == {"success", "job-id"}
    return body["job-id"]


def results(client, key, batch_id) -> dict:
    response = client.get(BATCH, {"api-key": key, "batch-id": batch_id})
    assert response.status_code == 200, response.content
    return response.json()


def commit(client, key, batch_id):
    return client.put(BATCH, {"api-key": key, "batch-id": batch_id})


# --- the documented flow ------------------------------------------------------------------------


def test_brightlocal__create_add_commit_poll_delete(
    client, key, account, django_capture_on_commit_callbacks
):
    response = client.post(f"{BATCH}?api-key={key}")
    assert response.status_code == 201
    body = response.json()
    assert body == {"success": True, "batch-id": body["batch-id"]}
    batch_id = body["batch-id"]
    assert isinstance(batch_id, str)
    assert batch_id.isdigit()
    assert Batch.objects.get(number=int(batch_id)).account == account

    form_job = add_job(client, key, batch_id, query="plumber", location="New York")
    json_job = add_job(client, key, batch_id, json=True, n=2, tags=["a", "b"], exact=True)
    assert isinstance(form_job, int)
    assert isinstance(json_job, int)
    assert form_job != json_job

    assert results(client, key, batch_id) == {
        "success": True,
        "status": "Created",
        "results": {
            "echo": [
                {"results": [], "status": "Pending", "job-id": form_job},
                {"results": [], "status": "Pending", "job-id": json_job},
            ]
        },
        "statuses": {"Pending": 2},
    }

    with django_capture_on_commit_callbacks() as queued:
        response = commit(client, key, batch_id)
    assert response.status_code == 200
    assert response.json() == {"success": True}
    committed = results(client, key, batch_id)
    assert committed["status"] == "Committed"
    assert committed["statuses"] == {"Queued": 2}

    with django_capture_on_commit_callbacks(execute=True):
        for callback in queued:
            callback()

    assert results(client, key, batch_id) == {
        "success": True,
        "status": "Finished",
        "results": {
            "echo": [
                # Form values are strings; a JSON body keeps its types.
                {
                    "results": [{"query": "plumber", "location": "New York"}],
                    "status": "Completed",
                    "job-id": form_job,
                },
                {
                    "results": [{"n": 2, "tags": ["a", "b"], "exact": True}],
                    "status": "Completed",
                    "job-id": json_job,
                },
            ]
        },
        "statuses": {"Completed": 2},
    }

    response = client.delete(f"{BATCH}?api-key={key}&batch-id={batch_id}")
    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert not Batch.objects.filter(number=int(batch_id)).exists()
    assert failure(client.get(BATCH, {"api-key": key, "batch-id": batch_id}), 404) == NOT_FOUND
    assert failure(client.delete(f"{BATCH}?api-key={key}&batch-id={batch_id}"), 404) == NOT_FOUND


def test_brightlocal__results_arrive_progressively_as_jobs_end(
    client, key, monkeypatch, django_capture_on_commit_callbacks
):
    # One job per chunk, so one worker step ends one job and leaves the other queued.
    monkeypatch.setattr(Echo, "chunk_size", 1)
    batch_id = create(client, key)
    first = add_job(client, key, batch_id, json=True, n=1)
    second = add_job(client, key, batch_id, json=True, n=2)
    with django_capture_on_commit_callbacks():
        assert commit(client, key, batch_id).status_code == 200
    chunks = Chunk.objects.filter(batch__number=int(batch_id)).order_by("start_index")
    assert chunks.count() == 2

    with django_capture_on_commit_callbacks(execute=True):
        tasks.chunk_run(chunks[0].pk)

    assert results(client, key, batch_id) == {
        "success": True,
        "status": "Running",
        "results": {
            "echo": [
                {"results": [{"n": 1}], "status": "Completed", "job-id": first},
                {"results": [], "status": "Queued", "job-id": second},
            ]
        },
        "statuses": {"Completed": 1, "Queued": 1},
    }

    with django_capture_on_commit_callbacks(execute=True):
        tasks.chunk_run(chunks[1].pk)

    polled = results(client, key, batch_id)
    assert polled["status"] == "Finished"
    assert polled["statuses"] == {"Completed": 2}
    assert polled["results"]["echo"][1]["results"] == [{"n": 2}]


def test_brightlocal__jobs_of_several_types_are_grouped_by_type(
    client, key, django_capture_on_commit_callbacks
):
    batch_id = create(client, key)
    echo_job = add_job(client, key, batch_id, "echo", json=True, n=1)
    flaky_job = add_job(client, key, batch_id, "test.flaky", json=True, n=2)
    with django_capture_on_commit_callbacks(execute=True):
        assert commit(client, key, batch_id).status_code == 200

    polled = results(client, key, batch_id)

    assert polled["results"] == {
        "echo": [{"results": [{"n": 1}], "status": "Completed", "job-id": echo_job}],
        "test.flaky": [{"results": [{"n": 2}], "status": "Completed", "job-id": flaky_job}],
    }
    assert polled["statuses"] == {"Completed": 2}


@pytest.mark.parametrize(
    ("stop", "status", "statuses"),
    [("1", "Stopped", {"Failed": 2}), ("0", "Finished", {"Failed": 1, "Completed": 1})],
)
def test_brightlocal__stop_on_job_error(
    client, key, monkeypatch, django_capture_on_commit_callbacks, stop, status, statuses
):
    # One job per chunk, so a stop after the first job's failure reaches the second.
    monkeypatch.setattr(Echo, "chunk_size", 1)
    batch_id = create(client, key, **{"stop-on-job-error": stop})
    add_job(client, key, batch_id, json=True, fail=True)
    add_job(client, key, batch_id, json=True, n=2)

    with django_capture_on_commit_callbacks(execute=True):
        assert commit(client, key, batch_id).status_code == 200

    polled = results(client, key, batch_id)
    assert polled["status"] == status
    assert polled["statuses"] == statuses
    assert polled["results"]["echo"][0]["status"] == "Failed"
    assert polled["results"]["echo"][0]["results"] == []


def test_brightlocal__create_defaults_to_not_stopping(client, key):
    batch_id = create(client, key)

    assert Batch.objects.get(number=int(batch_id)).stop_on_error is False


def test_brightlocal__create_refuses_a_bad_stop_on_job_error(client, key):
    response = client.post(BATCH, {"api-key": key, "stop-on-job-error": "yes"})

    assert failure(response, 400) == {
        "success": False,
        "errors": {"stop-on-job-error": '"yes" is not a valid choice.'},
    }
    assert not Batch.objects.exists()


# --- commit errors ------------------------------------------------------------------------------


def test_brightlocal__commit_of_an_empty_batch_is_refused(client, key):
    batch_id = create(client, key)

    response = commit(client, key, batch_id)

    assert failure(response, 400) == {
        "success": False,
        "errors": {"INVALID_JOBS_COUNT": "Batch can't be committed with no jobs"},
    }
    assert results(client, key, batch_id)["status"] == "Created"


def test_brightlocal__second_commit_is_refused(client, key):
    batch_id = create(client, key)
    add_job(client, key, batch_id, n="1")
    assert commit(client, key, batch_id).status_code == 200

    response = commit(client, key, batch_id)

    assert failure(response, 400) == ALREADY_COMMITTED


def test_brightlocal__commit_takes_batch_id_from_the_query_too(client, key):
    batch_id = create(client, key)
    add_job(client, key, batch_id, n="1")

    response = client.put(f"{BATCH}?api-key={key}&batch-id={batch_id}")

    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert results(client, key, batch_id)["status"] == "Committed"


def test_brightlocal__commit_of_an_unknown_batch_is_404(client, key):
    assert failure(commit(client, key, "999999"), 404) == NOT_FOUND


def test_brightlocal__a_missing_batch_id_is_refused(client, key):
    response = client.get(BATCH, {"api-key": key})

    assert failure(response, 400) == {
        "success": False,
        "errors": {"batch-id": "This field is required."},
    }


# --- adding jobs --------------------------------------------------------------------------------


def test_brightlocal__adding_to_a_committed_batch_is_refused(client, key):
    batch_id = create(client, key)
    add_job(client, key, batch_id, n="1")
    assert commit(client, key, batch_id).status_code == 200

    response = client.post(
        JOBS, {"api-key": key, "batch-id": batch_id, "job-type": "echo", "n": "2"}
    )

    assert failure(response, 400) == ALREADY_COMMITTED
    assert results(client, key, batch_id)["statuses"] == {"Queued": 1}


def test_brightlocal__unknown_job_type_is_refused(client, key):
    batch_id = create(client, key)

    response = client.post(JOBS, {"api-key": key, "batch-id": batch_id, "job-type": "LdFetch"})

    assert failure(response, 400) == {
        "success": False,
        "errors": {"INVALID_JOB_TYPE": "Job type 'LdFetch' is not supported"},
    }
    assert results(client, key, batch_id)["results"] == {}


def test_brightlocal__invalid_job_parameters_are_refused_with_field_messages(client, key):
    batch_id = create(client, key)

    # A form value is a string, and echo's `fail` must be a boolean.
    response = client.post(
        JOBS, {"api-key": key, "batch-id": batch_id, "job-type": "echo", "fail": "yes"}
    )

    assert failure(response, 400) == {
        "success": False,
        "errors": {"fail": "must be true or false"},
    }
    assert results(client, key, batch_id) == {
        "success": True,
        "status": "Created",
        "results": {},
        "statuses": {},
    }


def test_brightlocal__adding_needs_a_job_type(client, key):
    batch_id = create(client, key)

    response = client.post(JOBS, {"api-key": key, "batch-id": batch_id, "n": "1"})

    assert failure(response, 400) == {
        "success": False,
        "errors": {"job-type": "This field is required."},
    }


def test_brightlocal__adding_to_an_unknown_batch_is_404(client, key):
    response = client.post(JOBS, {"api-key": key, "batch-id": "424242", "job-type": "echo"})

    assert failure(response, 404) == NOT_FOUND


# --- keys, methods, tenancy ---------------------------------------------------------------------


def test_brightlocal__missing_key_is_401(client, db):
    response = client.post(BATCH)

    assert failure(response, 401) == {
        "success": False,
        "errors": {"INVALID_API_KEY": "An API key is required: send it as the api-key parameter"},
    }
    assert not Batch.objects.exists()


def test_brightlocal__invalid_key_is_401(client, key):
    response = client.post(BATCH, {"api-key": key + "x"})

    assert failure(response, 401) == {
        "success": False,
        "errors": {"INVALID_API_KEY": "Invalid API key."},
    }


def test_brightlocal__revoked_key_is_401(client, key, account):
    services.api_key_revoke(key=account.api_keys.get())

    response = client.get(BATCH, {"api-key": key, "batch-id": "1"})

    assert failure(response, 401)["errors"] == {"INVALID_API_KEY": "Invalid API key."}


def test_brightlocal__key_in_the_authorization_header_is_not_this_dialects_way(client, key):
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")

    assert failure(client.post(BATCH), 401)["errors"].keys() == {"INVALID_API_KEY"}


def test_brightlocal__unsupported_method_is_405(client, key):
    response = client.patch(f"{BATCH}?api-key={key}")

    assert failure(response, 405) == {
        "success": False,
        "errors": {"METHOD_NOT_ALLOWED": 'Method "PATCH" not allowed.'},
    }


def test_brightlocal__unknown_path_is_404_in_the_dialects_shape(client, key):
    response = client.get(f"{BATCH}/nope?api-key={key}")

    assert failure(response, 404)["errors"].keys() == {"NOT_FOUND"}


def test_brightlocal__another_accounts_batch_is_404(client, key, other_key):
    batch_id = create(client, key)
    add_job(client, key, batch_id, n="1")

    assert failure(client.get(BATCH, {"api-key": other_key, "batch-id": batch_id}), 404) == (
        NOT_FOUND
    )
    assert failure(commit(client, other_key, batch_id), 404) == NOT_FOUND
    response = client.post(
        JOBS, {"api-key": other_key, "batch-id": batch_id, "job-type": "echo", "n": "2"}
    )
    assert failure(response, 404) == NOT_FOUND
    response = client.delete(f"{BATCH}?api-key={other_key}&batch-id={batch_id}")
    assert failure(response, 404) == NOT_FOUND

    polled = results(client, key, batch_id)
    assert polled["status"] == "Created"
    assert polled["statuses"] == {"Pending": 1}


def test_brightlocal__batch_ids_are_numbers_across_accounts(client, key, other_key):
    mine = create(client, key)
    theirs = create(client, other_key)

    assert mine != theirs
    assert results(client, other_key, theirs)["status"] == "Created"


def test_brightlocal__results_of_a_batch_made_through_the_api_are_shown(client, key, account):
    batch, _ = services.batch_create(
        account=account, actor="test", items=[{"payload": {"n": 1}}], commit=True
    )

    polled = results(client, key, str(batch.number))

    assert polled["status"] == "Committed"
    assert polled["statuses"] == {"Queued": 1}


def test_brightlocal__a_batch_made_by_another_account_through_the_api_is_404(client, key):
    other = AccountFactory()
    batch, _ = services.batch_create(account=other, actor="test")

    response = client.get(BATCH, {"api-key": key, "batch-id": str(batch.number)})

    assert failure(response, 404) == NOT_FOUND


# --- schema -------------------------------------------------------------------------------------


def test_brightlocal__schema_lists_every_endpoint_under_its_tag(db):
    response = APIClient().get("/compat/brightlocal/schema/?format=json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        f"{BATCH}": {"get", "post", "put", "delete"},
        f"{JOBS}": {"post"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert set(paths[path]) == methods
        for method in methods:
            assert paths[path][method]["tags"] == ["compat: brightlocal"], (path, method)
    assert set(paths) == set(expected)
