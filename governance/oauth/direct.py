"""The token endpoint's direct path: a background agent's client-credentials token in two round trips.

Every background agent asks for a token every few minutes, with the same request: ``client_credentials``,
a ``private_key_jwt`` assertion, a ``scope`` and one ``resource``.  Through DOT and oauthlib that request
costs seven database round trips and much generic request handling.  This path answers it with one read
(the agent, its application and its covering grants), the ``jti`` claim in the replay cache, and on
PostgreSQL one write statement: the access token, its :class:`TokenRecord` and the ``token.issued`` audit
event, committed together or not at all.

It makes every check the general path makes, with the same code: the one issuance decision
(:func:`issuance.decide`, on the grants its read found), :func:`client_auth.verify_assertion`, the DPoP
proof (:func:`token_dpop.token_proof`: a proof makes a DPoP-bound token, as on the general path),
:func:`issuance.sign` and :func:`issuance.issue_event`; it issues only when all of them pass.  Anything
else returns None *before any side effect*, and the general path answers: unusual requests (Basic
credentials, no scope, a repeated or unknown parameter, a query string) and every request that would be
refused (unknown client, wrong method, an agent that is not active, a scope beyond the grants, step-up, a
bad assertion or proof).  The general path then refuses and audits exactly as before.  The assertion's
``jti`` is claimed last; a proof is verified once per request, so a request handed over with a proof is
answered from the same verification (its ``jti`` is not spent twice).

``GATEHOUSE_TOKEN_DIRECT_PATH = False`` sends every request the general way (the tests run both ways and
compare what each stores and answers).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connections, router, transaction
from django.http import HttpResponse
from django.utils import timezone
from oauth2_provider.models import get_access_token_model
from oauth2_provider.oauth2_validators import _parse_and_validate_uri
from oauth2_provider.signals import app_authorized

from audit import services as audit
from governance.conf import gatehouse_settings
from governance.models.agents import AgentKind, AgentStatus, TokenEndpointAuthMethod
from governance.oauth import client_auth, exchange, issuance, issuance_queries, state, token_dpop
from governance.oauth.dpop import DPoPError, issue_nonce
from governance.oauth.params import MAX_RESOURCE_LENGTH, MAX_SCOPE_LENGTH, MAX_SCOPES
from governance.oauth.principals import agent_for
from governance.oauth.refusals import Refusal

GRANT_TYPE = "client_credentials"
# A request with any other parameter is not the common one: the general path decides what it means.
PARAMETERS = {
    GRANT_TYPE: frozenset(
        {"grant_type", "client_assertion_type", "client_assertion", "scope", "resource", "client_id"}
    ),
    exchange.GRANT_TYPE: frozenset(
        {
            "grant_type",
            "client_assertion_type",
            "client_assertion",
            "client_id",
            "subject_token",
            "subject_token_type",
            "actor_token",
            "actor_token_type",
            "requested_token_type",
            "scope",
            "resource",
            "audience",
        }
    ),
}


def issue(request) -> HttpResponse | None:
    """The token response for a client-credentials or token-exchange request that passes every check made
    with a ``private_key_jwt`` assertion, else None (the general path answers)."""
    if not gatehouse_settings.TOKEN_DIRECT_PATH:
        return None
    grant_type = request.POST.get("grant_type")
    if grant_type not in PARAMETERS or not _common_shape(request, PARAMETERS[grant_type]):
        return None
    params = {key: values[0] for key, values in request.POST.lists()}
    if params.get("client_assertion_type") != client_auth.ASSERTION_TYPE:
        return None
    assertion = params.get("client_assertion")
    client_id = client_auth.unverified_issuer(assertion)
    if client_id is None or params.get("client_id", client_id) != client_id:
        return None
    if grant_type == exchange.GRANT_TYPE:
        return _token_exchange(request, params, client_id=client_id, assertion=assertion)
    requested = _scope(params.get("scope"))
    resource = params.get("resource") or ""
    if not requested or not _resource(resource):
        return None

    now = timezone.now()
    loaded = issuance_queries.background_agent_with_grants(
        client_id=client_id, keys=requested, audience=resource, now=now
    )
    if loaded is None:
        return None
    application, agent, grants = loaded
    if not _agent_may_ask(application, agent):
        return None
    covering = {grant.capability.key: grant for grant in grants}
    if set(requested) - set(covering):  # beyond the grants or the ceiling, an unknown audience...
        return None  # ...refused and audited by DOT's path
    proof_jkt = _proof_jkt(request, agent)
    if proof_jkt is None:
        return None  # a bad proof, or none where the agent requires one: refused and audited there
    try:  # the one issuance decision, on the grants read above
        issued = issuance.decide(
            agent=agent,
            grant_type=GRANT_TYPE,
            requested=requested,
            resources=[resource],
            user=None,
            proof_jkt=proof_jkt,
            covering=covering,
            now=now,
        )
    except Refusal:  # e.g. step-up: no person behind a background agent; refused and audited there
        return None
    if issued.decision.lifetime_seconds <= 0:
        return None

    if not _assertion_holds(request, assertion, client_id=client_id, agent=agent):
        return None
    token = issuance.sign(issued)
    _store(token, issued, application)
    return _response(token, issued)


def _token_exchange(request, params: dict, *, client_id: str, assertion: str) -> HttpResponse | None:
    """RFC 8693 on behalf of a user, by an interactive agent authenticating with ``private_key_jwt``: the
    exchange's rules (:func:`exchange.decide`, which ends in the one issuance decision), then the same
    signing and storage as client credentials."""
    application = issuance_queries.load_client(client_id)
    agent = agent_for(application)
    if (
        agent is None
        or agent.token_endpoint_auth_method != TokenEndpointAuthMethod.PRIVATE_KEY_JWT
        or agent.status != AgentStatus.ACTIVE
    ):
        return None
    header = request.META.get("HTTP_DPOP")
    try:
        issued = exchange.decide(
            state.current(),
            actor=agent,
            body=list(params.items()),
            headers=[] if header is None else [header],
            method=request.method,
        )
    except Refusal:
        return None  # refused and audited by the general path
    if not _assertion_holds(request, assertion, client_id=client_id, agent=agent):
        return None
    token = issuance.sign(issued)
    _store(token, issued, application)
    return _response(token, issued, issued_token_type=exchange.ACCESS_TOKEN_TYPE)


def _assertion_holds(request, assertion: str, *, client_id: str, agent) -> bool:
    """Last: the assertion's ``jti`` is claimed only when everything else holds."""
    try:
        client_auth.verify_assertion(
            assertion,
            client_id=client_id,
            jwks=agent.jwks,
            jwks_uri=agent.jwks_uri,
            audiences=client_auth.assertion_audiences(urlsplit(request.get_full_path()).path),
        )
    except client_auth.AssertionRejected:
        return False
    return True


