"""Content-Security-Policy: every dashboard page sends it, and no page needs it relaxed.

The policy allows scripts and styles only from the site's own files, so a page must hold no
inline script, no event-handler attribute, no `hx-on` (htmx runs those through `Function`),
no `javascript:` URL and no inline style: each is refused by the browser (tests/browser checks
that no refusal is reported).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.urls import reverse

from batches import services
from tests.conftest import ROOT
from tests.factories import ApiKeyFactory, WebhookDeliveryFactory, open_batch

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
TEMPLATES = ROOT / "templates"
REQUIRED = {
    "default-src": {"'self'"},
    "script-src": {"'self'"},
    "object-src": {"'none'"},
    "base-uri": {"'none'"},
    "frame-ancestors": {"'none'"},
    "form-action": {"'self'"},
}
UNSAFE = {"'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "'wasm-unsafe-eval'", "data:"}


def policy(response) -> dict[str, set[str]]:
    """Return the response's Content-Security-Policy as {directive: {sources}}."""
    header = response.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.request['PATH_INFO']}"
    directives = {}
    for part in header.split(";"):
        name, *sources = part.split()
        directives[name] = set(sources)
    return directives


class InlineCode(HTMLParser):
    """Collect what a strict policy would refuse to run or apply in a page."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            kind = (attributes.get("type") or "text/javascript").lower()
            # A JSON data block is never run; anything else needs a src.
            if "src" not in attributes and kind != "application/json":
                self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name.startswith("on") or name.startswith(("hx-on", "data-hx-on")):
                self.found.append(f"<{tag} {name}=...>")
            if name == "style":
                self.found.append(f"<{tag} style=...>")
            if name in ("href", "src", "action", "formaction") and (
                value or ""
            ).strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:...>")
            if name in ("hx-vals", "hx-vars") and "js:" in (value or ""):
                self.found.append(f"<{tag} {name}=js:...>")


def inline_code(html: str) -> list[str]:
    """Return what in `html` the dashboard's policy would refuse."""
    parser = InlineCode()
    parser.feed(html)
    parser.close()
    return parser.found


@pytest.fixture
def pages(staff, account, django_capture_on_commit_callbacks):
    """Fetch every dashboard page and fragment, as GETs and as the POSTs that answer pages."""
    batch = open_batch(
        account=account,
        items=[{"payload": {"n": 0}}, {"payload": {"n": 1, "fail": True}}],
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.batch_commit(batch=batch, actor="test")
    batch.refresh_from_db()
    # A delivery row, so the deliveries section and its Redeliver form are drawn.
    batch.callback_url = "https://hooks.example/batchsite"
    batch.save(update_fields=["callback_url"])
    WebhookDeliveryFactory(batch=batch)
    live = open_batch(account=account, items=2)
    services.batch_commit(batch=live, actor="test")  # its tasks never run: it stays live
    api_key = ApiKeyFactory(account=account, name="listed")
    number = account.number

    responses = {
        "home": staff.get(reverse("dashboard:home")),
        "home filtered": staff.get(reverse("dashboard:home"), {"status": "nonsense"}),
        "overview panel": staff.get(reverse("dashboard:overview-panel"), **HX),
        "batch rows": staff.get(reverse("dashboard:batch-rows"), **HX),
        "batch detail": staff.get(reverse("dashboard:batch-detail", args=[batch.pk])),
        "live batch detail": staff.get(reverse("dashboard:batch-detail", args=[live.pk])),
        "batch header": staff.get(reverse("dashboard:batch-header", args=[live.pk]), **HX),
        "item page": staff.get(reverse("dashboard:item-detail", args=[batch.pk, 1])),
        "item fragment": staff.get(reverse("dashboard:item-detail", args=[batch.pk, 1]), **HX),
        "confirm": staff.get(reverse("dashboard:batch-action", args=[live.pk, "cancel"])),
        "change": staff.get(reverse("dashboard:batch-change", args=[live.pk])),
        "accounts": staff.get(reverse("dashboard:accounts")),
        "key new": staff.get(reverse("dashboard:api-key-create", args=[number])),
        "key created": staff.post(
            reverse("dashboard:api-key-create", args=[number]), {"name": "csp"}
        ),
        "key revoke": staff.get(reverse("dashboard:api-key-revoke", args=[api_key.prefix])),
        "secret rotate": staff.get(reverse("dashboard:webhook-secret-rotate", args=[number])),
        "secret created": staff.post(
            reverse("dashboard:webhook-secret-rotate", args=[number]), {"confirm": "on"}
        ),
    }
    for name, response in responses.items():
        assert response.status_code in (200, 201), (name, response.status_code)
    return responses


def test_csp__every_dashboard_page_sends_the_policy(pages):
    for name, response in pages.items():
        directives = policy(response)
        for directive, sources in REQUIRED.items():
            assert directives.get(directive) == sources, (name, directive, directives)
        for directive in ("default-src", "script-src", "style-src"):
            assert not directives.get(directive, set()) & UNSAFE, (name, directive)


def test_csp__no_dashboard_page_holds_inline_code(pages):
    found = {name: inline_code(r.content.decode()) for name, r in pages.items()}

    assert {name: code for name, code in found.items() if code} == {}


def test_csp__the_pages_cover_every_dashboard_template(pages):
    rendered = {t.name for response in pages.values() for t in response.templates if t.name}
    ours = {str(path.relative_to(TEMPLATES)) for path in Path(TEMPLATES).rglob("*.html")}

    assert ours - rendered == set()


def test_csp__htmx_injects_no_style_and_evaluates_nothing(staff):
    page = staff.get(reverse("dashboard:home")).content.decode()

    config = re.search(r'<meta name="htmx-config" content=\'([^\']+)\'>', page)
    assert config, "base.html must configure htmx"
    assert '"includeIndicatorStyles": false' in config[1]
    assert '"allowEval": false' in config[1]
