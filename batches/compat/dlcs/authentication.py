"""HTTP Basic authentication carrying a batchsite API key, as DLCS clients send their key.

DLCS clients are configured with a key and a secret and send them as
`Authorization: Basic base64(key:secret)`. A batchsite key `PREFIX.SECRET` maps either way:

- as the password, whole, with any user name: `base64(anything:PREFIX.SECRET)`;
- split at its dot, the prefix as the user name and the rest as the password:
  `base64(PREFIX:SECRET)` (a DLCS key and secret).

A password with a dot is a whole key; one without is the part after the prefix. Either
way the key is checked by batches.api.authentication.api_key_check, like every other way
of presenting a key.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BasicAuthentication

from batches.api.authentication import KeyUser, api_key_check

REALM = "batchsite"


def basic_raw_key(user: str, password: str) -> str:
    """Return the raw API key that Basic credentials carry."""
    return password if "." in password else f"{user}.{password}"


class BasicApiKeyAuthentication(BasicAuthentication):
    """Read an API key from HTTP Basic credentials; a bad key is 401 with a Basic challenge."""

    www_authenticate_realm = REALM

    def authenticate_credentials(self, userid, password, request=None):
        """Return (KeyUser, ApiKey) for the key the credentials carry; fail otherwise."""
        api_key = api_key_check(basic_raw_key(userid, password), request=request)
        return KeyUser(api_key), api_key


class BasicApiKeyScheme(OpenApiAuthenticationExtension):
    """Describe Basic-with-an-API-key in the schema."""

    target_class = "batches.compat.dlcs.authentication.BasicApiKeyAuthentication"
    name = "DlcsBasic"

    def get_security_definition(self, auto_schema):
        """Return the HTTP Basic security scheme and how the key maps onto it."""
        return {
            "type": "http",
            "scheme": "basic",
            "description": (
                "A batchsite API key PREFIX.SECRET as the password (any user name), or "
                "PREFIX as the user name and SECRET as the password."
            ),
        }
