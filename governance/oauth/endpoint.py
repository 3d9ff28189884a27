"""The HTTP edge of every OAuth endpoint: bounded input, RFC 6749 §5.2 JSON errors, never an HTML 500, and
the request's refusal audited exactly once.

:func:`oauth_endpoint` wraps a view: it opens the request's :class:`~governance.oauth.state.BrokerRequest`,
refuses out-of-bounds parameters (:mod:`governance.oauth.params`) before anything reads them, and at the end
records the refusal: the event a rule named (an elevation attempt, a refused DPoP proof, a step-up...) or,
for endpoints that audit refusals, a plain ``token.refused`` built from what the state learnt.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid

from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse, JsonResponse

from audit import context
from audit.actions import Action
from governance.conf import gatehouse_settings
from governance.oauth import params, refusals, state
from governance.oauth.refusals import Refusal, RefusalEvent

log = logging.getLogger(__name__)


def oauth_error(error: str, description: str, status: int = 400, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def refusal_response(refusal: Refusal) -> JsonResponse:
    """The JSON answer for a rule's refusal (as oauthlib would write it: error, description, members)."""
    body = {"error": refusal.error, "error_description": refusal.description, **refusal.members}
    response = JsonResponse(body, status=refusal.status)
    response["Cache-Control"] = "no-store"
    for name, value in refusal.headers.items():
        response[name] = value
    return response


def check_params(request) -> JsonResponse | None:
    """The request's body read within Django's limits (``DATA_UPLOAD_MAX_MEMORY_SIZE``: 413,
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS``: 400) and its parameters within :mod:`~governance.oauth.params`'
    bounds, or the JSON error that refuses it: Django's own answer would be an HTML page."""
    try:
        request.body  # noqa: B018 -- read once here, so a view reading it later cannot raise
        form = request.POST
    except RequestDataTooBig:
        return oauth_error("invalid_request", "The request body is too large.", 413)
    except (TooManyFieldsSent, TooManyFilesSent):
        return oauth_error("invalid_request", "The request has too many parameters.")
    sentence = params.problem(form.lists())
    return None if sentence is None else oauth_error("invalid_request", sentence)


def _as_json_error(response: HttpResponse) -> HttpResponse:
    """A DOT/Django failure that is not JSON yet (405, 404, an HTML page) becomes an OAuth error body."""
    if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
        return response
    if response.status_code == 405:
        return oauth_error(
            "invalid_request",
            "This endpoint does not answer that HTTP method.",
            405,
            {"Allow": response.get("Allow", "POST")},
        )
    if response.status_code >= 500:
        return oauth_error("server_error", "The server could not complete the request.", 500)
    return oauth_error("invalid_request", "The request was refused.", response.status_code)


def oauth_endpoint(name: str, *, audit_refusals: bool = False):
    """Wrap a view function: request state for the audit, bounded input, JSON errors, never an HTML 500."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            token = state.begin(name)
            try:
                if request.method == "POST":
                    refused = check_params(request)
                    if refused is not None:
                        return refused
                try:
                    response = view(request, *args, **kwargs)
                except Exception:
                    log.exception("OAuth endpoint %s failed", name)
                    return oauth_error("server_error", "The server could not complete the request.", 500)
                _record_refusal(name, request, response, generic=audit_refusals)
                return _as_json_error(response)
            finally:
                state.end(token)

        return wrapped

    return decorate


def _record_refusal(name: str, request, response, *, generic: bool) -> None:
    """The request's one refusal event: the one a rule named, else (``generic``) ``token.refused``."""
    current = state.current()
    event = current.refusal
    if event is None:
        if not generic or response.status_code < 400:
            return
        event = _token_refused(name, request, response, current)
    if event.agent is None and event.tool_server is None:
        event = _within_budget(name, event)
        if event is None:
            return
    try:
        refusals.record(event)
    except Exception:  # the refusal stands; the failure to audit it is logged
        log.exception("a token refusal could not be audited")


# Changed by :func:`forget_refusal_counts` (tests) so each test starts with a fresh budget.
_generation = uuid.uuid4().hex[:8]


def forget_refusal_counts() -> None:
    global _generation
    _generation = uuid.uuid4().hex[:8]


def _within_budget(name: str, event: RefusalEvent) -> RefusalEvent | None:
    """An unauthenticated refusal as it is recorded: itself while its address has refusals left this minute
    (``REFUSAL_EVENTS_PER_MINUTE``); beyond, counted in the cache, and only at the 2nd, 4th, 8th... multiple
    of the budget one ``token.refusals_summarised`` event carrying the window's count so far (None: counted,
    not recorded).  So a flood writes a logarithmic number of events and the log still shows its size."""
    budget = gatehouse_settings.REFUSAL_EVENTS_PER_MINUTE
    address = context.current().client_ip or "unknown"
    window = int(time.time() // 60)
    key = f"gatehouse:refusals:{_generation}:{address}:{window}"
    try:
        cache.add(key, 0, timeout=120)
        count = cache.incr(key)
    except Exception:  # no cache: record every refusal rather than lose one
        log.exception("refusals could not be counted")
        return event
    if count <= budget:
        return event
    multiple, remainder = divmod(count, budget)
    if remainder or multiple & (multiple - 1):
        return None
    return RefusalEvent(
        action=Action.TOKEN_REFUSALS_SUMMARISED,
        error=event.error,
        parameters={
            "endpoint": name,
            "refusals_this_minute": count,
            "recorded_individually": budget,
            "window_start": window * 60,
        },
    )


def _token_refused(name: str, request, response, current: state.BrokerRequest) -> RefusalEvent:
    try:
        error = json.loads(response.content).get("error", "")
    except (ValueError, AttributeError):
        error = "invalid_request"
    parameters = {
        "endpoint": name,
        "grant_type": request.POST.get("grant_type", "")[:64],
        "reason": current.reason,
    }
    if current.client_id:
        parameters["client_id"] = current.client_id  # bounded and sanitised by refusals.record
    return RefusalEvent(
        action=Action.TOKEN_REFUSED,
        error=str(error)[:64],
        agent=current.agent,
        tool_server=current.tool_server,
        user=current.user,
        audience=current.audience,
        capabilities=current.capabilities,
        parameters=parameters,
    )
