"""Top-level URL routes."""

from django.contrib import admin
from django.urls import include, path

from batchsite import observability, probes

urlpatterns = [
    path("admin/", admin.site.urls),
    # ProbeMiddleware answers these before any URL is resolved; named here for reverse().
    path("healthz/", probes.healthz, name="healthz"),
    path("readyz/", probes.readyz, name="readyz"),
    path("metrics/", observability.metrics, name="metrics"),
    path("api/v1/", include("batches.api.urls")),
    path("compat/brightlocal/", include("batches.compat.brightlocal.urls")),
    path("compat/centrapay/", include("batches.compat.centrapay.urls")),
    path("compat/signing/", include("batches.compat.signing.urls")),
    path("compat/dlcs/", include("batches.compat.dlcs.urls")),
    path("", include("batches.dashboard.urls")),
]
