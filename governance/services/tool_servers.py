"""Tool servers (audiences) and their capabilities."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import get_application_model

from audit import services as audit
from audit.actions import Action
from governance.enforcement.constraints import constraint_problems, constraints_error_sentence
from governance.errors import InvalidInput, InvalidState
from governance.keys import validate_public_jwks
from governance.models import Capability, Organization, ToolServer, User
from governance.models.agents import TokenEndpointAuthMethod
from governance.services._common import (
    Principal,
    apply_changes,
    database_rules,
    ensure_can_manage,
    reverted_on_error,
    validate,
)
from governance.services.agents import check_client_id
from governance.text import text_problem

CAPABILITY_FIELDS = {
    "description",
    "risk_level",
    "requires_approval",
    "approvals_required",
    "requires_step_up",
    "max_token_lifetime",
    "rate_limit_per_minute",
    "daily_quota",
    "constraints",
    # The approval policy (docs/approvals.md).
    "approver_role",
    "on_behalf_of_may_approve",
    "exclude_agent_owner",
    "tolerate_denials",
    "approval_expiry_seconds",
}
# Many-to-many: set after the capability is saved.
CAPABILITY_APPROVERS = "named_approvers"


def _check_named_approvers(users, organization_id: int) -> list[User]:
    users = list(users)
    if any(u.organization_id != organization_id or not u.is_active for u in users):
        raise InvalidInput(
            "Named approvers must be active people of the capability's organization.",
            errors={"named_approvers": ["Not a person of this organization."]},
        )
    return users


def validate_audience(audience: str) -> str:
    """An RFC 8707 resource: an absolute URI without a fragment."""
    parts = urlsplit(audience)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment or "#" in audience:
        raise InvalidInput(
            "The audience must be an absolute http(s) URI without a fragment.",
            errors={"audience": ["absolute URI without fragment required"]},
        )
    return audience


def tool_server_create(
    *, actor: Principal, organization: Organization, name: str, audience: str, description: str = ""
) -> ToolServer:
    ensure_can_manage(actor, organization)
    server = ToolServer(
        organization=organization, name=name, audience=validate_audience(audience), description=description
    )
    validate(server, exclude=["application"])
    with database_rules(), transaction.atomic():
        server.save()
        audit.record(
            action=Action.TOOL_SERVER_CREATED,
            actor=actor,
            organization=organization,
            target=server,
            parameters={"name": name, "audience": audience},
        )
    return server


def tool_server_update(*, actor: Principal, tool_server: ToolServer, **changes) -> ToolServer:
    ensure_can_manage(actor, tool_server.organization)
    if "audience" in changes:
        validate_audience(changes["audience"])
    with reverted_on_error(tool_server, [f for f in changes if f in {"name", "audience", "description"}]):
        diff = apply_changes(tool_server, changes, allowed={"name", "audience", "description"})
        if not diff:
            return tool_server
        validate(tool_server, exclude=["application"])
        with database_rules(), transaction.atomic():
            tool_server.save()
            audit.record(
                action=Action.TOOL_SERVER_UPDATED,
                actor=actor,
                target=tool_server,
                parameters={"changes": diff},
            )
    return tool_server


# How a tool server authenticates at introspection and the decision API: its key (private_key_jwt, RFC 7523),
# or a secret issued by tool_server_issue_secret (shown once, stored hashed by django-oauth-toolkit).
TOOL_SERVER_AUTH_METHODS = (
    TokenEndpointAuthMethod.PRIVATE_KEY_JWT,
    TokenEndpointAuthMethod.CLIENT_SECRET_BASIC,
    TokenEndpointAuthMethod.CLIENT_SECRET_POST,
)
SECRET_METHODS = {TokenEndpointAuthMethod.CLIENT_SECRET_BASIC, TokenEndpointAuthMethod.CLIENT_SECRET_POST}
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def check_jwks_uri(jwks_uri: str) -> str:
    """Where a client publishes its public keys: https (plain http on a loopback host only with DEBUG)."""
    if not jwks_uri:
        return ""
    problem = text_problem(jwks_uri, max_length=500) if isinstance(jwks_uri, str) else "must be a string"
    parts = urlsplit(jwks_uri) if not problem and " " not in jwks_uri else None
    loopback_http = parts is not None and parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    if (
        problem
        or parts is None
        or not parts.netloc
        or parts.fragment
        or "@" in parts.netloc
        or not (parts.scheme == "https" or (loopback_http and settings.DEBUG))
    ):
        raise InvalidInput(
            "The JWKS URI must be an absolute https URI without a fragment or user information.",
            errors={"jwks_uri": ["absolute https URI required"]},
        )
    return jwks_uri


def tool_server_set_credentials(
    *,
    actor: Principal,
    tool_server: ToolServer,
    token_endpoint_auth_method: str,
    jwks: dict | str | None = None,
    jwks_uri: str = "",
    client_id: str | None = None,
) -> ToolServer:
    """Give a tool server the credentials it authenticates with at introspection and the decision API.

    ``private_key_jwt`` needs public keys (``jwks`` or ``jwks_uri``).  A secret method takes no keys and
    issues no secret here: :func:`tool_server_issue_secret` does, once.  The first call creates the tool
    server's OAuth client (with ``client_id`` when given).  Audited without key material; no change, nothing
    written.
    """
    ensure_can_manage(actor, tool_server.organization)
    method = token_endpoint_auth_method
    if method not in TOOL_SERVER_AUTH_METHODS:
        raise InvalidInput(
            f"A tool server authenticates with one of {', '.join(TOOL_SERVER_AUTH_METHODS)}.",
            errors={"token_endpoint_auth_method": ["unsupported"]},
        )
    jwks = validate_public_jwks(jwks)
    jwks_uri = check_jwks_uri(jwks_uri)
    if method == TokenEndpointAuthMethod.PRIVATE_KEY_JWT and not (jwks or jwks_uri):
        raise InvalidInput(
            "private_key_jwt needs the tool server's public keys (jwks or jwks_uri).",
            errors={"jwks": ["keys required"]},
        )
    if method in SECRET_METHODS and (jwks or jwks_uri):
        raise InvalidInput(
            f"{method} uses a secret; jwks and jwks_uri are for private_key_jwt.", errors={"jwks": ["unused"]}
        )
    if jwks and jwks_uri:
        raise InvalidInput("Give jwks or jwks_uri, not both.", errors={"jwks_uri": ["one of jwks, jwks_uri"]})
    application = tool_server.application
    if client_id is not None:
        check_client_id(client_id, application=application)
    had = {
        "token_endpoint_auth_method": tool_server.token_endpoint_auth_method if application else None,
        "key_ids": _key_ids(tool_server.jwks) if application else [],
        "jwks_uri": tool_server.jwks_uri if application else "",
        "client_id": application.client_id if application else None,
    }
    wants = {
        "token_endpoint_auth_method": method,
        "key_ids": _key_ids(jwks),
        "jwks_uri": jwks_uri,
        "client_id": client_id if client_id is not None else had["client_id"],
    }
    diff = {name: [had[name], value] for name, value in wants.items() if had[name] != value}
    if application is not None and jwks != (tool_server.jwks or {}):
        diff.setdefault("key_ids", [had["key_ids"], wants["key_ids"]])
    if not diff:
        return tool_server
    Application = get_application_model()
    fields = ["application", "jwks", "jwks_uri", "token_endpoint_auth_method"]
    with reverted_on_error(tool_server, fields), database_rules(), transaction.atomic():
        if application is None:
            application = Application(
                name=f"{tool_server.name} (tool server)"[:255],
                client_type=Application.CLIENT_CONFIDENTIAL,
                authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            )
        if client_id is not None:
            application.client_id = client_id
        if had["token_endpoint_auth_method"] in SECRET_METHODS and method not in SECRET_METHODS:
            # Leaving a secret method: the old secret must not work again if the method comes back.
            application.client_secret = generate_client_secret()
        application.save()
        tool_server.application = application
        tool_server.jwks, tool_server.jwks_uri = jwks, jwks_uri
        tool_server.token_endpoint_auth_method = method
        tool_server.save(update_fields=[*fields, "updated_at"])
        diff["client_id"] = [had["client_id"], application.client_id]
        audit.record(
            action=Action.TOOL_SERVER_CREDENTIALS_SET,
            actor=actor,
            organization=tool_server.organization,
            target=tool_server,
            parameters={"changes": diff},
        )
    return tool_server


def tool_server_issue_secret(*, actor: Principal, tool_server: ToolServer) -> str:
    """A new client secret for a tool server that authenticates with one; returned once, stored hashed.

    The previous secret stops working.  The audit event names the client, never the secret.
    """
    ensure_can_manage(actor, tool_server.organization)
    application = tool_server.application
    if application is None or tool_server.token_endpoint_auth_method not in SECRET_METHODS:
        raise InvalidState(
            "This tool server does not authenticate with a secret; set its credentials to"
            " client_secret_basic or client_secret_post first."
        )
    secret = generate_client_secret()
    with database_rules(), transaction.atomic():
        application.client_secret = secret
        application.save(update_fields=["client_secret", "updated"])
        audit.record(
            action=Action.TOOL_SERVER_SECRET_ISSUED,
            actor=actor,
            organization=tool_server.organization,
            target=tool_server,
            parameters={"client_id": application.client_id},
        )
    return secret


def _key_ids(jwks: dict) -> list[str]:
    return [key.get("kid", "?") for key in (jwks or {}).get("keys", [])]


def _check_constraints(value) -> dict:
    """The constraint language's rule (:mod:`governance.enforcement.constraints`), as a domain error."""
    problems = constraint_problems(value)
    if problems:
        messages = [f"{path}: {reason}" if path else reason for path, reason in problems]
        raise InvalidInput(constraints_error_sentence(problems), errors={"constraints": messages})
    return value


