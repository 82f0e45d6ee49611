"""Odd input the live schemathesis run found (or could find): a 400 or 404 problem, never a 500."""

from __future__ import annotations

import pytest

BATCHES = "/api/v1/batches/"


def assert_invalid(response, field: str) -> None:
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "invalid"
    assert field in {error["field"] for error in body["errors"]}


@pytest.mark.parametrize(
    "query",
    [
        # Valid ISO 8601, but before year 1 or after year 9999 once in UTC.
        "created_after=0001-01-01T00:00:00%2B14:00",
        "created_before=9999-12-31T23:59:59-14:00",
    ],
)
def test_batch_list__a_time_outside_what_utc_can_hold_is_invalid(client_a, query):
    assert_invalid(client_a.get(f"{BATCHES}?{query}"), query.partition("=")[0])


def test_batch_list__a_time_with_an_offset_postgresql_refuses_is_compared_in_utc(client_a):
    created = client_a.post(BATCHES, {"type": "echo"}, format="json").json()

    # -18:48 is a valid offset in Python, not in PostgreSQL.
    after = client_a.get(f"{BATCHES}?created_after=2000-01-01T00:00:00-18:48")
    before = client_a.get(f"{BATCHES}?created_before=2000-01-01T00:00:00-18:48")

    assert [batch["id"] for batch in after.json()["results"]] == [created["id"]]
    assert before.json()["results"] == []


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_failures", 2**31), ("max_failures", 10**30), ("retention_days", 36_501)],
)
def test_batch_create__an_option_too_large_to_store_is_invalid(client_a, option, value):
    body = {"type": "echo", "options": {option: value}}

    assert_invalid(client_a.post(BATCHES, body, format="json"), f"options.{option}")


def test_batch_create__the_largest_options_are_taken(client_a):
    options = {"max_failures": 2**31 - 1, "retention_days": 36_500}

    response = client_a.post(BATCHES, {"type": "echo", "options": options}, format="json")

    assert response.status_code == 201, response.content
    assert {name: response.json()["options"][name] for name in options} == options


@pytest.mark.parametrize(
    "metadata",
    [
        '{"note": "a\\u0000b"}',  # PostgreSQL's jsonb stores no NUL
        '{"a\\u0000": 1}',
        '{"deep": [{"x": "\\ud800"}]}',  # nor a lone surrogate
    ],
)
def test_batch_create__metadata_a_database_cannot_store_is_invalid(client_a, metadata):
    body = f'{{"type": "echo", "metadata": {metadata}}}'

    response = client_a.post(BATCHES, body, content_type="application/json")

    assert_invalid(response, "metadata")


def test_batch_create__metadata_with_an_escaped_backslash_is_kept(client_a):
    body = '{"type": "echo", "metadata": {"path": "C:\\\\u0000"}}'

    response = client_a.post(BATCHES, body, content_type="application/json")

    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == {"path": "C:\\u0000"}


@pytest.mark.parametrize("path", ["batches/x%0Ay/items/", "no%0Asuch/path"])
def test_unknown_api_path__with_a_newline_in_it_is_a_problem_document(client_a, path):
    response = client_a.get(f"/api/v1/{path}")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "path",
    [
        "/compat/signing/api/No%0ASuch",
        "/compat/dlcs/customers/1/no%0Asuch",
        "/compat/centrapay/api/no%0Asuch",
        "/compat/brightlocal/seo-tools/api/v4/no%0Asuch",
    ],
)
def test_unknown_dialect_path__with_a_newline_in_it_is_the_dialects_404(client_a, path):
    response = client_a.get(path)

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
