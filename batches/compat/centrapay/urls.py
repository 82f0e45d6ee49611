"""Routes of the Centrapay dialect under /compat/centrapay/."""

from django.urls import path, re_path

from batches.compat.centrapay.views import (
    BatchCreateView,
    BatchDetailView,
    BatchTypeListView,
    NotFoundView,
)
from batches.compat.schema import schema_route

app_name = "centrapay"

urlpatterns = [
    path("api/batches", BatchCreateView.as_view(), name="batches"),
    path("api/batches/<str:id>", BatchDetailView.as_view(), name="batch"),
    path("api/batch-types", BatchTypeListView.as_view(), name="batch-types"),
    schema_route("centrapay"),
    # Anything else under the dialect answers in its shape too, not Django's HTML 404.
    re_path(r"^[\s\S]*$", NotFoundView.as_view(), name="not-found"),
]
