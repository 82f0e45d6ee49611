"""The operators' dashboard: pages, permissions, live fragments, actions, keys and downloads."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from batches import services
from batches.models import Account, ApiKey, Batch, BatchError, Item
from tests.factories import AccountFactory, ApiKeyFactory, BatchFactory, ItemFactory, open_batch

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
POLLING = 'hx-trigger="every 2s"'


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def run_inline(django_capture_on_commit_callbacks):
    """Run what a block queues on commit (chunk tasks, in sync mode) when the block exits."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def finished_batch(account, run_inline) -> Batch:
    """Three echo items, the middle one failing, run to the end."""
    batch = open_batch(
        account=account,
        items=[
            {"external_id": "a-0", "payload": {"n": 0}},
            {"external_id": "a-1", "payload": {"n": 1, "fail": True}},
            {"external_id": "a-2", "payload": {"n": 2}},
        ],
    )
    with run_inline():
        services.batch_commit(batch=batch, actor="test")
    batch.refresh_from_db()
    assert batch.status == Batch.Status.FINISHED
    return batch


@pytest.fixture
def committed_batch(account) -> Batch:
    """A committed batch whose chunk tasks never run: it stays live."""
    batch = open_batch(account=account, items=4)
    return services.batch_commit(batch=batch, actor="test")


def html(response) -> str:
    return response.content.decode()


def detail_url(batch, suffix: str = "") -> str:
    return reverse("dashboard:batch-detail", args=[batch.pk]) + suffix


def action_url(batch, action: str) -> str:
    return reverse("dashboard:batch-action", args=[batch.pk, action])


def download_url(batch, name: str) -> str:
    return reverse("dashboard:batch-download", args=[batch.pk, name])


def row_numbers(response) -> list[int]:
    """Return the batch numbers of the list's rows, in order."""
    return [int(n) for n in re.findall(r'data-testid="batch-row-(\d+)"', html(response))]


def confirm(client: Client, url: str, **data):
    """Open a confirmation page, then POST its form with the CSRF token it handed out."""
    page = client.get(url)
    assert page.status_code == 200
    token = client.cookies["csrftoken"].value
    return client.post(url, {"csrfmiddlewaretoken": token, "confirm": "1", **data})


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def streamed(response) -> bytes:
    assert response.streaming
    return b"".join(response.streaming_content)


# --- permissions ---------------------------------------------------------------------------------


def dashboard_urls(batch: Batch, key: ApiKey) -> list[str]:
    return [
        reverse("dashboard:home"),
        reverse("dashboard:batch-rows"),
        reverse("dashboard:overview-panel"),
        detail_url(batch),
        reverse("dashboard:batch-header", args=[batch.pk]),
        reverse("dashboard:item-detail", args=[batch.pk, 0]),
        action_url(batch, "cancel"),
        download_url(batch, "items.jsonl"),
        reverse("dashboard:accounts"),
        reverse("dashboard:api-key-create", args=[batch.account.number]),
        reverse("dashboard:api-key-revoke", args=[key.prefix]),
    ]


def test_dashboard__anonymous_users_are_sent_to_the_login_page(finished_batch, account):
    key, _ = services.api_key_create(account=account)
    client = Client()

    for url in dashboard_urls(finished_batch, key):
        response = client.get(url)

        assert response.status_code == 302, url
        location = urlsplit(response["Location"])
        assert location.path == reverse("admin:login"), url
        assert parse_qs(location.query) == {"next": [url]}


def test_dashboard__anonymous_posts_change_nothing(finished_batch):
    response = Client().post(action_url(finished_batch, "delete"), {"confirm": "1"})

    assert response.status_code == 302
    assert Batch.objects.filter(pk=finished_batch.pk).exists()


def test_dashboard__logged_in_users_who_are_not_staff_get_403(finished_batch, account):
    key, _ = services.api_key_create(account=account)
    user = get_user_model().objects.create_user("customer", password="pw")
    client = Client()
    client.force_login(user)

    for url in dashboard_urls(finished_batch, key):
        assert client.get(url).status_code == 403, url
    assert client.post(action_url(finished_batch, "delete"), {"confirm": "1"}).status_code == 403
    assert Batch.objects.filter(pk=finished_batch.pk).exists()


def test_home__login_page_leads_back_to_the_dashboard(staff_user):
    client = Client()
    login = reverse("admin:login") + "?next=/"

    response = client.post(login, {"username": "operator", "password": "pw", "next": "/"})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


# --- batch list ----------------------------------------------------------------------------------


