"""GET /api/v1/: links to the API's parts, for a client that knows only where the API is."""

from __future__ import annotations

from rest_framework.test import APIClient

from tests.helpers.api import API, assert_problem

BASE = "http://testserver"


def test_api_root__links_to_every_part_of_the_api_without_a_key(db):
    response = APIClient().get(f"{API}/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "links": {
            "batches": f"{BASE}/api/v1/batches/",
            "job_types": f"{BASE}/api/v1/job-types/",
            "account": f"{BASE}/api/v1/account/",
            "schema": f"{BASE}/api/v1/schema/",
            "docs": f"{BASE}/api/v1/docs/",
        },
        "dialect_schemas": {
            "brightlocal": f"{BASE}/compat/brightlocal/schema/",
            "centrapay": f"{BASE}/compat/centrapay/schema/",
            "signing": f"{BASE}/compat/signing/schema/",
            "dlcs": f"{BASE}/compat/dlcs/schema/",
        },
    }


def test_api_root__every_link_answers(client_a):
    links = client_a.get(f"{API}/").json()

    for url in [*links["links"].values(), *links["dialect_schemas"].values()]:
        assert client_a.get(url).status_code == 200, url


def test_api_root__with_a_key_answers_the_same(client_a):
    assert client_a.get(f"{API}/").json() == APIClient().get(f"{API}/").json()


def test_api_root__an_unknown_key_is_refused(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Api-Key nope.nope")

    assert_problem(client.get(f"{API}/"), 401, "not_authenticated")


def test_api_root__other_methods_are_refused_with_a_problem(db):
    response = APIClient().post(f"{API}/", {}, format="json")

    assert_problem(response, 405, "method_not_allowed")
