"""Who is asking for a decision: a registered tool server, with the credentials it uses at introspection.

* ``Authorization: Basic`` (a tool server configured with a client secret): the broker's own client
  authentication, exactly as at introspection (``introspection.authenticate_tool_server``).
* ``Authorization: Bearer <client assertion>`` (a ``private_key_jwt`` tool server): the assertion goes through
  the broker's validator as a ``client_assertion`` would at the token endpoint (signature against the tool
  server's JWKS, ``iss`` = ``sub`` = client_id, ``aud`` = the issuer or this endpoint, single-use ``jti``),
  and may live at most :data:`MAX_ASSERTION_LIFETIME` seconds (the broker's limit is longer: common
  clients sign hour-long assertions for the token endpoint; a tool server signs one per call).
"""

from __future__ import annotations

import json
import time

from jwcrypto.common import base64url_decode

from governance.conf import gatehouse_settings
from governance.models import ToolServer
from governance.oauth.client_auth import ASSERTION_TYPE, MAX_ASSERTION_LENGTH
from governance.oauth.introspection import authenticate_tool_server

MAX_ASSERTION_LIFETIME = 300


def _short_lived(assertion: str) -> bool:
    """The assertion's ``exp`` is at most five minutes (plus skew) ahead; read unverified, as a bound only
    (the broker verifies the signature and every claim right after)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64url_decode(parts[1]))
    except (ValueError, TypeError):
        return False
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return False
    return exp <= time.time() + MAX_ASSERTION_LIFETIME + gatehouse_settings.CLOCK_SKEW_SECONDS


def authenticate_caller(request) -> ToolServer | None:
    """The tool server the request authenticates as, or None."""
    scheme, _, credentials = (request.META.get("HTTP_AUTHORIZATION") or "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "basic":
        return authenticate_tool_server(request)
    if scheme != "bearer" or not credentials or len(credentials) > MAX_ASSERTION_LENGTH:
        return None
    if not _short_lived(credentials):
        return None
    return authenticate_tool_server(
        request, {"client_assertion_type": ASSERTION_TYPE, "client_assertion": credentials}
    )