def test_home__lists_batches_with_their_numbers(staff, finished_batch, committed_batch):
    response = staff.get(reverse("dashboard:home"))

    assert response.status_code == 200
    page = html(response)
    assert row_numbers(response) == [committed_batch.number, finished_batch.number]
    row = page.split(f'data-testid="batch-row-{finished_batch.number}"')[1].split("</tr>")[0]
    assert '<span class="pill status-finished" data-testid="status">finished</span>' in row
    assert '<span data-testid="progress">100</span>%' in row
    assert "2&nbsp;ok" in row
    assert "1&nbsp;failed" in row
    assert 'href="/batches/' in row
    assert "acme" in row
    assert 'src="/static/batchsite/htmx.min.js"' in page
    assert 'href="/static/batchsite/dashboard.css"' in page
    for link in ("/accounts/", "/admin/", "/api/v1/docs/"):
        assert f'href="{link}"' in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=finished", {"done"}),
        ("status=live", {"live"}),
        ("status=ended", {"done", "old"}),
        ("type=test.flaky", {"flaky"}),
        ("account=20002", {"other"}),
        ("q=LIV", {"live"}),
        ("created_after=2020-01-01&created_before=2020-01-31", {"old"}),
        ("created_before=2019-12-31", set()),
    ],
)
def test_home__filters_the_list(staff, query, expected):
    mine, theirs = AccountFactory(number=20001), AccountFactory(number=20002)
    batches = {
        "done": BatchFactory(account=mine, label="done one", status=Batch.Status.FINISHED),
        "live": BatchFactory(account=mine, label="a live one", status=Batch.Status.RUNNING),
        "old": BatchFactory(
            account=mine,
            label="old",
            status=Batch.Status.EXPIRED,
            created_at=timezone.make_aware(timezone.datetime(2020, 1, 15, 12)),
        ),
        "flaky": BatchFactory(account=mine, label="flaky", type="test.flaky"),
        "other": BatchFactory(account=theirs, label="theirs"),
    }
    names = {batch.number: name for name, batch in batches.items()}

    response = staff.get(f"{reverse('dashboard:home')}?{query}")

    assert response.status_code == 200
    assert {names[number] for number in row_numbers(response)} == expected


def test_home__a_bad_filter_is_shown_and_ignored(staff):
    BatchFactory()

    response = staff.get(reverse("dashboard:home") + "?created_after=yesterday&status=finished")

    assert response.status_code == 200
    assert "Enter a valid date." in html(response)
    assert row_numbers(response) == []


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("number", ["a", "b", "c"]),
        ("-number", ["c", "b", "a"]),
        ("progress", ["c", "a", "b"]),
        ("-progress", ["b", "a", "c"]),
        ("label", ["b", "c", "a"]),
        ("-items", ["a", "c", "b"]),
        ("-created", ["c", "b", "a"]),
    ],
)
def test_home__sorts_the_list(staff, sort, expected):
    batches = {
        "a": BatchFactory(number=1, label="zulu", total_items=10, succeeded_items=5),
        "b": BatchFactory(number=2, label="alpha", total_items=2, succeeded_items=2),
        "c": BatchFactory(number=3, label="mike", total_items=4),
    }
    names = {batch.number: name for name, batch in batches.items()}

    response = staff.get(f"{reverse('dashboard:home')}?sort={sort}")

    assert [names[number] for number in row_numbers(response)] == expected


def test_home__column_headers_sort_and_reverse(staff):
    BatchFactory()

    first = html(staff.get(reverse("dashboard:home") + "?status=created"))
    again = html(staff.get(reverse("dashboard:home") + "?status=created&sort=label"))

    assert 'href="?status=created&amp;sort=label" data-testid="sort-label"' in first
    assert 'href="?status=created&amp;sort=-label" data-testid="sort-label"' in again


def test_home__paginates_keeping_the_filters(staff, account):
    for number in range(1, 31):
        BatchFactory(account=account, number=number, label="paged")
    BatchFactory(number=99, label="elsewhere")

    first = staff.get(reverse("dashboard:home") + "?q=paged&sort=number")
    second = staff.get(reverse("dashboard:home") + "?q=paged&sort=number&page=2")

    assert row_numbers(first) == list(range(1, 26))
    assert row_numbers(second) == list(range(26, 31))
    assert "30 batches" in html(first)
    assert 'href="?q=paged&amp;sort=number&amp;page=2"' in html(first)


def make_batches(count: int, account) -> None:
    for number in range(count):
        batch = BatchFactory(
            account=account if number % 2 else AccountFactory(),
            status=Batch.Status.RUNNING if number % 3 else Batch.Status.FINISHED,
            total_items=2,
            succeeded_items=1,
        )
        ItemFactory(batch=batch, status=Item.Status.SUCCEEDED, finished_at=timezone.now())


@pytest.mark.parametrize("count", [3, 40])
def test_home__runs_a_bounded_number_of_queries(
    staff, account, count, django_assert_max_num_queries
):
    make_batches(count, account)

    with django_assert_max_num_queries(10):
        response = staff.get(reverse("dashboard:home") + "?account=&type=echo")

    assert len(row_numbers(response)) == min(count, 25)


@pytest.mark.parametrize("count", [3, 40])
def test_batch_rows__run_a_bounded_number_of_queries(
    staff, account, count, django_assert_max_num_queries
):
    make_batches(count, account)

    with django_assert_max_num_queries(5):
        response = staff.get(reverse("dashboard:batch-rows"), **HX)

    assert len(row_numbers(response)) == min(count, 25)


