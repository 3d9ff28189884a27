"""Content Security Policy for every response: no inline script or style, no framing, forms post home.

Pages load scripts and styles only from this origin (``static/``), so an injected ``<script>`` or
``style=`` attribute does nothing.  One exception is stated where it happens: the OAuth consent page posts
to itself and is then redirected to the agent's registered redirect URI, which browsers check against
``form-action``; that page adds exactly that origin with :func:`allow_form_action`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"

DIRECTIVES: dict[str, tuple[str, ...]] = {
    "default-src": ("'self'",),
    "script-src": ("'self'",),
    "style-src": ("'self'",),
    "img-src": ("'self'", "data:"),
    "font-src": ("'self'",),
    "connect-src": ("'self'",),
    "object-src": ("'none'",),
    "frame-ancestors": ("'none'",),
    "form-action": ("'self'",),
    "base-uri": ("'none'",),
}


def policy(*, form_action: Iterable[str] = ()) -> str:
    """The header value; ``form_action`` adds sources (origins) to the ``form-action`` directive."""
    directives = dict(DIRECTIVES)
    extra = tuple(source for source in form_action if source and source not in directives["form-action"])
    directives["form-action"] = directives["form-action"] + extra
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def _origin(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def allow_form_action(response: HttpResponse, redirect_uri: str | None) -> HttpResponse:
    """Let a form on this page end in a redirect to ``redirect_uri``'s origin (already validated)."""
    origin = _origin(redirect_uri or "")
    response[HEADER] = policy(form_action=[origin] if origin else [])
    return response


class ContentSecurityPolicyMiddleware:
    """Adds the policy to every response that does not already carry one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.header_value = policy()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if HEADER not in response:
            response[HEADER] = self.header_value
        return response
