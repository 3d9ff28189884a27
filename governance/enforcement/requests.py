"""Reading decision requests: bounded JSON, the AuthZEN shape, mapped onto :class:`~checks.Call`.

Every refusal is a :class:`BadRequest` with one plain sentence naming the member at fault; nothing the
caller sent is repeated.  See docs/decision-api.md for the mapping.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from governance.enforcement.checks import Call
from governance.models.capabilities import CAPABILITY_KEY_PATTERN

MAX_BODY_BYTES = 64 * 1024
MAX_BATCH = 32
MAX_DEPTH = 16
MAX_NODES = 4096
MAX_STRING = 16 * 1024
MAX_CAPABILITY_KEY = 128
MAX_TOOL = 200
MAX_METHOD = 16
MAX_URL = 2048
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
_KEY = re.compile(CAPABILITY_KEY_PATTERN)


class BadRequest(Exception):
    """The body is not a decision request; ``message`` is a fixed sentence."""

    def __init__(self, message: str, *, too_large: bool = False):
        super().__init__(message)
        self.message = message
        self.too_large = too_large


def _refuse_constant(name: str) -> None:
    raise ValueError("NaN and Infinity are not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate member")
        result[key] = value
    return result


def _check_bounds(value: Any) -> None:
    """At most MAX_DEPTH levels and MAX_NODES values; strings at most MAX_STRING characters."""
    nodes = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            raise BadRequest("The body is nested too deeply or holds too many values.")
        if isinstance(item, dict):
            for key, member in item.items():
                if len(key) > MAX_STRING:
                    raise BadRequest("The body holds an over-long member name.")
                stack.append((member, depth + 1))
        elif isinstance(item, list):
            stack.extend((member, depth + 1) for member in item)
        elif isinstance(item, str) and len(item) > MAX_STRING:
            raise BadRequest("The body holds an over-long string.")


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object within the bounds, or :class:`BadRequest`."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"The body is larger than {MAX_BODY_BYTES // 1024} KiB.", too_large=True)
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("The body must be one JSON object (UTF-8, no repeated members).") from None
    if not isinstance(value, dict):
        raise BadRequest("The body must be one JSON object.")
    _check_bounds(value)
    return value


def _object(container: dict, name: str, path: str, *, required: bool) -> dict:
    value = container.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{path} is required and must be an object.")
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{path} must be an object.")
    return value


def _string(container: dict, name: str, path: str, *, limit: int, required: bool) -> str | None:
    value = container.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BadRequest(f"{path} must be a non-empty string of at most {limit} characters.")
    return value


@dataclass(frozen=True)
class Evaluation:
    """One evaluation's four parts (objects, already merged with a batch's defaults)."""

    subject: Any
    action: Any
    resource: Any
    context: Any


def to_call(evaluation: Evaluation, where: str = "") -> Call:
    """Map one AuthZEN evaluation onto a :class:`Call`; :class:`BadRequest` names the member at fault."""
    if not isinstance(evaluation.subject, dict):
        raise BadRequest(f"{where}subject is required and must be an object.")
    subject = evaluation.subject
    kind = subject.get("type", "agent")
    if kind != "agent":
        raise BadRequest(f'{where}subject.type must be "agent".')
    agent_id = _string(subject, "id", f"{where}subject.id", limit=255, required=False)
    properties = _object(subject, "properties", f"{where}subject.properties", required=True)
    token = _string(properties, "token", f"{where}subject.properties.token", limit=8192, required=True)
    dpop = _string(properties, "dpop", f"{where}subject.properties.dpop", limit=8192, required=False)

    if not isinstance(evaluation.action, dict):
        raise BadRequest(f"{where}action is required and must be an object.")
    key = _string(evaluation.action, "name", f"{where}action.name", limit=MAX_CAPABILITY_KEY, required=True)
    if not _KEY.match(key):
        raise BadRequest(f"{where}action.name must be a capability key (dotted lowercase words).")

    resource = evaluation.resource if evaluation.resource is not None else {}
    if not isinstance(resource, dict):
        raise BadRequest(f"{where}resource must be an object.")
    tool = _string(resource, "id", f"{where}resource.id", limit=MAX_TOOL, required=False) or ""
    resource_properties = _object(resource, "properties", f"{where}resource.properties", required=False)
    parameters = _object(
        resource_properties, "parameters", f"{where}resource.properties.parameters", required=False
    )

    context = evaluation.context if evaluation.context is not None else {}
    if not isinstance(context, dict):
        raise BadRequest(f"{where}context must be an object.")
    http = _object(context, "http", f"{where}context.http", required=False)
    method = _string(http, "method", f"{where}context.http.method", limit=MAX_METHOD, required=False)
    url = _string(http, "url", f"{where}context.http.url", limit=MAX_URL, required=False)
    return Call(
        token=token,
        capability_key=key,
        tool=tool,
        parameters=parameters,
        dpop=dpop,
        http_method=method,
        http_url=url,
        agent_id=agent_id,
    )


def single(body: dict[str, Any]) -> Call:
    return to_call(
        Evaluation(body.get("subject"), body.get("action"), body.get("resource"), body.get("context"))
    )


def batch(body: dict[str, Any]) -> tuple[list[Call], str]:
    """The calls of an ``evaluations`` body (each item's members replace the top-level defaults) and the
    ``evaluations_semantic``."""
    items = body.get("evaluations")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        raise BadRequest(f"evaluations must be a list of 1 to {MAX_BATCH} objects.")
    options = _object(body, "options", "options", required=False)
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in SEMANTICS:
        raise BadRequest(f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}.")
    calls = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"evaluations[{index}] must be an object.")
        merged = Evaluation(
            *(item.get(part, body.get(part)) for part in ("subject", "action", "resource", "context"))
        )
        calls.append(to_call(merged, where=f"evaluations[{index}]."))
    return calls, semantic
