"""Tool servers (audiences) and their capabilities."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.db import IntegrityError, transaction

from audit import services as audit
from audit.actions import Action
from governance.errors import InvalidInput
from governance.models import Capability, Organization, ToolServer
from governance.services._common import Principal, apply_changes, ensure_can_manage, integrity, validate

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
}


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
    with transaction.atomic():
        server.save()
        audit.record(
            action=Action.TOOL_SERVER_CREATED, actor=actor, organization=organization, target=server,
            parameters={"name": name, "audience": audience},
        )
    return server


def tool_server_update(*, actor: Principal, tool_server: ToolServer, **changes) -> ToolServer:
    ensure_can_manage(actor, tool_server.organization)
    if "audience" in changes:
        validate_audience(changes["audience"])
    diff = apply_changes(tool_server, changes, allowed={"name", "audience", "description"})
    if not diff:
        return tool_server
    validate(tool_server, exclude=["application"])
    with transaction.atomic():
        tool_server.save()
        audit.record(
            action=Action.TOOL_SERVER_UPDATED, actor=actor, target=tool_server, parameters={"changes": diff}
        )
    return tool_server


def _check_constraints(value) -> dict:
    """Parameter constraints: {param: {"equals": value | "$user"} | {"in": [...]} | {"max": n} | {"pattern": re}}."""
    if not isinstance(value, dict):
        raise InvalidInput("Constraints must be a mapping of parameter names to rules.")
    allowed_rules = {"equals", "in", "max", "min", "pattern", "max_length"}
    for param, rule in value.items():
        if not isinstance(rule, dict) or not rule or set(rule) - allowed_rules:
            raise InvalidInput(
                f"Constraint for {param!r} must use only: {', '.join(sorted(allowed_rules))}.",
                errors={"constraints": [f"{param}: unknown rule"]},
            )
    return value


def capability_create(*, actor: Principal, tool_server: ToolServer, key: str, **fields) -> Capability:
    ensure_can_manage(actor, tool_server.organization)
    unknown = set(fields) - CAPABILITY_FIELDS
    if unknown:
        raise InvalidInput(f"Unknown capability fields: {', '.join(sorted(unknown))}.")
    if "constraints" in fields:
        _check_constraints(fields["constraints"])
    if fields.get("requires_approval") and not fields.get("approvals_required"):
        fields["approvals_required"] = 1
    capability = Capability(tool_server=tool_server, key=key, **fields)
    validate(capability)
    with transaction.atomic():
        capability.save()
        audit.record(
            action=Action.CAPABILITY_CREATED, actor=actor, organization=tool_server.organization_id,
            target=capability, capabilities=[key],
            parameters={"tool_server": tool_server.audience, **fields},
        )
    return capability


def capability_update(*, actor: Principal, capability: Capability, **changes) -> Capability:
    ensure_can_manage(actor, capability.tool_server.organization)
    if "constraints" in changes:
        _check_constraints(changes["constraints"])
    if changes.get("requires_approval") is False:
        changes.setdefault("approvals_required", 0)
    elif changes.get("requires_approval") and not changes.get("approvals_required", capability.approvals_required):
        changes["approvals_required"] = 1
    diff = apply_changes(capability, changes, allowed=CAPABILITY_FIELDS)
    if not diff:
        return capability
    validate(capability)
    try:
        with transaction.atomic():
            capability.save()
            audit.record(
                action=Action.CAPABILITY_UPDATED, actor=actor, organization=capability.tool_server.organization_id,
                target=capability, capabilities=[capability.key], parameters={"changes": diff},
            )
    except IntegrityError as exc:
        raise integrity(exc) from exc
    return capability
