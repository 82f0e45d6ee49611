"""Content-Security-Policy beyond the dashboard: the admin, the API, its docs, the browsable API.

Scripts are held to `script-src 'self'` everywhere; only third-party pages whose markup
styles inline (Swagger UI, DRF's browsable API) may have inline styles.
"""

from __future__ import annotations

import re

import pytest

from tests.dashboard.test_csp import policy

pytestmark = pytest.mark.django_db

UNSAFE_INLINE = "'unsafe-inline'"


@pytest.mark.parametrize(
    "path", ["/admin/login/", "/api/v1/job-types/", "/api/v1/nowhere/", "/healthz/"]
)
def test_csp__the_rest_of_the_site_sends_the_strict_policy(client, path):
    directives = policy(client.get(path))

    assert directives["script-src"] == {"'self'"}
    assert directives["style-src"] == {"'self'"}
    assert directives["frame-ancestors"] == {"'none'"}


def test_csp__the_api_docs_page_runs_no_inline_script(client):
    response = client.get("/api/v1/docs/")

    assert response.status_code == 200
    directives = policy(response)
    assert directives["script-src"] == {"'self'"}
    assert directives["style-src"] == {"'self'", UNSAFE_INLINE}
    scripts = re.findall(r"<script\b[^>]*>", response.content.decode())
    assert scripts
    assert all("src=" in tag for tag in scripts), scripts
    start = client.get("/api/v1/docs/", {"script": ""})
    assert start["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in start.content


def test_csp__the_browsable_api_may_style_inline_but_not_script(staff_client):
    page = staff_client.get("/api/v1/batches/", HTTP_ACCEPT="text/html")
    data = staff_client.get("/api/v1/batches/", HTTP_ACCEPT="application/json")

    assert page["Content-Type"].startswith("text/html")
    assert policy(page)["style-src"] == {"'self'", UNSAFE_INLINE}
    assert policy(page)["script-src"] == {"'self'"}
    assert policy(data)["style-src"] == {"'self'"}
