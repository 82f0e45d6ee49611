"""Routes of the API under /api/v1/."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from batches.api.renderers import SchemaNegotiation
from batches.api.views import ApiNotFound, BatchViewSet, JobTypeList

app_name = "api"

router = SimpleRouter()
router.register("batches", BatchViewSet, basename="batch")

urlpatterns = [
    path("job-types/", JobTypeList.as_view(), name="job-types"),
    path(
        "schema/",
        SpectacularAPIView.as_view(
            permission_classes=[], content_negotiation_class=SchemaNegotiation
        ),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api:schema", permission_classes=[]),
        name="docs",
    ),
    *router.urls,
    # Anything else under /api/v1/ is a problem document too, not Django's HTML 404.
    re_path(r"^.*$", ApiNotFound.as_view(), name="not-found"),
]
