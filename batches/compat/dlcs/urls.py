"""Routes of the DLCS dialect under /compat/dlcs/: DLCS's own paths."""

from django.urls import path, re_path

from batches.compat.dlcs import views
from batches.compat.schema import schema_route

app_name = "compat-dlcs"

BATCH = "customers/<str:customer>/queue/batches/<str:batchId>"

urlpatterns = [
    path("customers/<str:customer>/queue", views.Queue.as_view(), name="queue"),
    path("customers/<str:customer>/queue/batches", views.BatchList.as_view(), name="batches"),
    path(BATCH, views.BatchDetail.as_view(), name="batch"),
    path(f"{BATCH}/images", views.BatchImages.as_view(), name="batch-images"),
    path(f"{BATCH}/test", views.BatchTest.as_view(), name="batch-test"),
    schema_route("dlcs"),
    re_path(r"^[\s\S]*$", views.DlcsNotFound.as_view(), name="not-found"),
]
