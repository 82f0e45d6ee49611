"""API views for webhooks: a batch's delivery log and redelivery, the account's secret."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from batches import webhooks
from batches.api.authentication import request_account, request_actor
from batches.api.pagination import StrictCursorPagination
from batches.api.problems import PROBLEM_CONTENT_TYPE
from batches.api.schema import ProblemSerializer
from batches.api.views import BatchViewSet
from batches.exceptions import AccountRequired, NotFound
from batches.models import Account, Batch, WebhookAttempt, WebhookDelivery

# --- output --------------------------------------------------------------------------------------


class WebhookAttemptSerializer(serializers.ModelSerializer):
    """One try at posting a delivery, and what the receiver answered."""

    class Meta:
        model = WebhookAttempt
        fields = ["number", "started_at", "duration_ms", "status_code", "error", "response_excerpt"]
        read_only_fields = fields
        extra_kwargs = {
            "status_code": {"help_text": "The receiver's HTTP status; null if none came."},
            "error": {"help_text": "Why the try failed; empty when it succeeded."},
            "response_excerpt": {"help_text": "The first 500 characters of the answer."},
        }


class WebhookDeliverySerializer(serializers.ModelSerializer):
    """One event posted to a batch's callback_url, with every try at it."""

    attempts = WebhookAttemptSerializer(source="attempt_log", many=True, read_only=True)
    url = serializers.CharField(read_only=True, help_text="The batch's callback_url then.")
    body = serializers.CharField(read_only=True, help_text="The exact JSON text posted.")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "url",
            "status",
            "attempts",
            "next_attempt_at",
            "give_up_at",
            "last_status_code",
            "last_error",
            "created_at",
            "delivered_at",
            "body",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "event": {
                "help_text": (
                    "What happened: batch.<final state> (batch.finished, …), batch.progress "
                    "or item.failed; the body's `type`."
                )
            },
            "next_attempt_at": {"help_text": "When the next try is due; null once it ended."},
            "give_up_at": {"help_text": "Retries stop after this; a redelivery moves it."},
        }


class AccountSerializer(serializers.Serializer):
    """The caller's account; its webhook secret itself is never shown again."""

    number = serializers.IntegerField()
    name = serializers.CharField()
    webhook_secret_set = serializers.BooleanField(
        help_text="False: deliveries are sent unsigned until a secret is made."
    )
    webhook_secret_rotated_at = serializers.DateTimeField(allow_null=True)
    webhook_secret_standard = serializers.BooleanField(
        help_text=(
            "True: the secret is `whsec_` and base64, as Standard Webhooks libraries take it. "
            "False with a secret set: one made before, keyed by its own bytes; rotate it."
        )
    )


class WebhookSecretSerializer(serializers.Serializer):
    """A new webhook secret, shown this once."""

    secret = serializers.CharField(help_text="Store it now: it is never shown again.")
    rotated_at = serializers.DateTimeField()


def account_data(account: Account) -> dict:
    """Return what GET account/ says about an account."""
    return {
        "number": account.number,
        "name": account.name,
        "webhook_secret_set": bool(account.webhook_secret),
        "webhook_secret_rotated_at": account.webhook_secret_rotated_at,
        "webhook_secret_standard": bool(account.webhook_secret)
        and webhooks.secret_is_standard(account.webhook_secret),
    }


# --- views ---------------------------------------------------------------------------------------


class DeliveryCursorPagination(StrictCursorPagination):
    """Cursor pages of deliveries, newest first."""

    page_size = 50
    max_page_size = 200
    ordering = ("-created_at", "-id")


# drf-spectacular names a path's `pk` `id`; this describes it as the batch's.
BATCH_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The batch's id."
)
DELIVERY_ID = OpenApiParameter(
    "delivery_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The delivery's id."
)


@extend_schema(tags=["webhooks"], parameters=[BATCH_ID])
class DeliveryViewSet(viewsets.GenericViewSet):
    """The webhook deliveries of one batch the caller may see."""

    queryset = WebhookDelivery.objects.none()
    serializer_class = WebhookDeliverySerializer
    pagination_class = DeliveryCursorPagination
    filterset_class = None

    def get_batch(self) -> Batch:
        """Return the batch in the URL, scoped by tenant exactly as the batch views scope it."""
        scope = BatchViewSet(
            request=self.request, args=(), kwargs={"pk": self.kwargs["pk"]}, action="retrieve"
        )
        return scope.get_object()

    def list(self, request, pk=None):
        """List the batch's deliveries, newest first, each with its tries."""
        deliveries = self.get_batch().deliveries.prefetch_related("attempt_log")
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        parameters=[DELIVERY_ID], request=None, responses={202: WebhookDeliverySerializer}
    )
    def redeliver(self, request, pk=None, delivery_id=None):
        """Send a delivery again (whatever its status): same id and body, a new retry window."""
        delivery = self.get_batch().deliveries.filter(pk=delivery_id).first()
        if delivery is None:
            raise NotFound(f"batch has no delivery {delivery_id}")
        webhooks.delivery_redeliver(delivery=delivery, actor=request_actor(request))
        delivery = WebhookDelivery.objects.prefetch_related("attempt_log").get(pk=delivery.pk)
        return Response(self.get_serializer(delivery).data, status=status.HTTP_202_ACCEPTED)


NO_ACCOUNT = {
    (403, PROBLEM_CONTENT_TYPE): OpenApiResponse(
        ProblemSerializer,
        description="`account_required`: a staff session has no account; use an API key.",
    ),
}


def _caller_account(request) -> Account:
    account = request_account(request)
    if account is None:
        raise AccountRequired(
            "this resource belongs to the account of an API key; staff sessions have none "
            "(rotate an account's secret in the dashboard or with manage.py rotatewebhooksecret)"
        )
    return account


@extend_schema(tags=["account"])
class AccountView(APIView):
    """The account of the API key making the request."""

    @extend_schema(responses={200: AccountSerializer, **NO_ACCOUNT})
    def get(self, request):
        """Return the caller's account and whether it has a webhook secret."""
        return Response(account_data(_caller_account(request)))


@extend_schema(tags=["account"])
class WebhookSecretView(APIView):
    """The webhook secret of the API key's account."""

    @extend_schema(request=None, responses={201: WebhookSecretSerializer, **NO_ACCOUNT})
    def post(self, request):
        """Make a new webhook secret and return it once; the old one signs for a while more."""
        account = _caller_account(request)
        secret = webhooks.webhook_secret_rotate(account=account)
        account.refresh_from_db()
        body = {"secret": secret, "rotated_at": account.webhook_secret_rotated_at}
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})
