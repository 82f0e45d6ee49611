"""The 404 for paths nothing lives at, in the error shape of the API or dialect that answers.

The last route of each URL conf is such a view, so an unknown path never falls through to
Django's HTML 404.
"""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.schemas.inspectors import ViewInspector
from rest_framework.views import APIView

from batches.exceptions import NotFound


class CatchAllNotFound:
    """Answer every method with NotFound, in the error shape of the view it is mixed into.

    For the last route of a URL conf, so unknown paths get the API's own 404 body.
    """

    schema: ViewInspector | None = None

    # Methods, not empty authentication_classes and permission_classes: lists typed here
    # would clash with the typed lists of the view class mixed in.
    def get_authenticators(self) -> list[BaseAuthentication]:
        """Authenticate no one: there is nothing here to guard."""
        return []

    def get_permissions(self) -> list[BasePermission]:
        """Check no permission: every caller hears the same 404."""
        return []

    def not_found(self, request) -> Exception:
        """Return the error that says nothing lives at this path."""
        return NotFound(f"no resource at {request.path}")

    def get(self, request, *args, **kwargs):
        """Refuse: nothing lives here."""
        raise self.not_found(request)

    post = put = patch = delete = head = options = get


class ApiNotFound(CatchAllNotFound, APIView):
    """Answer any unknown path under the API with a 404 problem document."""
