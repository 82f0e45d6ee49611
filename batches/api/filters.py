"""Filters for batch and item lists."""

import django_filters

from batches.models import Batch, Item


class BatchFilter(django_filters.FilterSet):
    """Filter batches by status, type, label and creation time."""

    status = django_filters.MultipleChoiceFilter(choices=Batch.Status.choices)
    type = django_filters.CharFilter()
    label = django_filters.CharFilter(lookup_expr="icontains")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
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
