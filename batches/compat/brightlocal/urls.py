"""Routes of the BrightLocal dialect under /compat/brightlocal/."""

from django.urls import path, re_path

from batches.compat.brightlocal.views import BatchView, JobAddView, NotFoundView
from batches.compat.schema import schema_route

app_name = "brightlocal"

urlpatterns = [
    path("seo-tools/api/v4/batch", BatchView.as_view(), name="batch"),
    path("seo-tools/api/v4/batch/jobs", JobAddView.as_view(), name="jobs"),
    schema_route("brightlocal"),
    # Anything else under the dialect answers in its shape too, not Django's HTML 404.
    re_path(r"^[\s\S]*$", NotFoundView.as_view(), name="not-found"),
]
