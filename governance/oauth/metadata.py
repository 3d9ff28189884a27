"""RFC 8414 authorization-server metadata and the JWKS of the access-token signing keys.

Truthful by construction: each endpoint is reversed from the URL configuration, each supported value is the
constant the code enforces.  ``issuer`` is ``GATEHOUSE_ISSUER`` byte for byte (clients compare it exactly).
"""

from __future__ import annotations

from django.http import JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET

from governance import auth_levels
from governance.conf import gatehouse_settings
from governance.models.agents import TokenEndpointAuthMethod
from governance.oauth import signing_keys
from governance.oauth.client_auth import SIGNING_ALG_VALUES
from governance.oauth.dpop import DPOP_SIGNING_ALGS
from governance.oauth.endpoint import oauth_endpoint


def _url(name: str) -> str:
    return gatehouse_settings.ISSUER + reverse(name)


def _backchannel() -> dict:
    """OpenID CIBA Core 1.0 §4 (poll mode only), when an app names its endpoint in the settings."""
    name = gatehouse_settings.BACKCHANNEL_AUTHENTICATION_ENDPOINT
    if not name:
        return {}
    return {
        "backchannel_authentication_endpoint": _url(name),
        "backchannel_token_delivery_modes_supported": ["poll"],
        "backchannel_user_code_parameter_supported": False,
    }


def metadata_document() -> dict:
    client_methods = [m.value for m in TokenEndpointAuthMethod]
    confidential_methods = [m for m in client_methods if m != TokenEndpointAuthMethod.NONE]
    return {
        **_backchannel(),
        "issuer": gatehouse_settings.ISSUER,
        "authorization_endpoint": _url("oauth:authorize"),
        "token_endpoint": _url("oauth:token"),
        "jwks_uri": _url("oauth:jwks"),
        "registration_endpoint": _url("oauth:register"),
        "revocation_endpoint": _url("oauth:revoke"),
        "introspection_endpoint": _url("oauth:introspect"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(gatehouse_settings.TOKEN_GRANT_TYPES),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": client_methods,
        "token_endpoint_auth_signing_alg_values_supported": SIGNING_ALG_VALUES,
        "revocation_endpoint_auth_methods_supported": client_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": SIGNING_ALG_VALUES,
        "introspection_endpoint_auth_methods_supported": confidential_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": SIGNING_ALG_VALUES,
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": False,
        "dpop_signing_alg_values_supported": list(DPOP_SIGNING_ALGS),
        # Step-up: the levels the authorization endpoint's acr_values can ask for (docs/step-up.md).
        "acr_values_supported": list(auth_levels.LEVELS),
    }


@require_GET
def _metadata(request):
    response = JsonResponse(metadata_document())
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    return response


@require_GET
def _jwks(request):
    response = JsonResponse(signing_keys.jwks())
    response["Cache-Control"] = f"public, max-age={gatehouse_settings.JWKS_MAX_AGE_SECONDS}"
    response["Access-Control-Allow-Origin"] = "*"
    return response


authorization_server_metadata = oauth_endpoint("metadata")(_metadata)
jwks = oauth_endpoint("jwks")(_jwks)
