"""Dashboard views: staff only; reads through `queries`, every change through `services`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from batches import exports, services
from batches.api.authentication import request_actor
from batches.dashboard import queries
from batches.dashboard.forms import (
    AccountCreateForm,
    ApiKeyCreateForm,
    BatchChangeForm,
    BatchFilterForm,
    ConfirmForm,
    ItemFilterForm,
)
from batches.exceptions import DomainError
from batches.models import Account, ApiKey, Batch, Item

LIST_COLUMNS = {
    "number": "#",
    "status": "status",
    "type": "type",
    "account": "account",
    "label": "label",
    "progress": "progress",
    "items": "items",
    "created": "created",
    "finished": "finished",
}


def staff_required(view: Callable) -> Callable:
    """Let staff in; send anonymous users to the login page and refuse everyone else (403)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), resolve_url(settings.LOGIN_URL))
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("the dashboard is for staff users")
        return view(request, *args, **kwargs)

    return wrapper


def is_htmx(request: HttpRequest) -> bool:
    """Return True for a request htmx made to swap in a fragment."""
    return request.headers.get("HX-Request") == "true"


def _refused(request: HttpRequest, exc: DomainError) -> None:
    """Show a refusal with the message and code the API would answer with."""
    messages.error(request, exc.message, extra_tags=exc.code)


# --- overview and batch list ---------------------------------------------------------------------


def _batch_list_context(request: HttpRequest) -> dict:
    form = BatchFilterForm(request.GET)
    sort = form.sort_key()
    batches = queries.batches_filtered(form.filters(), sort)
    page = Paginator(batches, queries.BATCHES_PER_PAGE).get_page(request.GET.get("page"))
    rows = queries.batch_rows(page.object_list)
    query = request.GET.urlencode()
    return {
        "form": form,
        "page": page,
        "page_range": page.paginator.get_elided_page_range(page.number, on_each_side=2),
        "rows": rows,
        "rows_live": any(row.live for row in rows),
        "rows_url": reverse("dashboard:batch-rows") + (f"?{query}" if query else ""),
        "columns": queries.sort_columns(sort, LIST_COLUMNS),
        "sort": sort,
    }


@staff_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """Show the overview panel and the batch list."""
    context = {
        "section": "batches",
        "overview": queries.overview(),
        **_batch_list_context(request),
    }
    return render(request, "dashboard/home.html", context)


@staff_required
@require_GET
def batch_rows(request: HttpRequest) -> HttpResponse:
    """Return the batch list's rows alone, for htmx to swap in while batches run."""
    return render(request, "dashboard/_batch_rows.html", _batch_list_context(request))


@staff_required
@require_GET
def overview_panel(request: HttpRequest) -> HttpResponse:
    """Return the overview panel alone, for htmx to swap in while batches run."""
    return render(request, "dashboard/_overview.html", {"overview": queries.overview()})


# --- one batch -----------------------------------------------------------------------------------


def _batch(pk) -> Batch:
    return get_object_or_404(Batch.objects.select_related("account").with_unfolded_counts(), pk=pk)


@staff_required
@require_GET
def batch_detail(request: HttpRequest, pk) -> HttpResponse:
    """Show a batch: header, chart, timeline, first errors and its items."""
    batch = _batch(pk)
    item_form = ItemFilterForm(request.GET)
    items, next_after = queries.items_page(batch, item_form.filters(), after=item_form.cursor())
    events, event_total = queries.batch_events(batch)
    context = {
        "section": "batches",
        "batch": batch,
        "summary": queries.batch_summary(batch),
        "item_form": item_form,
        "items": items,
        "next_after": next_after,
        "paged": item_form.cursor() >= 0,
        "events": events,
        "event_total": event_total,
        "errors": queries.batch_errors(batch),
        "deliveries": queries.batch_deliveries(batch),
        "failed_items": queries.failed_items(batch),
        "options": _options(batch),
        "metadata": queries.pretty_json(batch.metadata) if batch.metadata else "",
    }
    return render(request, "dashboard/batch_detail.html", context)