@pytest.mark.parametrize("count", [3, 300])
def test_batch_detail__runs_a_bounded_number_of_queries(
    staff, account, count, django_assert_max_num_queries
):
    batch = BatchFactory(
        account=account,
        status=Batch.Status.RUNNING,
        committed_at=timezone.now(),
        started_at=timezone.now(),
    )
    for index in range(count):
        ItemFactory(batch=batch, index=index, status="failed", finished_at=timezone.now())
        BatchError.objects.create(batch=batch, index=index, code="bad", message="bad")

    with django_assert_max_num_queries(9):
        response = staff.get(detail_url(batch))
    with django_assert_max_num_queries(4):
        staff.get(reverse("dashboard:batch-header", args=[batch.pk]), **HX)

    assert response.status_code == 200


def test_accounts__runs_a_bounded_number_of_queries(staff, django_assert_max_num_queries):
    for _ in range(10):
        account = AccountFactory()
        ApiKeyFactory.create_batch(2, account=account)
        BatchFactory(account=account)

    with django_assert_max_num_queries(5):
        response = staff.get(reverse("dashboard:accounts"))

    assert html(response).count('data-testid="key-') == 20 + 10  # rows + create forms


# --- live fragments ------------------------------------------------------------------------------


def test_batch_rows__poll_while_a_batch_is_running(staff, finished_batch, committed_batch):
    page = html(staff.get(reverse("dashboard:home") + "?sort=number"))
    fragment = staff.get(reverse("dashboard:batch-rows") + "?sort=number", **HX)

    assert f'<tbody id="batch-rows" hx-get="/_/batch-rows/?sort=number" {POLLING}' in page
    assert html(fragment).lstrip().startswith('<tbody id="batch-rows" hx-get=')
    assert POLLING in html(fragment)
    assert "<html" not in html(fragment)
    assert row_numbers(fragment) == [finished_batch.number, committed_batch.number]


def test_batch_rows__stop_polling_once_every_batch_has_ended(
    staff, finished_batch, committed_batch, run_inline
):
    with run_inline():
        services.batch_cancel(batch=committed_batch, actor="test")

    page = html(staff.get(reverse("dashboard:home")))
    fragment = html(staff.get(reverse("dashboard:batch-rows"), **HX))

    assert POLLING not in page
    assert fragment.lstrip().startswith('<tbody id="batch-rows">')
    assert "hx-get" not in fragment
    assert 'data-testid="status">cancelled<' in fragment


def test_overview_panel__polls_only_while_something_runs(staff, committed_batch, run_inline):
    running = html(staff.get(reverse("dashboard:overview-panel"), **HX))
    with run_inline():
        services.batch_cancel(batch=committed_batch, actor="test")
    ended = html(staff.get(reverse("dashboard:overview-panel"), **HX))

    assert running.lstrip().startswith('<section id="overview"')
    assert POLLING in running
    assert 'data-testid="status-count-committed">1<' in running
    assert POLLING not in ended
    assert 'data-testid="status-count-cancelled">1<' in ended


def test_batch_header__polls_while_the_batch_runs(staff, committed_batch):
    url = reverse("dashboard:batch-header", args=[committed_batch.pk])

    page = html(staff.get(detail_url(committed_batch)))
    fragment = staff.get(url, **HX)

    assert f'hx-get="{url}" {POLLING}' in page
    assert POLLING in html(fragment)
    assert "HX-Refresh" not in fragment
    assert 'data-testid="status">committed<' in html(fragment)
    assert 'data-testid="cancel"' in html(fragment)


def test_batch_header__stops_polling_and_reloads_once_the_batch_ends(
    staff, committed_batch, run_inline
):
    url = reverse("dashboard:batch-header", args=[committed_batch.pk])
    with run_inline():
        services.batch_cancel(batch=committed_batch, actor="test")

    fragment = staff.get(url, **HX)
    page = html(staff.get(detail_url(committed_batch)))

    assert POLLING not in html(fragment)
    assert fragment["HX-Refresh"] == "true"
    assert 'data-testid="status">cancelled<' in html(fragment)
    assert POLLING not in page


# --- overview ------------------------------------------------------------------------------------


def test_overview__counts_items_of_the_last_hour(staff, finished_batch):
    old = BatchFactory(status=Batch.Status.FINISHED, finished_at=timezone.now())
    ItemFactory(batch=old, status="succeeded", finished_at=timezone.now() - timedelta(hours=2))

    response = staff.get(reverse("dashboard:home"))

    # The finished batch's two succeeded items and its failed one.
    assert 'data-testid="items-last-hour">3<' in html(response)


def test_overview__shows_the_workers_of_live_clusters(staff, monkeypatch):
    from django_q.status import Stat

    now = timezone.now()
    stats = [
        SimpleNamespace(
            host="web-1", cluster_id="c1", pid=11, workers=[1, 2], status="Idle", tob=now
        ),
        SimpleNamespace(
            host="web-2", cluster_id="c2", pid=22, workers=[3, 4, 5], status="Working", tob=now
        ),
    ]
    monkeypatch.setattr(Stat, "get_all", staticmethod(lambda broker=None: stats))

    page = html(staff.get(reverse("dashboard:home")))

    assert 'data-testid="workers-alive">5<' in page
    assert "web-1" in page
    assert "Working" in page


def test_overview__says_when_no_cluster_runs(staff):
    page = html(staff.get(reverse("dashboard:home")))

    assert 'data-testid="workers-alive">0<' in page
    assert "no cluster running" in page


