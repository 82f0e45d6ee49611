"""Authenticate API requests by `Authorization: Api-Key <key>`."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from batches.api.throttling import AuthFailureThrottle
from batches.models import Account, ApiKey

# last_used_at is written at most this often per key, so reads stay reads.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class KeyUser:
    """The request user for a request made with an API key: it acts for one account."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key
        self.account: Account = api_key.account
        self.pk = None
        self.username = f"key:{api_key.prefix}"

    def __str__(self):
        return self.username


def api_key_check(raw: str, *, request) -> ApiKey:
    """Return the usable key for a raw key string; raise AuthenticationFailed otherwise.

    Every way of presenting a key (this API's header, the dialects' parameters) ends here,
    so this is where bad keys are counted per client address: past the limit the address
    is refused (Throttled) before its key is looked at. Only a key that matches no usable
    key (wrong, unknown, revoked) counts: an expired key or a disabled account's was not
    guessed.
    """
    failures = AuthFailureThrottle(request)
    failures.check()
    prefix = raw.partition(".")[0]
    api_key = ApiKey.objects.select_related("account").filter(prefix=prefix, revoked=False).first()
    if api_key is None or not api_key.is_valid(raw):
        failures.failure_record()
        raise exceptions.AuthenticationFailed("Invalid API key.")
    if api_key.has_expired:
        raise exceptions.AuthenticationFailed("This API key has expired.")
    if not api_key.account.is_active:
        raise exceptions.AuthenticationFailed("This account is disabled.")
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key


class KeyAuthentication(authentication.BaseAuthentication):
    """Check the API key a request carries; a subclass says where it is (`raw_key`)."""

    # Where the key goes, named in a 401's WWW-Authenticate: without it DRF answers 403.
    challenge = ""

    def raw_key(self, request) -> str | None:
        """Return the raw key the request carries, None without one; fail a malformed one."""
        raise NotImplementedError

    def authenticate(self, request):
        """Return (KeyUser, ApiKey) for a valid key, None without one, else fail."""
        raw = self.raw_key(request)
        if not raw:
            return None
        api_key = api_key_check(raw, request=request)
        return KeyUser(api_key), api_key

    def authenticate_header(self, request):
        """Answer 401 (not 403) to requests without a key, naming where it goes."""
        return self.challenge


class ApiKeyAuthentication(KeyAuthentication):
    """Look up the hashed key named in the Authorization header."""

    keyword = "Api-Key"
    challenge = keyword

    def raw_key(self, request) -> str | None:
        """Return the key of an `Authorization: Api-Key <key>` header."""
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: use 'Api-Key <key>'."
            )
        try:
            return header[1].decode()
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid API key.") from exc


def request_account(request) -> Account | None:
    """Return the account an API-key request acts for; None for staff sessions."""
    return getattr(request.user, "account", None)


def request_key_account(request) -> Account:
    """Return the account of a request that only API-key authentication admits.

    The dialects take no staff sessions, so their requests always act for an account.
    """
    user = request.user
    if not isinstance(user, KeyUser):
        raise exceptions.NotAuthenticated()
    return user.account


def request_actor(request) -> str:
    """Name who made the request, for the batch timeline."""
    if isinstance(request.user, KeyUser):
        return request.user.username
    return f"user:{request.user.get_username()}"