def _options(batch: Batch) -> list[tuple[str, object]]:
    shown = [(name, getattr(batch, name)) for name in services.BATCH_OPTIONS]
    shown += [("source_url", batch.source_url), ("superseded", batch.superseded)]
    return [(name, value) for name, value in shown if value not in (None, "", False)]


@staff_required
@require_GET
def batch_header(request: HttpRequest, pk) -> HttpResponse:
    """Return a batch's live header alone, for htmx to swap in while it runs."""
    batch = _batch(pk)
    summary = queries.batch_summary(batch)
    response = render(request, "dashboard/_batch_header.html", {"summary": summary})
    if is_htmx(request) and not summary.live:
        # The batch just ended: reload once so the items, errors and timeline catch up.
        response["HX-Refresh"] = "true"
    return response


@staff_required
@require_GET
def item_detail(request: HttpRequest, pk, index: int) -> HttpResponse:
    """Show one item's payload, result and error (a fragment for htmx, else a page)."""
    batch = _batch(pk)
    item = get_object_or_404(Item, batch=batch, index=index)
    context = {"section": "batches", "batch": batch, "detail": queries.item_detail(batch, item)}
    template = "dashboard/_item_detail.html" if is_htmx(request) else "dashboard/item_detail.html"
    return render(request, template, context)


# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionSpec:
    """A batch action: what the confirmation page asks, and the service call that does it."""

    title: str
    question: str
    button: str
    danger: bool
    run: Callable[[Batch, str], Batch | None]


BATCH_ACTIONS: dict[str, ActionSpec] = {
    "cancel": ActionSpec(
        title="Cancel batch",
        question="Items not yet run are cancelled; items that ended keep their results.",
        button="Yes, cancel the batch",
        danger=True,
        run=lambda batch, actor: services.batch_cancel(batch=batch, actor=actor),
    ),
    "pause": ActionSpec(
        title="Pause batch",
        question="Workers take no new chunk of this batch; chunks in flight finish.",
        button="Yes, pause the batch",
        danger=False,
        run=lambda batch, actor: services.batch_pause(batch=batch, actor=actor),
    ),
    "resume": ActionSpec(
        title="Resume batch",
        question="Workers take the batch's remaining chunks again.",
        button="Yes, resume the batch",
        danger=False,
        run=lambda batch, actor: services.batch_resume(batch=batch, actor=actor),
    ),
    "rerun-failed": ActionSpec(
        title="Rerun failed items",
        question="The failed items are queued again; items that succeeded keep their results.",
        button="Yes, rerun the failed items",
        danger=False,
        run=lambda batch, actor: services.batch_rerun(batch=batch, which="failed", actor=actor),
    ),
    "rerun-all": ActionSpec(
        title="Rerun all items",
        question="Every item is queued again; all results and output files are discarded.",
        button="Yes, rerun every item",
        danger=True,
        run=lambda batch, actor: services.batch_rerun(batch=batch, which="all", actor=actor),
    ),
    "delete": ActionSpec(
        title="Delete batch",
        question="The batch, its items, errors, timeline and files are removed for good.",
        button="Yes, delete the batch",
        danger=True,
        run=lambda batch, actor: services.batch_delete(batch=batch, actor=actor),
    ),
}


@staff_required
@require_http_methods(["GET", "POST"])
def batch_action(request: HttpRequest, pk, action: str) -> HttpResponse:
    """Ask to confirm an action (GET), then do it through its service (POST)."""
    spec = BATCH_ACTIONS[action]
    batch = _batch(pk)
    form = ConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = spec.run(batch, request_actor(request))
        except DomainError as exc:
            _refused(request, exc)
            return redirect("dashboard:batch-detail", pk=batch.pk)
        if result is None:
            messages.success(request, f"Batch {batch.number} was deleted.")
            return redirect("dashboard:home")
        messages.success(request, f"{spec.title} {batch.number}: done; it is now {result.status}.")
        return redirect("dashboard:batch-detail", pk=batch.pk)
    context = {"section": "batches", "batch": batch, "spec": spec, "action": action, "form": form}
    return render(request, "dashboard/confirm.html", context, status=400 if form.errors else 200)


