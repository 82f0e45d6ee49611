"""Who may use the API: holders of an account's key, and staff users."""

from rest_framework import permissions

from batches.api.authentication import KeyUser


class IsAccountOrStaff(permissions.BasePermission):
    """Allow API-key requests and logged-in staff; everyone else is refused."""

    message = "Only API keys and staff users may use this API."

    def has_permission(self, request, view):
        """Return True for a key user or a staff user."""
        user = request.user
        return isinstance(user, KeyUser) or bool(user and user.is_authenticated and user.is_staff)