def test_overview__an_unreadable_cluster_status_keeps_the_page_up(staff, monkeypatch):
    from django_q.status import Stat

    def broken(broker=None):
        raise ConnectionError("cache down")

    monkeypatch.setattr(Stat, "get_all", staticmethod(broken))

    response = staff.get(reverse("dashboard:home"))

    assert response.status_code == 200
    assert 'data-testid="workers-alive">?<' in html(response)


def test_overview__highlights_batches_stuck_without_progress(staff, account, settings):
    settings.BATCHSITE_STUCK_MINUTES = 10
    long_ago = timezone.now() - timedelta(minutes=30)
    stuck = BatchFactory(
        account=account,
        status=Batch.Status.RUNNING,
        committed_at=long_ago,
        started_at=long_ago,
        last_outcome_at=long_ago + timedelta(minutes=5),
    )
    moving = BatchFactory(
        account=account,
        status=Batch.Status.RUNNING,
        committed_at=long_ago,
        started_at=long_ago,
        last_outcome_at=timezone.now(),
    )
    waiting = BatchFactory(
        account=account,
        status=Batch.Status.COMMITTED,
        committed_at=long_ago,
        not_before=timezone.now() + timedelta(hours=1),
    )

    paused = BatchFactory(
        account=account,
        status=Batch.Status.RUNNING,
        committed_at=long_ago,
        started_at=long_ago,
        last_outcome_at=long_ago,
        paused_at=long_ago,
    )

    page = html(staff.get(reverse("dashboard:home")))
    header = html(staff.get(reverse("dashboard:batch-header", args=[stuck.pk])))
    paused_header = html(staff.get(reverse("dashboard:batch-header", args=[paused.pk])))

    assert f'data-testid="stuck-{stuck.number}"' in page
    assert f'data-testid="stuck-{moving.number}"' not in page
    assert f'data-testid="stuck-{waiting.number}"' not in page
    assert f'data-testid="stuck-{paused.number}"' not in page
    assert 'data-testid="stuck"' not in paused_header
    assert f'<tr data-testid="batch-row-{stuck.number}" class="stuck">' in page
    assert f'<tr data-testid="batch-row-{moving.number}">' in page
    assert f'<tr data-testid="batch-row-{waiting.number}">' in page
    assert 'data-testid="stuck">no progress for' in header


# --- batch detail --------------------------------------------------------------------------------


def test_batch_detail__shows_header_counts_timeline_errors_and_items(staff, finished_batch):
    BatchError.objects.create(batch=finished_batch, index=7, code="invalid_json", message="bad")

    response = staff.get(detail_url(finished_batch))

    assert response.status_code == 200
    page = html(response)
    assert f"Batch {finished_batch.number}" in page
    assert 'data-testid="status">finished<' in page
    assert '<span data-testid="progress">100</span>%' in page
    assert 'data-testid="count-succeeded">2<' in page
    assert 'data-testid="count-failed">1<' in page
    timeline = page.split('data-testid="timeline"')[1].split("</ol>")[0]
    kinds = re.findall(r'<strong class="kind">(\w+)</strong>', timeline)
    assert kinds[:3] == ["created", "items_added", "committed"]
    assert kinds[-1] == "finished"
    failed = page.split('data-testid="failed-items"')[1].split("</table>")[0]
    assert f'href="/batches/{finished_batch.pk}/items/1/"' in failed
    assert "a-1" in failed
    assert "invalid_json" in page.split('data-testid="batch-errors"')[1]
    for index in range(3):
        assert f'data-testid="item-row-{index}"' in page
    assert f'hx-get="/batches/{finished_batch.pk}/items/0/" hx-target="#item-detail"' in page
    for testid in ("rerun-failed", "rerun-all", "delete", "export-jsonl", "export-package"):
        assert f'data-testid="{testid}"' in page
    assert 'data-testid="cancel"' not in page


def type_counts(page: str) -> dict[str, str]:
    """Return the cells of the counts-by-type table, as {"type/status": "n"}."""
    cells = re.findall(r'data-testid="count-([\w.]+)-(\w+)">(\d+)<', page)
    return {f"{name}/{status}": n for name, status, n in cells if status != "total"}


def test_batch_detail__counts_items_per_type_before_commit_and_once_ended(
    staff, account, run_inline
):
    batch = open_batch(
        account=account,
        items=[
            {"payload": {"n": 0}},
            {"payload": {"n": 1, "fail": True}},
            {"type": "test.flaky", "payload": {"n": 2}},
        ],
    )

    before = type_counts(html(staff.get(detail_url(batch))))
    with run_inline():
        services.batch_commit(batch=batch, actor="test")
    after = type_counts(html(staff.get(reverse("dashboard:batch-header", args=[batch.pk]), **HX)))

    assert {cell: n for cell, n in before.items() if n != "0"} == {
        "echo/pending": "2",
        "test.flaky/pending": "1",
    }
    assert {cell: n for cell, n in after.items() if n != "0"} == {
        "echo/succeeded": "1",
        "echo/failed": "1",
        "test.flaky/succeeded": "1",
    }


