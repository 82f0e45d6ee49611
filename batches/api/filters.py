"""Filters for batch and item lists."""

from datetime import UTC

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField

from batches.models import Batch, Item


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, handed to the database in UTC.

    Python parses offsets up to ±23:59 and PostgreSQL takes at most ±15:59, so the
    value is converted to UTC first; one that is then before year 1 or after 9999
    (`0001-01-01T00:00:00+14:00`) is refused rather than crashing the query.
    """

    def to_python(self, value):
        """Parse the value and return it in UTC."""
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Date-time out of range.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """Filter by an ISO 8601 date-time that exists in UTC."""

    field_class = UtcIsoDateTimeField


class BatchFilter(django_filters.FilterSet):
    """Filter batches by status, type, label and creation time."""

    status = django_filters.MultipleChoiceFilter(choices=Batch.Status.choices)
    type = django_filters.CharFilter()
    label = django_filters.CharFilter(lookup_expr="icontains")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    superseded = django_filters.BooleanFilter()

    class Meta:
        model = Batch
        fields = ["status", "type", "label", "created_after", "created_before", "superseded"]


class ItemFilter(django_filters.FilterSet):
    """Filter a batch's items by status, type and external id."""

    status = django_filters.MultipleChoiceFilter(choices=Item.Status.choices)
    type = django_filters.CharFilter()
    external_id = django_filters.CharFilter()

    class Meta:
        model = Item
        fields = ["status", "type", "external_id"]
