"""Per-request context for audit events: request id and client IP, set by middleware."""

from __future__ import annotations

import contextvars
import re
import uuid
from dataclasses import dataclass

from django.conf import settings

from audit.chain import canonical_ip

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


@dataclass(frozen=True)
class RequestContext:
    request_id: str = ""
    client_ip: str | None = None


_EMPTY = RequestContext()
_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "gatehouse_request_context", default=None
)


def current() -> RequestContext:
    """The request being served, or an empty context (commands, Celery tasks)."""
    return _current.get() or _EMPTY


def _valid_ip(value: str) -> str | None:
    try:
        return canonical_ip(value)
    except ValueError:
        return None


def client_ip(meta: dict) -> str | None:
    """REMOTE_ADDR, or the address the trusted proxies saw (never a client-chosen hop)."""
    hops = settings.GATEHOUSE_TRUSTED_PROXY_COUNT
    remote = _valid_ip(meta.get("REMOTE_ADDR", ""))
    if hops <= 0:
        return remote
    forwarded = [part for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < hops:
        return remote
    return _valid_ip(forwarded[-hops]) or remote


def request_id(meta: dict) -> str:
    incoming = meta.get("HTTP_X_REQUEST_ID", "")
    return incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        context = RequestContext(request_id=request_id(request.META), client_ip=client_ip(request.META))
        request.request_id = context.request_id
        token = _current.set(context)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response["X-Request-ID"] = context.request_id
        return response