def test_batch_detail__draws_the_throughput_chart_from_item_finish_times(staff, account):
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    batch = BatchFactory(
        account=account,
        status=Batch.Status.FINISHED,
        committed_at=start,
        started_at=start,
        finished_at=start + timedelta(minutes=3, seconds=30),
        total_items=6,
        succeeded_items=6,
    )
    for index, minute in enumerate([0, 0, 0, 2, 2, 3]):
        ItemFactory(
            batch=batch,
            index=index,
            status=Item.Status.SUCCEEDED,
            finished_at=start + timedelta(minutes=minute, seconds=1),
        )

    page = html(staff.get(detail_url(batch)))

    chart = page.split('data-testid="throughput-chart"')[1].split("</figure>")[0]
    points = re.search(r'points="([^"]+)" data-testid="throughput-line"', chart).group(1)
    heights = [float(point.split(",")[1]) for point in points.split()]
    # Minutes 0..3 held 3, 0, 2 and 1 items: the line is highest first, at the base second.
    assert len(heights) == 4
    assert heights[0] < heights[2] < heights[3] < heights[1]
    assert "peak 0.05" in chart  # 3 items in a minute


def test_batch_detail__filters_items_by_status_type_and_external_id(staff, finished_batch):
    def rows(query: str) -> list[int]:
        page = html(staff.get(detail_url(finished_batch, f"?{query}")))
        return [int(n) for n in re.findall(r'data-testid="item-row-(\d+)"', page)]

    assert rows("status=failed") == [1]
    assert rows("status=succeeded") == [0, 2]
    assert rows("external_id=a-2") == [2]
    assert rows("type=echo&status=cancelled") == []
    assert rows("type=nothing") == []


def test_batch_detail__pages_items_by_index(staff, account, monkeypatch):
    from batches.dashboard import queries

    monkeypatch.setattr(queries.detail, "ITEMS_PER_PAGE", 2)
    batch = open_batch(account=account, items=5)

    first = html(staff.get(detail_url(batch)))
    second = html(staff.get(detail_url(batch, "?after=1")))
    last = html(staff.get(detail_url(batch, "?after=3")))

    assert re.findall(r'data-testid="item-row-(\d+)"', first) == ["0", "1"]
    assert 'href="?after=1#items" rel="next"' in first
    assert re.findall(r'data-testid="item-row-(\d+)"', second) == ["2", "3"]
    assert re.findall(r'data-testid="item-row-(\d+)"', last) == ["4"]
    assert 'data-testid="items-next"' not in last


def test_batch_detail__unknown_batch_is_404(staff):
    assert staff.get("/batches/00000000-0000-4000-8000-000000000000/").status_code == 404


def test_item_detail__fragment_shows_payload_result_and_error(staff, finished_batch):
    url = reverse("dashboard:item-detail", args=[finished_batch.pk, 1])

    fragment = html(staff.get(url, **HX))
    page = html(staff.get(url))
    ok = html(staff.get(reverse("dashboard:item-detail", args=[finished_batch.pk, 0]), **HX))

    assert "<html" not in fragment
    assert fragment.lstrip().startswith('<article class="item-detail"')
    payload = fragment.split('data-testid="item-payload">')[1].split("</pre>")[0]
    assert json.loads(payload.replace("&quot;", '"')) == {"n": 1, "fail": True}
    item = Item.objects.get(batch=finished_batch, index=1)
    assert item.error_code in fragment.split('data-testid="item-error"')[1]
    assert "<html" in page
    assert 'data-testid="item-detail-1"' in page
    result = ok.split('data-testid="item-result">')[1].split("</pre>")[0]
    assert json.loads(result.replace("&quot;", '"')) == {"n": 0}


def test_item_detail__atomic_batch_hides_results_until_it_finishes(staff, account):
    batch = BatchFactory(account=account, atomic=True, status=Batch.Status.RUNNING)
    ItemFactory(batch=batch, index=0, status="succeeded", result={"secret": 1})

    fragment = html(staff.get(reverse("dashboard:item-detail", args=[batch.pk, 0]), **HX))

    assert "secret" not in fragment
    assert "Hidden" in fragment


def test_item_detail__unknown_index_is_404(staff, finished_batch):
    url = reverse("dashboard:item-detail", args=[finished_batch.pk, 99])

    assert staff.get(url).status_code == 404


# --- actions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["cancel", "rerun-failed", "rerun-all", "delete"])
def test_batch_action__get_asks_for_confirmation_and_changes_nothing(staff, finished_batch, action):
    events = finished_batch.events.count()

    response = staff.get(action_url(finished_batch, action))

    assert response.status_code == 200
    page = html(response)
    assert 'data-testid="confirm"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert f'action="{action_url(finished_batch, action)}"' in page
    finished_batch.refresh_from_db()
    assert finished_batch.status == Batch.Status.FINISHED
    assert finished_batch.events.count() == events


def test_batch_action__post_without_csrf_token_is_refused(csrf_staff, committed_batch):
    response = csrf_staff.post(action_url(committed_batch, "cancel"), {"confirm": "1"})

    assert response.status_code == 403
    committed_batch.refresh_from_db()
    assert committed_batch.status == Batch.Status.COMMITTED


