"""Routes of the signing dialect under /compat/signing/: the source API's own paths."""

from django.urls import path, re_path

from batches.compat.schema import schema_route
from batches.compat.signing import views

app_name = "compat-signing"

urlpatterns = [
    path("api/CreateBatch/<str:processId>", views.CreateBatch.as_view(), name="create-batch"),
    path("api/upload/<str:batchId>", views.UploadPackage.as_view(), name="upload"),
    path("api/BatchStatus/<str:batchId>", views.BatchStatus.as_view(), name="batch-status"),
    path("api/AcceptBatch", views.AcceptBatch.as_view(), name="accept-batch"),
    path(
        "api/AcceptBatch/<str:batchId>", views.AcceptBatchById.as_view(), name="accept-batch-by-id"
    ),
    path("api/batchfile/<str:batchId>", views.BatchFile.as_view(), name="batch-file"),
    path(
        "api/BatchDeleteCache/<str:batchId>",
        views.BatchDeleteCache.as_view(),
        name="batch-delete-cache",
    ),
    schema_route("signing"),
    re_path(r"^[\s\S]*$", views.SigningNotFound.as_view(), name="not-found"),
]