def _common_shape(request, parameters: frozenset) -> bool:
    """A form POST with only the usual parameters, each once, and nothing the general path would weigh."""
    meta = request.META
    if request.method != "POST" or meta.get("QUERY_STRING") or "HTTP_AUTHORIZATION" in meta:
        return False
    if app_authorized.has_listeners():
        return False
    return all(key in parameters and len(values) == 1 for key, values in request.POST.lists())


def _scope(scope: str | None) -> list[str]:
    """The keys of a plainly written scope (single spaces, no other whitespace), once each; else []."""
    if not scope or len(scope) > MAX_SCOPE_LENGTH:
        return []
    keys = scope.split(" ")
    if keys != scope.split() or len(keys) > MAX_SCOPES:
        return []
    return list(dict.fromkeys(keys))


def _resource(resource: str) -> bool:
    return 0 < len(resource) <= MAX_RESOURCE_LENGTH and _parse_and_validate_uri(resource) is not None


def _agent_may_ask(application, agent) -> bool:
    return (
        application.authorization_grant_type == application.GRANT_CLIENT_CREDENTIALS
        and agent.token_endpoint_auth_method == TokenEndpointAuthMethod.PRIVATE_KEY_JWT
        and agent.status == AgentStatus.ACTIVE
        and agent.kind == AgentKind.BACKGROUND
    )


def _proof_jkt(request, agent) -> str | None:
    """The thumbprint of the request's verified DPoP proof ("" without one); None when the proof fails or
    the agent requires one and there is none."""
    header = request.META.get("HTTP_DPOP")
    if header is None:
        return None if agent.dpop_bound_tokens_required else ""
    try:
        proof = token_dpop.token_proof(state.current(), headers=[header], method=request.method)
    except DPoPError:
        return None
    return proof.jkt


def _store(token: str, issued: issuance.Issued, application) -> None:
    """The access token (DOT's row, value hashed), its record and the audit event: all or nothing."""
    AccessToken = get_access_token_model()
    event = issuance.issue_event(issued, refresh_token_issued=False)
    # DOT's access-token row by column (what its _create_access_token stores without a refresh token).
    token_columns = {
        "user_id": issued.user.pk if issued.user is not None else None,
        "source_refresh_token_id": None,
        "id_token_id": None,
        "application_id": application.pk,
        "expires": issued.expires_at,
        "scope": " ".join(issued.decision.allowed),
        "resource": [issued.tool_server.audience],
        **issuance_queries.stored_token_value(token),  # RFC 9700 storage: the checksum only
    }
    db = router.db_for_write(AccessToken)
    if connections[db].vendor != "postgresql" or settings.AUDIT_CHECKPOINT_EVERY:
        access_token = AccessToken(**token_columns)
        with transaction.atomic(using=db):
            issuance_queries.insert(access_token)
            issuance_queries.insert(issuance.token_record(access_token=access_token, issued=issued))
            audit.record(**event, using=db)
        return
    issuance_queries.insert_issued(
        token_columns, issuance.token_record_values(issued), audit.event_values(**event), using=db
    )


def _response(token: str, issued: issuance.Issued, *, issued_token_type: str = "") -> HttpResponse:
    """oauthlib's answer, byte for byte: the same members in the same order, the same headers."""
    body = {
        "access_token": token,
        "expires_in": issued.decision.lifetime_seconds,
        "token_type": "DPoP" if issued.cnf_jkt else "Bearer",
        "scope": " ".join(issued.decision.allowed),
    }
    if issued_token_type:
        body["issued_token_type"] = issued_token_type
    response = HttpResponse(json.dumps(body), content_type="application/json")
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    if issued.cnf_jkt and token_dpop.nonce_required():
        response["DPoP-Nonce"] = issue_nonce()  # RFC 9449 §8.2: keep the client's nonce fresh
    return response
