"""Routes of the API under /api/v1/."""

from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from batches.api.notfound import ApiNotFound
from batches.api.renderers import SchemaNegotiation
from batches.api.views import UUID_PATTERN, ApiRoot, BatchViewSet, JobTypeList
from batches.api.webhooks import AccountView, DeliveryViewSet, WebhookSecretView

app_name = "api"

router = SimpleRouter()
router.register("batches", BatchViewSet, basename="batch")

urlpatterns = [
    path("", ApiRoot.as_view(), name="root"),
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
        # Swagger UI's page loads its start-up script from `docs/?script` rather than inline
        # (the split view), so the site's policy holds for scripts; its markup has a
        # <style> element and its stylesheet data: images, which that page alone allows.
        csp_update({"style-src": [SELF, UNSAFE_INLINE], "img-src": [SELF, "data:"]})(
            SpectacularSwaggerSplitView.as_view(url_name="api:schema", permission_classes=[])
        ),
        name="docs",
    ),
    re_path(
        rf"^batches/(?P<pk>{UUID_PATTERN})/deliveries/$",
        DeliveryViewSet.as_view({"get": "list"}),
        name="batch-deliveries",
    ),
    re_path(
        rf"^batches/(?P<pk>{UUID_PATTERN})/deliveries/(?P<delivery_id>{UUID_PATTERN})/redeliver/$",
        DeliveryViewSet.as_view({"post": "redeliver"}),
        name="batch-delivery-redeliver",
    ),
    path("account/", AccountView.as_view(), name="account"),
    path("account/webhook-secret/", WebhookSecretView.as_view(), name="account-webhook-secret"),
    *router.urls,
    # Anything else under /api/v1/ is a problem document too, not Django's HTML 404
    # (`[\s\S]`, not `.`, so that a path with an encoded newline in it is caught too).
    re_path(r"^[\s\S]*$", ApiNotFound.as_view(), name="not-found"),
]
