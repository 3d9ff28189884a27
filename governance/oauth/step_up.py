"""Step-up in the token broker: which person-authentication a code, token or refresh family carries, and the
checks at the authorization endpoint and the token endpoint (RFC 9470, with OpenID-style ``acr_values`` /
``max_age`` at the authorization endpoint).

The levels themselves live in :mod:`governance.auth_levels`.  Here:

* the authorization endpoint's requirement: ``strongest(required_for(capabilities), from_request(...))``;
  :func:`session_meets` also honours a short grace after a prompt this very flow caused, so a client asking
  ``max_age=0`` gets one fresh authentication instead of a loop;
* the authorization code stores the session's ``acr`` and ``auth_time`` (beside DPoP's ``dpop_jkt`` in DOT's
  ``Grant.claims``); the first refresh token of a family remembers them (:class:`RefreshTokenAuthentication`),
  so a refresh keeps the original values and never counts as a new authentication;
* :func:`enforce` at the token endpoint (code, refresh, token exchange): a capability marked
  ``requires_step_up`` needs the MFA level; refresh and exchange also need ``auth_time`` within
  ``GATEHOUSE_STEP_UP_MAX_AGE_SECONDS``.  Otherwise ``insufficient_user_authentication`` (HTTP 400 JSON with
  ``acr_values`` and ``max_age``), audited ``step_up.required``.  Without a user (client credentials) such a
  capability is never issued.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from audit.actions import Action
from governance import auth_levels
from governance.models import RefreshTokenAuthentication
from governance.oauth.refusals import Refusal, RefusalEvent

ERROR = "insufficient_user_authentication"
# Set on the oauthlib request by the consent view (DOT's credentials become request attributes).
CREDENTIAL = "gatehouse_user_authentication"
# Grant.claims keys (dpop_jkt is DPoP's).
CODE_ACR, CODE_AUTH_TIME = "acr", "auth_time"

# After a prompt caused by one authorization flow, a fresh authentication satisfies that flow's max_age for
# this long (reading the consent page takes time; max_age=0 would otherwise never be met on return).
REAUTH_GRACE_SECONDS = 120
SESSION_PROMPTS = "gatehouse_step_up_prompts"
MAX_REMEMBERED_PROMPTS = 8


@dataclass(frozen=True)
class UserAuthentication:
    """How and when the person behind a code or token authenticated ("" / None: not known)."""

    acr: str = ""
    auth_time: datetime | None = None

    @property
    def epoch(self) -> int | None:
        return None if self.auth_time is None else int(self.auth_time.timestamp())

    @property
    def amr(self) -> list[str]:
        return list(auth_levels.AMR.get(self.acr, []))

    @classmethod
    def from_claims(cls, claims: Any) -> UserAuthentication:
        if not isinstance(claims, dict):
            return cls()
        acr, when = claims.get(CODE_ACR), claims.get(CODE_AUTH_TIME)
        if not isinstance(acr, str) or not auth_levels.is_known(acr):
            return cls()
        if not isinstance(when, int) or isinstance(when, bool):
            return cls()
        return cls(acr=acr, auth_time=datetime.fromtimestamp(when, tz=UTC))


# --- the authorization endpoint ------------------------------------------------------------------------


def authorization_requirement(
    capabilities: Iterable[Any], *, acr_values: str | None, max_age: str | None
) -> auth_levels.Requirement:
    """What the code for these capabilities needs; a malformed ``max_age`` raises ValueError."""
    return auth_levels.strongest(
        auth_levels.required_for(capabilities), auth_levels.from_request(acr_values, max_age)
    )


def demands_anything(requirement: auth_levels.Requirement) -> bool:
    """A signed-in session meets the password level with no age limit (even one recorded before levels)."""
    return requirement != auth_levels.Requirement(auth_levels.ACR_PASSWORD, None)


def flow_key(client_id: str, code_challenge: str) -> str:
    """Names one authorization flow in the session (PKCE makes the challenge unique per flow)."""
    return hashlib.sha256(f"{client_id}\n{code_challenge}".encode()).hexdigest()[:32]


def session_meets(request, requirement: auth_levels.Requirement, *, flow: str) -> bool:
    if not demands_anything(requirement):
        return bool(request.user.is_authenticated)
    if auth_levels.satisfies(request, acr=requirement.acr, max_age=requirement.max_age):
        return True
    if requirement.max_age is None:
        return False  # the level is short: no grace helps
    prompted = request.session.get(SESSION_PROMPTS, {}).get(flow)
    when = auth_levels.auth_time(request)
    if not isinstance(prompted, int) or when is None or when < prompted:
        return False  # no authentication since this flow asked for one
    return auth_levels.satisfies(
        request, acr=requirement.acr, max_age=max(requirement.max_age, REAUTH_GRACE_SECONDS)
    )


def remember_prompt(request, *, flow: str) -> None:
    prompts = dict(request.session.get(SESSION_PROMPTS, {}))
    prompts.pop(flow, None)
    prompts[flow] = auth_levels.now()
    request.session[SESSION_PROMPTS] = dict(list(prompts.items())[-MAX_REMEMBERED_PROMPTS:])


def forget_prompt(request, *, flow: str) -> None:
    prompts = dict(request.session.get(SESSION_PROMPTS, {}))
    if prompts.pop(flow, None) is not None:
        request.session[SESSION_PROMPTS] = prompts


AUTHORIZE_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "dpop_jkt",
    "acr_values",
    "max_age",
)


def authorize_url(path: str, data: dict) -> str:
    """The GET authorization URL of a posted consent form: after re-authenticating, all is checked again."""
    params = [(name, data[name]) for name in AUTHORIZE_PARAMETERS if data.get(name)]
    params += [("resource", value) for value in (data.get("resource") or "").split()]
    return f"{path}?{urlencode(params)}"


def code_claims(session_claims: Any) -> dict:
    """``acr`` and ``auth_time`` of the session that allowed (the consent view's credential), for the code."""
    known = UserAuthentication.from_claims(session_claims)
    if not known.acr:
        return {}
    return {CODE_ACR: known.acr, CODE_AUTH_TIME: known.epoch}


# --- what a token request carries ----------------------------------------------------------------------


def carried(grant_type: str, *, code_claims: Any = None, refresh_family: Any = None) -> UserAuthentication:
    """The person's authentication behind a code (its claims) or a refresh token (its family)."""
    if grant_type == "authorization_code":
        return UserAuthentication.from_claims(code_claims)
    if grant_type == "refresh_token":
        family = refresh_family
        record = RefreshTokenAuthentication.objects.filter(token_family=family).first() if family else None
        if record is not None:
            return UserAuthentication(acr=record.acr, auth_time=record.auth_time)
    return UserAuthentication()


def remember_family(*, refresh_token: Any, previous: Any, issued: Any) -> None:
    """The first refresh token of a family keeps the authentication its code carried."""
    if previous is not None or issued is None or not issued.acr or issued.auth_time is None:
        return
    if refresh_token.token_family is None:
        return
    RefreshTokenAuthentication.objects.get_or_create(
        token_family=refresh_token.token_family,
        defaults={"acr": issued.acr, "auth_time": issued.auth_time},
    )


def enforce(issued: Any, *, authentication: UserAuthentication, check_age: bool) -> None:
    """Refuse the token unless ``authentication`` meets its capabilities; otherwise put it on ``issued``.

    A refusal is ``insufficient_user_authentication`` (RFC 9470) naming ``acr_values`` and ``max_age``, or
    ``invalid_scope`` when there is no person to step up; either is described by one ``step_up.required``.

    ``check_age``: refresh and exchange also need a recent ``auth_time`` (the authorization endpoint judged
    the age of a code's authentication when the person allowed, and a code lives a minute).
    """
    capabilities = [grant.capability for grant in issued.decision.grants]
    requirement = auth_levels.required_for(capabilities)
    if requirement.acr == auth_levels.ACR_MFA:
        needed = [c.key for c in capabilities if c.requires_step_up]
        if issued.user is None:
            raise Refusal(
                "invalid_scope",
                "A capability that needs a person's second factor is never issued without one.",
                reason="no user to step up",
                event=_event(issued, requirement, authentication, needed, reason="no user to step up"),
            )
        if not auth_levels.meets(
            acr=authentication.acr or None,
            auth_time=authentication.epoch,
            required_acr=requirement.acr,
            max_age=requirement.max_age if check_age else None,
        ):
            reason = (
                "the user's authentication is below the required level"
                if auth_levels.rank(authentication.acr or None) < auth_levels.rank(requirement.acr)
                else "the user's authentication is too old"
            )
            members = {"acr_values": requirement.acr}
            if requirement.max_age is not None:
                members["max_age"] = requirement.max_age
            raise Refusal(
                ERROR,
                "A more recent or stronger authentication of the user is required.",
                reason=reason,
                members=members,
                event=_event(issued, requirement, authentication, needed, reason=reason),
            )
    issued.acr = authentication.acr
    issued.auth_time = authentication.auth_time
    if authentication.acr:
        issued.audit_parameters = {
            **issued.audit_parameters,
            "acr": authentication.acr,
            "auth_time": authentication.epoch,
        }


def _event(issued, requirement, authentication: UserAuthentication, needed, *, reason: str) -> RefusalEvent:
    age = None
    if authentication.epoch is not None:
        age = auth_levels.now() - authentication.epoch
    return RefusalEvent(
        action=Action.STEP_UP_REQUIRED,
        error=ERROR,
        agent=issued.agent,
        user=issued.user,
        audience=issued.tool_server.audience,
        capabilities=issued.decision.allowed,
        parameters={
            "endpoint": "token",
            "grant_type": str(issued.grant_type)[:64],
            "reason": reason,
            "requires_step_up": needed,
            "acr": requirement.acr,
            "max_age": requirement.max_age,
            "user_acr": authentication.acr,
            "auth_age_seconds": age,
        },
    )