def test_batch_action__post_without_confirmation_changes_nothing(csrf_staff, committed_batch):
    csrf_staff.get(action_url(committed_batch, "cancel"))
    token = csrf_staff.cookies["csrftoken"].value

    response = csrf_staff.post(
        action_url(committed_batch, "cancel"), {"csrfmiddlewaretoken": token}
    )

    assert response.status_code == 400
    committed_batch.refresh_from_db()
    assert committed_batch.status == Batch.Status.COMMITTED


def test_batch_action__cancel_stops_a_committed_batch(csrf_staff, committed_batch, run_inline):
    with run_inline():
        response = confirm(csrf_staff, action_url(committed_batch, "cancel"))

    assert response.status_code == 302
    assert response["Location"] == detail_url(committed_batch)
    committed_batch.refresh_from_db()
    assert committed_batch.status == Batch.Status.CANCELLED
    assert committed_batch.cancelled_items == 4
    event = committed_batch.events.get(kind="cancel_requested")
    assert event.actor == "user:operator"
    page = csrf_staff.get(response["Location"])
    assert any("cancelled" in message for message in messages_of(page))


def test_batch_action__pause_then_resume_a_committed_batch(csrf_staff, committed_batch):
    page = csrf_staff.get(detail_url(committed_batch))
    assert 'data-testid="pause"' in html(page)
    assert 'data-testid="resume"' not in html(page)

    response = confirm(csrf_staff, action_url(committed_batch, "pause"))

    assert response.status_code == 302
    committed_batch.refresh_from_db()
    assert committed_batch.paused_at is not None
    page = csrf_staff.get(response["Location"])
    assert 'data-testid="paused"' in html(page)
    assert 'data-testid="resume"' in html(page)
    assert 'data-testid="pause"' not in html(page)
    rows = csrf_staff.get(reverse("dashboard:home"))
    assert 'data-testid="paused"' in html(rows)

    confirm(csrf_staff, action_url(committed_batch, "resume"))

    committed_batch.refresh_from_db()
    assert committed_batch.paused_at is None
    assert [e.kind for e in committed_batch.events.filter(kind__in=["paused", "resumed"])] == [
        "paused",
        "resumed",
    ]


def test_batch_detail__shows_priority_and_max_concurrency(staff, account):
    batch = open_batch(account=account, items=2, priority=7, max_concurrency=3)

    page = html(staff.get(detail_url(batch)))

    assert '<dd data-testid="priority">7</dd>' in page
    assert '<dd data-testid="max-concurrency">3</dd>' in page


def test_batch_action__pause_of_an_ended_batch_shows_the_apis_refusal(csrf_staff, finished_batch):
    response = confirm(csrf_staff, action_url(finished_batch, "pause"))

    assert response.status_code == 302
    finished_batch.refresh_from_db()
    assert finished_batch.paused_at is None
    page = csrf_staff.get(response["Location"])
    assert any("nothing left to pause" in message for message in messages_of(page))


def test_batch_action__rerun_failed_runs_the_failed_items_again(
    csrf_staff, finished_batch, run_inline
):
    succeeded = dict(
        Item.objects.filter(batch=finished_batch, status="succeeded").values_list("index", "seq")
    )

    with run_inline():
        response = confirm(csrf_staff, action_url(finished_batch, "rerun-failed"))

    assert response.status_code == 302
    event = finished_batch.events.get(kind="rerun")
    assert event.detail == {"items": "failed", "count": 1}
    assert event.actor == "user:operator"
    finished_batch.refresh_from_db()
    assert finished_batch.status == Batch.Status.FINISHED
    again = dict(
        Item.objects.filter(batch=finished_batch, status="succeeded").values_list("index", "seq")
    )
    assert again == succeeded


def test_batch_action__rerun_all_runs_every_item_again(csrf_staff, finished_batch, run_inline):
    before = dict(Item.objects.filter(batch=finished_batch).values_list("index", "seq"))

    with run_inline():
        response = confirm(csrf_staff, action_url(finished_batch, "rerun-all"))

    assert response.status_code == 302
    assert finished_batch.events.get(kind="rerun").detail == {"items": "all", "count": 3}
    after = dict(Item.objects.filter(batch=finished_batch).values_list("index", "seq"))
    assert all(after[index] > before[index] for index in before)


def test_batch_action__delete_removes_the_batch(csrf_staff, finished_batch, client_a):
    response = confirm(csrf_staff, action_url(finished_batch, "delete"))

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:home")
    assert not Batch.objects.filter(pk=finished_batch.pk).exists()
    assert not Item.objects.filter(batch_id=finished_batch.pk).exists()
    assert client_a.get(f"/api/v1/batches/{finished_batch.pk}/").status_code == 404
    home = csrf_staff.get(response["Location"])
    assert f"Batch {finished_batch.number} was deleted." in messages_of(home)


def test_batch_action__refused_cancel_shows_the_message_the_api_gives(
    csrf_staff, finished_batch, client_a
):
    api = client_a.post(f"/api/v1/batches/{finished_batch.pk}/cancel/")
    assert api.status_code == 409
    problem = api.json()

    response = confirm(csrf_staff, action_url(finished_batch, "cancel"))
    page = csrf_staff.get(response["Location"])

    assert response["Location"] == detail_url(finished_batch)
    assert messages_of(page) == [problem["detail"]]
    assert problem["detail"] in html(page)
    assert f'<code class="code">{problem["code"]}</code>' in html(page)
    finished_batch.refresh_from_db()
    assert finished_batch.status == Batch.Status.FINISHED