@staff_required
@require_http_methods(["GET", "POST"])
def batch_change(request: HttpRequest, pk) -> HttpResponse:
    """Change a live batch's label, metadata, priority, concurrency or deadline."""
    batch = _batch(pk)
    form = BatchChangeForm(request.POST or None, batch=batch)
    if request.method == "POST" and form.is_valid():
        try:
            services.batch_change(
                batch=batch, actor=request_actor(request), changes=form.cleaned_data
            )
        except DomainError as exc:
            _refused(request, exc)
        else:
            messages.success(request, f"Batch {batch.number} changed.")
        return redirect("dashboard:batch-detail", pk=batch.pk)
    context = {"section": "batches", "batch": batch, "form": form}
    return render(
        request, "dashboard/batch_change.html", context, status=400 if form.errors else 200
    )


# --- downloads -----------------------------------------------------------------------------------


@staff_required
@require_GET
def batch_download(request: HttpRequest, pk, name: str) -> HttpResponseBase:
    """Stream the batch's items (JSONL/CSV, optionally by status), errors CSV or package."""
    batch = _batch(pk)
    if name in ("items.jsonl", "items.csv"):
        statuses = request.GET.getlist("status")
        unknown = sorted(set(statuses) - set(Item.Status.values))
        if unknown:
            return HttpResponseBadRequest(f"unknown status {', '.join(unknown)}")
        return exports.batch_download(batch, name, statuses=statuses)
    if name == "package.zip":
        try:
            exports.package_check(batch)
        except DomainError as exc:
            _refused(request, exc)
            return redirect("dashboard:batch-detail", pk=batch.pk)
    return exports.batch_download(batch, name)


# --- accounts and keys ---------------------------------------------------------------------------


def _accounts_page(request: HttpRequest, *, account_form=None, status: int = 200) -> HttpResponse:
    context = {
        "section": "accounts",
        "accounts": queries.accounts_with_keys(),
        "account_form": account_form or AccountCreateForm(),
        "key_form": ApiKeyCreateForm(),
    }
    return render(request, "dashboard/accounts.html", context, status=status)


@staff_required
@require_GET
def accounts(request: HttpRequest) -> HttpResponse:
    """List accounts with their API keys."""
    return _accounts_page(request)


@staff_required
@require_http_methods(["POST"])
def account_create(request: HttpRequest) -> HttpResponse:
    """Create an account."""
    form = AccountCreateForm(request.POST)
    if not form.is_valid():
        return _accounts_page(request, account_form=form, status=400)
    try:
        account = services.account_create(name=form.cleaned_data["name"])
    except DomainError as exc:
        _refused(request, exc)
        return redirect("dashboard:accounts")
    messages.success(request, f"Account {account.name} (number {account.number}) was created.")
    return redirect("dashboard:accounts")


@staff_required
@require_http_methods(["GET", "POST"])
def api_key_create(request: HttpRequest, number: int) -> HttpResponse:
    """Ask for a key's name (GET); create the key and show the raw key this once (POST)."""
    account = get_object_or_404(Account, number=number)
    form = ApiKeyCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        api_key, raw = services.api_key_create(
            account=account, name=form.cleaned_data["name"] or "dashboard"
        )
        # Rendered, not redirected: the raw key must never sit in a session or a URL.
        response = render(
            request,
            "dashboard/key_created.html",
            {"section": "accounts", "account": account, "api_key": api_key, "raw_key": raw},
            status=201,
        )
        response["Cache-Control"] = "no-store"
        return response
    context = {"section": "accounts", "account": account, "form": form}
    return render(request, "dashboard/key_new.html", context, status=400 if form.errors else 200)


@staff_required
@require_http_methods(["GET", "POST"])
def api_key_revoke(request: HttpRequest, prefix: str) -> HttpResponse:
    """Ask to confirm (GET), then revoke the key (POST): requests made with it fail from now."""
    api_key = get_object_or_404(ApiKey.objects.select_related("account"), prefix=prefix)
    form = ConfirmForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.api_key_revoke(key=api_key)
        messages.success(request, f"Key {api_key.prefix} of {api_key.account.name} was revoked.")
        return redirect("dashboard:accounts")
    context = {"section": "accounts", "api_key": api_key, "form": form}
    return render(request, "dashboard/key_revoke.html", context, status=400 if form.errors else 200)