def capability_create(*, actor: Principal, tool_server: ToolServer, key: str, **fields) -> Capability:
    ensure_can_manage(actor, tool_server.organization)
    approvers = fields.pop(CAPABILITY_APPROVERS, None)
    approvers = None if approvers is None else _check_named_approvers(approvers, tool_server.organization_id)
    unknown = set(fields) - CAPABILITY_FIELDS
    if unknown:
        raise InvalidInput(f"Unknown capability fields: {', '.join(sorted(unknown))}.")
    if "constraints" in fields:
        _check_constraints(fields["constraints"])
    if fields.get("requires_approval") and not fields.get("approvals_required"):
        fields["approvals_required"] = 1
    capability = Capability(tool_server=tool_server, key=key, **fields)
    validate(capability)
    with database_rules(), transaction.atomic():
        capability.save()
        if approvers:
            capability.named_approvers.set(approvers)
            fields = {**fields, CAPABILITY_APPROVERS: sorted(u.username for u in approvers)}
        audit.record(
            action=Action.CAPABILITY_CREATED,
            actor=actor,
            organization=tool_server.organization_id,
            target=capability,
            capabilities=[key],
            parameters={"tool_server": tool_server.audience, **fields},
        )
    return capability


def capability_update(*, actor: Principal, capability: Capability, **changes) -> Capability:
    """Change a capability's settings (never its key or tool server).  No change, nothing written."""
    ensure_can_manage(actor, capability.tool_server.organization)
    if "constraints" in changes:
        _check_constraints(changes["constraints"])
    approvers = changes.pop(CAPABILITY_APPROVERS, None)
    approver_diff = None
    if approvers is not None:
        approvers = _check_named_approvers(approvers, capability.tool_server.organization_id)
        before = sorted(capability.named_approvers.values_list("username", flat=True))
        after = sorted(u.username for u in approvers)
        approver_diff = None if before == after else [before, after]
    if changes.get("requires_approval") is False:
        changes.setdefault("approvals_required", 0)
    elif changes.get("requires_approval") and not changes.get(
        "approvals_required", capability.approvals_required
    ):
        changes["approvals_required"] = 1
    with reverted_on_error(capability, [f for f in changes if f in CAPABILITY_FIELDS]):
        diff = apply_changes(capability, changes, allowed=CAPABILITY_FIELDS)
        if approver_diff is not None:
            diff[CAPABILITY_APPROVERS] = approver_diff
        if not diff:
            return capability
        validate(capability)
        with database_rules(), transaction.atomic():
            capability.save()
            if approver_diff is not None:
                capability.named_approvers.set(approvers)
            audit.record(
                action=Action.CAPABILITY_UPDATED,
                actor=actor,
                organization=capability.tool_server.organization_id,
                target=capability,
                capabilities=[capability.key],
                parameters={"changes": diff},
            )
    return capability
