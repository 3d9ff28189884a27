"""Django REST framework: an authentication class (offline token and DPoP checks) and a permission class
(the decision API, once per request).

A view names its guard and capability::

    class RecordView(APIView):
        authentication_classes = [GatehouseAuthentication]
        permission_classes = [GatehouseDecision]
        gatehouse_guard = GUARD                     # a ToolServerGuard built once at import
        gatehouse_capability = "records.read_own"   # or {"GET": "...", "POST": "..."}

        def gatehouse_parameters(self, request):    # optional: the call's parameters (default: query)
            return {"patient_id": request.query_params.get("patient_id")}

``request.user`` is a :class:`TokenUser` and ``request.auth`` the :class:`~gatehouse_toolkit.Caller`.
Refusals answer with the challenge's status, ``WWW-Authenticate`` and ``Retry-After``.  This module imports
DRF and Django; the rest of the toolkit never imports it.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from gatehouse_toolkit.challenges import Challenge
from gatehouse_toolkit.guard import Caller, Refused, ToolServerGuard


class GatehouseRefusal(exceptions.APIException):
    """A refusal carrying its challenge; DRF's handler copies ``auth_header`` and ``wait`` into headers."""

    def __init__(self, challenge: Challenge):
        super().__init__(detail=challenge.body(), code=challenge.error)
        self.status_code = challenge.status
        self.challenge = challenge
        self.auth_header = challenge.headers.get("WWW-Authenticate")
        retry_after = challenge.headers.get("Retry-After")
        self.wait = int(retry_after) if retry_after else None


class TokenUser:
    """The agent acting for ``subject`` (``sub``), as ``request.user``."""

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, caller: Caller):
        self.subject = caller.token.subject
        self.client_id = caller.token.client_id
        self.scopes = caller.token.scopes

    def __str__(self) -> str:
        return f"{self.client_id} for {self.subject}"


def _guard(view: Any) -> ToolServerGuard:
    guard = getattr(view, "gatehouse_guard", None)
    if not isinstance(guard, ToolServerGuard):
        raise TypeError("a view using the Gatehouse DRF classes needs a gatehouse_guard (ToolServerGuard)")
    return guard


class GatehouseAuthentication(BaseAuthentication):
    def authenticate(self, request):
        guard = _guard(request.parser_context["view"])
        header = request.META.get("HTTP_AUTHORIZATION")
        if not header:
            return None  # DRF answers 401 with authenticate_header()
        dpop = [request.META["HTTP_DPOP"]] if "HTTP_DPOP" in request.META else []
        try:
            found = guard.authenticate(
                authorization=header,
                dpop=dpop,
                method=request.method,
                url=guard.settings.url_for(request.path),
            )
        except Refused as refused:
            raise GatehouseRefusal(refused.challenge) from None
        return TokenUser(found), found

    def authenticate_header(self, request) -> str:
        guard = _guard(request.parser_context["view"])
        return guard.challenges.missing_token().headers["WWW-Authenticate"]


class GatehouseDecision(BasePermission):
    """Allows a request only when Gatehouse's decision API allows this call."""

    def has_permission(self, request, view) -> bool:
        found = request.auth
        if not isinstance(found, Caller):
            return False
        guard = _guard(view)
        capability = view.gatehouse_capability
        if isinstance(capability, dict):
            capability = capability.get(request.method)
            if capability is None:
                raise exceptions.MethodNotAllowed(request.method)
        if hasattr(view, "gatehouse_parameters"):
            parameters = view.gatehouse_parameters(request)
        else:
            parameters = {name: request.query_params.get(name) for name in request.query_params}
        tool = getattr(view, "gatehouse_tool", None) or type(view).__name__
        try:
            guard.authorize(found, capability=capability, tool=tool, parameters=parameters)
        except Refused as refused:
            raise GatehouseRefusal(refused.challenge) from None
        return True
