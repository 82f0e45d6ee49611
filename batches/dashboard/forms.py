"""Dashboard forms: list filters, confirmations, and the little input the actions take."""

from __future__ import annotations

from typing import cast

from django import forms
from django.utils import timezone

from batches.dashboard.queries import DEFAULT_SORT, SORTS
from batches.models import Account, Batch, Item
from jobs import job_types

SORT_CHOICES = [(key, key) for key in SORTS] + [(f"-{key}", f"-{key}") for key in SORTS]


class BatchFilterForm(forms.Form):
    """Filters and sort order of the batch list, read from the query string."""

    status = forms.ChoiceField(
        required=False,
        choices=[
            ("", "any status"),
            ("live", "live (any active)"),
            ("ended", "ended (any final)"),
            *Batch.Status.choices,
        ],
    )
    type = forms.ChoiceField(required=False)
    account = forms.ModelChoiceField(
        queryset=Account.objects.order_by("name"),
        required=False,
        to_field_name="number",
        empty_label="any account",
    )
    created_after = forms.DateField(
        required=False, label="created from", widget=forms.DateInput(attrs={"type": "date"})
    )
    created_before = forms.DateField(
        required=False, label="created to", widget=forms.DateInput(attrs={"type": "date"})
    )
    q = forms.CharField(
        required=False,
        max_length=200,
        label="label",
        widget=forms.TextInput(attrs={"placeholder": "label contains…", "type": "search"}),
    )
    sort = forms.ChoiceField(required=False, choices=SORT_CHOICES, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = sorted(job_types())
        # Declared as a ChoiceField above; `fields` is typed as a dict of plain Fields.
        type_field = cast(forms.ChoiceField, self.fields["type"])
        type_field.choices = [("", "any type"), *((name, name) for name in names)]

    def filters(self) -> dict:
        """Return the valid filters; a bad field is dropped (and shown with its error)."""
        self.is_valid()
        return {name: value for name, value in self.cleaned_data.items() if name != "sort"}

    def sort_key(self) -> str:
        """Return the asked sort order, or the default."""
        self.is_valid()
        return self.cleaned_data.get("sort") or DEFAULT_SORT


class ItemFilterForm(forms.Form):
    """Filters of a batch's items table, and the keyset cursor of its page."""

    status = forms.ChoiceField(required=False, choices=[("", "any status"), *Item.Status.choices])
    type = forms.CharField(required=False, max_length=100)
    external_id = forms.CharField(required=False, max_length=255, label="external id")
    after = forms.IntegerField(required=False, min_value=-1, widget=forms.HiddenInput)

    def filters(self) -> dict:
        """Return the valid filters, without the cursor."""
        self.is_valid()
        return {name: value for name, value in self.cleaned_data.items() if name != "after"}

    def cursor(self) -> int:
        """Return the index the page starts after (-1: from the first item)."""
        self.is_valid()
        after = self.cleaned_data.get("after")
        return -1 if after is None else after


class ConfirmForm(forms.Form):
    """The second step of an action: a POST that says yes (and carries the CSRF token)."""

    confirm = forms.BooleanField(required=True, initial=True, widget=forms.HiddenInput)


class BatchChangeForm(forms.Form):
    """What PATCH batches/{id}/ may change, for a staff user; the service checks the state."""

    label = forms.CharField(required=False, max_length=200)
    metadata = forms.JSONField(required=False, widget=forms.Textarea(attrs={"rows": 6}))
    priority = forms.IntegerField(min_value=-100, max_value=100)
    max_concurrency = forms.IntegerField(
        required=False, min_value=1, max_value=10_000, help_text="Empty: no limit."
    )
    deadline = forms.DateTimeField(
        required=False,
        help_text="Empty: none. In the server's time zone.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def __init__(self, data=None, *, batch: Batch):
        initial = {name: getattr(batch, name) for name in self.base_fields}
        super().__init__(data, initial=initial)
        self.batch = batch

    def clean_metadata(self):
        """Require a JSON object (empty means none)."""
        value = self.cleaned_data["metadata"]
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Must be a JSON object.")
        return value

    def clean_deadline(self):
        """Refuse a new deadline that has already passed; an unchanged one stays."""
        value = self.cleaned_data["deadline"]
        if value is not None and value != self.batch.deadline and value <= timezone.now():
            raise forms.ValidationError("Must be in the future.")
        return value


class AccountCreateForm(forms.Form):
    """Name a new account."""

    name = forms.CharField(max_length=100)


class ApiKeyCreateForm(forms.Form):
    """Name a new API key (a note for people; the key itself is random)."""

    name = forms.CharField(max_length=50, required=False, initial="dashboard")
