"""Tool servers (audiences) and their capabilities."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.db import transaction

from audit import services as audit
from audit.actions import Action
from governance.errors import InvalidInput
from governance.models import Capability, Organization, ToolServer
from governance.services._common import (
    Principal,
    apply_changes,
    database_rules,
    ensure_can_manage,
    reverted_on_error,
    validate,
)

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
    with database_rules(), transaction.atomic():
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
    with reverted_on_error(tool_server, [f for f in changes if f in {"name", "audience", "description"}]):
        diff = apply_changes(tool_server, changes, allowed={"name", "audience", "description"})
        if not diff:
            return tool_server
        validate(tool_server, exclude=["application"])
        with database_rules(), transaction.atomic():
            tool_server.save()
            audit.record(
                action=Action.TOOL_SERVER_UPDATED, actor=actor, target=tool_server,
                parameters={"changes": diff},
            )
    return tool_server


CONSTRAINT_RULES = {"equals", "in", "max", "min", "pattern", "max_length"}
PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_SCALAR = (str, int, float, bool)


def _operand_ok(rule: str, operand) -> bool:
    if rule == "equals":
        return isinstance(operand, _SCALAR) and not (isinstance(operand, str) and len(operand) > 200)
    if rule == "in":
        return (
            isinstance(operand, list) and 0 < len(operand) <= 100
            and all(_operand_ok("equals", item) for item in operand)
        )
    if rule in ("max", "min"):
        return isinstance(operand, int | float) and not isinstance(operand, bool)
    if rule == "max_length":
        return isinstance(operand, int) and not isinstance(operand, bool) and operand >= 0
    if not isinstance(operand, str) or len(operand) > 200:  # pattern
        return False
    try:
        re.compile(operand)
    except re.error:
        return False
    return True


def _check_constraints(value) -> dict:
    """Parameter constraints: {param: {rule: operand}}, rules as in CONSTRAINT_RULES; "$user" is the user."""
    if not isinstance(value, dict) or len(value) > 32:
        raise InvalidInput("Constraints must be a mapping of at most 32 parameter names to rules.")
    for param, rule in value.items():
        if not isinstance(param, str) or not PARAMETER.fullmatch(param):
            raise InvalidInput("A constraint names an unusable parameter.", errors={"constraints": ["name"]})
        if not isinstance(rule, dict) or not rule or set(rule) - CONSTRAINT_RULES:
            raise InvalidInput(
                f"Constraint for {param!r} must use only: {', '.join(sorted(CONSTRAINT_RULES))}.",
                errors={"constraints": [f"{param}: unknown rule"]},
            )
        bad = sorted(name for name, operand in rule.items() if not _operand_ok(name, operand))
        if bad:
            raise InvalidInput(
                f"Constraint for {param!r} has an unusable operand for {', '.join(bad)}.",
                errors={"constraints": [f"{param}: bad operand"]},
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
    with database_rules(), transaction.atomic():
        capability.save()
        audit.record(
            action=Action.CAPABILITY_CREATED, actor=actor, organization=tool_server.organization_id,
            target=capability, capabilities=[key],
            parameters={"tool_server": tool_server.audience, **fields},
        )
    return capability


def capability_update(*, actor: Principal, capability: Capability, **changes) -> Capability:
    """Change a capability's settings (never its key or tool server).  No change, nothing written."""
    ensure_can_manage(actor, capability.tool_server.organization)
    if "constraints" in changes:
        _check_constraints(changes["constraints"])
    if changes.get("requires_approval") is False:
        changes.setdefault("approvals_required", 0)
    elif changes.get("requires_approval") and not changes.get(
        "approvals_required", capability.approvals_required
    ):
        changes["approvals_required"] = 1
    with reverted_on_error(capability, [f for f in changes if f in CAPABILITY_FIELDS]):
        diff = apply_changes(capability, changes, allowed=CAPABILITY_FIELDS)
        if not diff:
            return capability
        validate(capability)
        with database_rules(), transaction.atomic():
            capability.save()
            audit.record(
                action=Action.CAPABILITY_UPDATED, actor=actor,
                organization=capability.tool_server.organization_id,
                target=capability, capabilities=[capability.key], parameters={"changes": diff},
            )
    return capability
