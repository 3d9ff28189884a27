"""CIBA poll mode at the token endpoint (``urn:openid:params:grant-type:ciba``) and the bound token's use.

:class:`CibaGrant` is registered through ``GATEHOUSE_TOKEN_GRANT_TYPES`` (docs/oauth.md, "Adding a grant
type"): the client authenticates as at every grant; its own ``auth_req_id`` (another client's is unknown to
it) answers ``authorization_pending``, ``slow_down``, ``access_denied`` or ``expired_token`` until people
approve; then ONE access token through the broker's issuance decision, its ``authorization_details`` exactly
the approved call, living at most :data:`MAX_LIFETIME` seconds, no refresh token; ``invalid_grant`` after.

:func:`use_approved_token` is ``GATEHOUSE_APPROVAL_USE_HOOK``: the decision API calls it when an approved
call is allowed, and the request goes approved → used once (``action_request_mark_used``).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase

from approvals import links, selectors, services
from approvals.models import ActionRequest, RequestStatus
from governance.errors import InvalidState, NotPermitted
from governance.models import Agent
from governance.oauth import issuance, token_dpop
from governance.oauth.grants import body_values, check_proof, refused
from governance.oauth.params import REPEATED, SINGLE_VALUED
from governance.oauth.refusals import Refusal
from governance.oauth.state import current

GRANT_TYPE = "urn:openid:params:grant-type:ciba"
MAX_LIFETIME = 300

_USED = Refusal(
    "invalid_grant", "The auth_req_id is not valid.", reason="auth_req_id unknown, another's or used"
)


def _poll_refusal(action_request: ActionRequest) -> Refusal | None:
    """The answer while the request is not approved (None: approved and its token not yet issued)."""
    if action_request.token_issued_at is not None or action_request.status == RequestStatus.USED:
        return _USED
    if action_request.status == RequestStatus.EXPIRED or action_request.expires_at <= timezone.now():
        return Refusal("expired_token", "The request has expired.", reason="CIBA request expired")
    if not services.action_request_register_poll(action_request=action_request):
        return Refusal("slow_down", "Poll less often.", reason="CIBA polled faster than its interval")
    if action_request.status == RequestStatus.PENDING:
        return Refusal("authorization_pending", "Not yet approved.", reason="CIBA request pending")
    if action_request.status != RequestStatus.APPROVED:
        return Refusal("access_denied", "The request was not approved.", reason="CIBA request not approved")
    return None


class CibaGrant(GrantTypeBase):
    """The token endpoint's CIBA poll (OpenID CIBA Core 1.0 §10-11)."""

    def create_token_response(self, request, token_handler):
        headers = self._get_default_headers()
        try:
            action_request = self.validate_token_request(request)
            with transaction.atomic():
                try:
                    services.action_request_token_issued(
                        actor=current().agent, action_request=action_request, jti=current().issued.jti
                    )
                except (InvalidState, NotPermitted):
                    raise refused(_USED, request) from None
                token = token_handler.create_token(request, refresh_token=False)
                token.pop("refresh_token", None)
                self.request_validator.save_token(token, request)
        except errors.OAuth2Error as exc:
            headers.update(exc.headers)
            return headers, exc.json, exc.status_code
        return headers, json.dumps(token), 200

    def validate_token_request(self, request) -> ActionRequest:
        if request.grant_type != GRANT_TYPE:
            raise errors.UnsupportedGrantTypeError(request=request)
        state = current()
        if any(name in request.duplicate_params for name in (*SINGLE_VALUED, "auth_req_id")):
            raise refused(Refusal("invalid_request", REPEATED, reason="repeated parameter"), request)
        if not self.request_validator.authenticate_client(request):
            state.reason = state.reason or "client authentication failed"
            raise errors.InvalidClientError(request=request)
        request.client_id = request.client_id or request.client.client_id
        if not self.request_validator.validate_grant_type(
            request.client_id, request.grant_type, request.client, request
        ):
            raise errors.UnauthorizedClientError(request=request)
        try:
            agent = issuance.requesting_agent(request.client)
            state.agent = agent
            values = body_values(request, "auth_req_id")
            if len(values) != 1 or not links.well_formed(values[0]):
                raise Refusal(
                    "invalid_request", "auth_req_id is required.", reason="no or malformed auth_req_id"
                )
            action_request = selectors.ciba_request(agent, links.digest(values[0]))
            if action_request is None:
                raise _USED
            capability = action_request.capability
            state.user, state.capabilities = action_request.on_behalf_of, [capability.key]
            refusal = _poll_refusal(action_request)
            if refusal is not None:
                raise refusal
        except Refusal as refusal:
            raise refused(refusal, request) from None
        check_proof(request)  # the agent's DPoP rule applies here as at every grant
        try:
            issued = issuance.decide(
                agent=agent,
                grant_type=GRANT_TYPE,
                requested=[capability.key],
                resources=[capability.tool_server.audience],
                user=action_request.on_behalf_of,
                proof_jkt=token_dpop.bound_jkt(state),
            )
        except Refusal as refusal:
            raise refused(refusal, request) from None
        lifetime = min(issued.decision.lifetime_seconds, MAX_LIFETIME)
        issued.decision.lifetime_seconds = lifetime
        issued.expires_at = issued.issued_at + timedelta(seconds=lifetime)
        issued.authorization_details = action_request.authorization_details
        issued.audit_parameters["request"] = str(action_request.public_id)
        state.audience = issued.tool_server.audience
        state.issued = issued
        request.user = action_request.on_behalf_of
        request.scopes = issued.decision.allowed
        request.resource = [issued.tool_server.audience]
        return action_request


def use_approved_token(*, jti: str, agent: Any) -> bool | None:
    """``GATEHOUSE_APPROVAL_USE_HOOK``: mark the request behind token ``jti`` used (True), refuse a second
    use or a request that is no longer approved (False), or None when no request stands behind it."""
    action_request = selectors.request_for_token(jti)
    if action_request is None:
        return None
    if not isinstance(agent, Agent) or agent.pk != action_request.agent_id:
        return False
    try:
        services.action_request_mark_used(actor=agent, action_request=action_request)
    except (InvalidState, NotPermitted):
        return False
    return True