def test_batch_action__refused_rerun_shows_the_message_the_api_gives(
    csrf_staff, committed_batch, client_a
):
    api = client_a.post(
        f"/api/v1/batches/{committed_batch.pk}/rerun/", {"items": "failed"}, format="json"
    )
    assert api.status_code == 409

    response = confirm(csrf_staff, action_url(committed_batch, "rerun-failed"))

    assert messages_of(csrf_staff.get(response["Location"])) == [api.json()["detail"]]


def test_batch_action__unknown_action_is_404(staff, finished_batch):
    response = staff.get(f"/batches/{finished_batch.pk}/explode/")

    assert response.status_code == 404


# --- accounts and keys ---------------------------------------------------------------------------


def test_accounts__lists_accounts_and_their_keys(staff, account, other_account):
    key, raw = services.api_key_create(account=account, name="billing")
    revoked, _ = services.api_key_create(account=account, name="old")
    services.api_key_revoke(key=revoked)
    APIClient().get("/api/v1/batches/", HTTP_AUTHORIZATION=f"Api-Key {raw}")
    BatchFactory(account=account)

    response = staff.get(reverse("dashboard:accounts"))

    assert response.status_code == 200
    page = html(response)
    section = page.split(f'data-testid="account-{account.number}"')[1].split("</section>")[0]
    row = section.split(f'data-testid="key-{key.prefix}"')[1].split("</tr>")[0]
    assert "billing" in row
    assert timezone.now().strftime("%Y-%m-%d") in row  # created and last used
    assert "never" not in row
    assert f'data-testid="revoke-{key.prefix}"' in row
    old = section.split(f'data-testid="key-{revoked.prefix}"')[1].split("</tr>")[0]
    assert "revoked" in old
    assert "never" in old
    assert "1 batch<" in section
    assert f'data-testid="account-{other_account.number}"' in page
    assert raw not in page


def test_api_key_create__shows_the_raw_key_once_and_it_works(csrf_staff, account):
    url = reverse("dashboard:api-key-create", args=[account.number])

    response = confirm(csrf_staff, url, name="from the dashboard")

    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    raw = re.search(r'data-testid="raw-key">([^<]+)</pre>', html(response)).group(1)
    key = ApiKey.objects.get(account=account, name="from the dashboard")
    assert raw.startswith(key.prefix + ".")
    api = APIClient().get("/api/v1/batches/", HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert api.status_code == 200
    later = html(csrf_staff.get(reverse("dashboard:accounts")))
    assert key.prefix in later
    assert raw not in later


def test_api_key_create__without_csrf_token_is_refused(csrf_staff, account):
    url = reverse("dashboard:api-key-create", args=[account.number])

    response = csrf_staff.post(url, {"name": "sneaky"})

    assert response.status_code == 403
    assert not ApiKey.objects.filter(account=account).exists()


def test_api_key_revoke__makes_the_api_answer_401(csrf_staff, account):
    key, raw = services.api_key_create(account=account, name="doomed")
    auth = {"HTTP_AUTHORIZATION": f"Api-Key {raw}"}
    assert APIClient().get("/api/v1/batches/", **auth).status_code == 200
    url = reverse("dashboard:api-key-revoke", args=[key.prefix])

    assert csrf_staff.post(url, {"confirm": "1"}).status_code == 403
    assert APIClient().get("/api/v1/batches/", **auth).status_code == 200
    response = confirm(csrf_staff, url)

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:accounts")
    key.refresh_from_db()
    assert key.revoked
    assert APIClient().get("/api/v1/batches/", **auth).status_code == 401


def test_account_create__creates_an_account_and_refuses_a_taken_name(csrf_staff, account):
    csrf_staff.get(reverse("dashboard:accounts"))
    token = csrf_staff.cookies["csrftoken"].value
    url = reverse("dashboard:account-create")
    first = csrf_staff.post(url, {"csrfmiddlewaretoken": token, "name": "initech"}, follow=True)
    taken = csrf_staff.post(url, {"csrfmiddlewaretoken": token, "name": "acme"}, follow=True)

    initech = Account.objects.get(name="initech")
    assert messages_of(first) == [f"Account initech (number {initech.number}) was created."]
    assert f'data-testid="account-{initech.number}"' in html(first)
    assert messages_of(taken) == ["an account named 'acme' exists already"]
    assert Account.objects.filter(name="acme").count() == 1


# --- downloads -----------------------------------------------------------------------------------


def test_batch_download__items_as_jsonl(staff, finished_batch):
    response = staff.get(download_url(finished_batch, "items.jsonl"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    name = f"batch-{finished_batch.number}-items.jsonl"
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    rows = [json.loads(line) for line in streamed(response).decode().splitlines()]
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert [row["status"] for row in rows] == ["succeeded", "failed", "succeeded"]
    assert rows[0]["result"] == {"n": 0}


def test_batch_download__items_as_csv_filtered_by_status(staff, finished_batch):
    response = staff.get(download_url(finished_batch, "items.csv") + "?status=failed")

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(streamed(response).decode())))
    assert [(row["index"], row["external_id"]) for row in rows] == [("1", "a-1")]


def test_batch_download__unknown_status_is_400(staff, finished_batch):
    response = staff.get(download_url(finished_batch, "items.csv") + "?status=lost")

    assert response.status_code == 400


def test_batch_download__errors_as_csv(staff, finished_batch):
    BatchError.objects.create(batch=finished_batch, index=4, code="invalid_json", message="bad")

    response = staff.get(download_url(finished_batch, "errors.csv"))

    rows = list(csv.DictReader(io.StringIO(streamed(response).decode())))
    assert [(row["index"], row["code"], row["message"]) for row in rows] == [
        ("4", "invalid_json", "bad")
    ]


def test_batch_download__package_of_an_ended_batch(staff, finished_batch):
    response = staff.get(download_url(finished_batch, "package.zip"))

    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(streamed(response)))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["batch"] == str(finished_batch.pk)
    assert manifest["status"] == "finished"


