"""Routes of the API under /api/v1/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from batches.api.views import BatchViewSet, JobTypeList

app_name = "api"

router = SimpleRouter()
router.register("batches", BatchViewSet, basename="batch")

urlpatterns = [
    path("job-types/", JobTypeList.as_view(), name="job-types"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[]), name="schema"),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api:schema", permission_classes=[]),
        name="docs",
    ),
    *router.urls,
]
