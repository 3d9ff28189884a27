"""The CIBA backchannel authentication endpoint (OpenID CIBA Core 1.0 §7, poll mode only).

An agent authenticates exactly as at the token endpoint and asks for one capability that needs approval,
for the user its ``login_hint`` names, with the exact call in ``authorization_details`` (RFC 9396).  The
answer is an ``auth_req_id`` (random, stored hashed) to poll the token endpoint with
(``urn:openid:params:grant-type:ciba``, :mod:`approvals.ciba`).  A thin edge: the request is written by
``action_request_create``, which also queues the approvers' emails.  Every refusal is RFC 6749 JSON and is
audited by the broker's endpoint wrapper (``token.refused`` with the reason).
"""

from __future__ import annotations

import math

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from approvals import links, services
from approvals.api.views import AUTH_FIELDS, authenticate_agent
from approvals.details import parse_details
from governance.errors import GovernanceError, InvalidInput
from governance.models import Agent, Capability, User
from governance.oauth import state
from governance.oauth.endpoint import oauth_endpoint, oauth_error

MAX_HINT = 150
MAX_KEY = 128
UNSUPPORTED_HINTS = ("login_hint_token", "id_token_hint", "user_code")
ONCE = (
    "scope",
    "login_hint",
    "binding_message",
    "authorization_details",
    "requested_expiry",
    "resource",
    *UNSUPPORTED_HINTS,
    *AUTH_FIELDS,
)


class Refused(Exception):
    """An OAuth error answer: its code, fixed description, status and the reason for the audit."""

    def __init__(self, error: str, description: str, *, reason: str, status: int = 400):
        super().__init__(reason)
        self.error, self.description, self.status, self.reason = error, description, status, reason


def _text(value: str, limit: int) -> bool:
    return 0 < len(value) <= limit and value.isprintable()


def _capability(agent: Agent, scope: str, resource: str | None) -> Capability:
    keys = scope.split(" ")
    if len(keys) != 1 or not _text(keys[0], MAX_KEY) or not keys[0].isascii():
        raise Refused("invalid_scope", "Ask for exactly one capability.", reason="not one capability")
    candidates = agent.ceiling.filter(key=keys[0]).select_related("tool_server")
    if resource is not None:
        if not _text(resource, 500):
            raise Refused("invalid_target", "The resource is not valid.", reason="malformed resource")
        candidates = candidates.filter(tool_server__audience=resource)
    found = list(candidates[:2])
    if len(found) != 1:
        raise Refused("invalid_scope", "The capability is not available.", reason="capability not in ceiling")
    if not found[0].requires_approval:
        raise Refused("invalid_scope", "This capability needs no approval.", reason="needs no approval")
    return found[0]


def _user(agent: Agent, login_hint: str) -> User:
    """The active user ``login_hint`` names in the agent's organization; anyone else looks unknown."""
    unknown = Refused("unknown_user_id", "The user is not known.", reason="unknown login_hint")
    if not _text(login_hint, MAX_HINT):
        raise unknown
    user = User.objects.filter(
        organization_id=agent.organization_id, username=login_hint, is_active=True
    ).first()
    if user is None:
        raise unknown
    return user


def _expiry(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise Refused("invalid_request", "requested_expiry is not valid.", reason="bad requested_expiry")
    return int(raw)


def _start(request: HttpRequest, agent: Agent) -> dict:
    post = request.POST
    if any(len(post.getlist(name)) > 1 for name in ONCE):
        raise Refused("invalid_request", "A parameter that may appear once was repeated.", reason="repeat")
    if any(name in post for name in UNSUPPORTED_HINTS):
        raise Refused("invalid_request", "Only login_hint is supported.", reason="unsupported hint")
    scope, login_hint, raw_details = (
        post.get("scope"),
        post.get("login_hint"),
        post.get("authorization_details"),
    )
    if not scope or login_hint is None or raw_details is None:
        raise Refused(
            "invalid_request",
            "scope, login_hint and authorization_details are required.",
            reason="missing parameter",
        )
    capability = _capability(agent, scope, post.get("resource"))
    state.current().capabilities = [capability.key]
    requested_expiry = _expiry(post.get("requested_expiry"))
    user = _user(agent, login_hint)
    state.current().user = user
    auth_req_id, auth_req_id_hash = links.new_secret()
    interval = settings.GATEHOUSE_APPROVAL_POLL_INTERVAL_SECONDS
    try:
        action_request = services.action_request_create(
            actor=agent,
            capability=capability,
            on_behalf_of=user,
            authorization_details=parse_details(raw_details),
            binding_message=post.get("binding_message", ""),
            requested_expiry=requested_expiry,
            auth_req_id_hash=auth_req_id_hash,
            poll_interval=interval,
        )
    except InvalidInput as exc:
        raise Refused("invalid_request", "The request is not valid.", reason=exc.message[:300]) from None
    except GovernanceError as exc:  # no grant for this user, too few approvers
        raise Refused(
            "access_denied", "The request was refused.", reason=exc.message[:300], status=403
        ) from None
    expires_in = math.ceil((action_request.expires_at - timezone.now()).total_seconds())
    return {"auth_req_id": auth_req_id, "expires_in": max(expires_in, 1), "interval": interval}


@csrf_exempt
@oauth_endpoint("backchannel", audit_refusals=True)
@never_cache
@require_POST
def backchannel_authentication(request: HttpRequest):
    current = state.current()
    agent = authenticate_agent(request, request.POST)
    if agent is None:
        current.reason = current.reason or "client authentication failed"
        return oauth_error("invalid_client", "Client authentication failed.", 401)
    current.agent, current.client_id = agent, agent.application.client_id
    try:
        answer = _start(request, agent)
    except Refused as refused:
        current.reason = refused.reason
        return oauth_error(refused.error, refused.description, refused.status)
    return JsonResponse(answer)