def test_batch_download__package_waits_for_the_batch_to_end(staff, committed_batch):
    response = staff.get(download_url(committed_batch, "package.zip"), follow=True)

    assert messages_of(response) == ["batch is committed; its package is ready once it ends"]


def test_batch_download__unknown_file_is_404(staff, finished_batch):
    assert staff.get(f"/batches/{finished_batch.pk}/download/secrets.txt").status_code == 404


# --- changing a live batch -----------------------------------------------------------------------


def change_url(batch) -> str:
    return reverse("dashboard:batch-change", args=[batch.pk])


def change(client: Client, batch, data: dict):
    """Open the change form, then POST `data` with the CSRF token it handed out."""
    page = client.get(change_url(batch))
    assert page.status_code == 200
    token = client.cookies["csrftoken"].value
    return client.post(change_url(batch), {"csrfmiddlewaretoken": token, **data})


def test_batch_change__form_shows_the_current_values_and_saves_a_change(
    csrf_staff, committed_batch
):
    Batch.objects.filter(pk=committed_batch.pk).update(label="before", priority=2)
    page = html(csrf_staff.get(detail_url(committed_batch)))
    assert 'data-testid="change"' in page

    form = html(csrf_staff.get(change_url(committed_batch)))
    assert 'value="before"' in form
    assert 'value="2"' in form

    deadline = timezone.localtime(timezone.now() + timedelta(days=1)).replace(
        second=0, microsecond=0
    )
    response = change(
        csrf_staff,
        committed_batch,
        {
            "label": "after",
            "metadata": '{"team": "ops"}',
            "priority": "9",
            "max_concurrency": "2",
            "deadline": deadline.strftime("%Y-%m-%dT%H:%M"),
        },
    )

    assert response.status_code == 302
    committed_batch.refresh_from_db()
    assert committed_batch.label == "after"
    assert committed_batch.metadata == {"team": "ops"}
    assert (committed_batch.priority, committed_batch.max_concurrency) == (9, 2)
    assert committed_batch.deadline == deadline
    event = committed_batch.events.get(kind="changed")
    assert event.actor == "user:operator"
    assert set(event.detail) == {"label", "metadata", "priority", "max_concurrency", "deadline"}
    assert any(
        "changed" in message for message in messages_of(csrf_staff.get(response["Location"]))
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metadata", "[1, 2]"),
        ("metadata", "{not json"),
        ("priority", "500"),
        ("max_concurrency", "0"),
        ("deadline", "2001-01-01T00:00"),
    ],
)
def test_batch_change__bad_input_shows_the_field_error_and_changes_nothing(
    csrf_staff, committed_batch, field, value
):
    body = {
        "label": "after",
        "metadata": "{}",
        "priority": "0",
        "max_concurrency": "",
        "deadline": "",
    }

    response = change(csrf_staff, committed_batch, {**body, field: value})

    assert response.status_code == 400
    assert f'data-testid="error-{field}"' in html(response)
    committed_batch.refresh_from_db()
    assert committed_batch.label != "after"
    assert not committed_batch.events.filter(kind="changed").exists()


def test_batch_change__an_ended_batch_offers_no_change_and_a_post_shows_the_refusal(
    csrf_staff, finished_batch
):
    assert 'data-testid="change"' not in html(csrf_staff.get(detail_url(finished_batch)))

    response = change(
        csrf_staff,
        finished_batch,
        {
            "label": "after",
            "metadata": "{}",
            "priority": "0",
            "max_concurrency": "",
            "deadline": "",
        },
    )

    assert response.status_code == 302
    finished_batch.refresh_from_db()
    assert finished_batch.label != "after"
    page = csrf_staff.get(response["Location"])
    assert any("can no longer be changed" in message for message in messages_of(page))


def test_batch_change__needs_staff(client, committed_batch):
    response = client.post(change_url(committed_batch), {"label": "x", "priority": "0"})

    assert response.status_code == 302
    assert "/login/" in response["Location"]
    committed_batch.refresh_from_db()
    assert committed_batch.label != "x"
