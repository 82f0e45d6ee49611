"""Top-level URL routes."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/api/v1/docs/", permanent=False), name="home"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("batches.api.urls")),
]
