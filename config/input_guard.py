"""``QueryStringGuardMiddleware``: a query string holding a NUL character is refused before any view.

PostgreSQL refuses NUL in text, so a NUL in a filter (the admin's search, the portal's lists, the
authorization request) would reach a query and answer 500.  This is the edge's one rule for query strings
(:func:`governance.text.has_nul`); OAuth endpoints answer RFC 6749 JSON, every other page a plain sentence.
Form bodies are checked where they are read: OAuth endpoints by
:func:`governance.oauth.endpoint.check_params`, Django forms by their fields
(``ProhibitNullCharactersValidator``).
"""

from __future__ import annotations

from django.http import HttpResponseBadRequest

from governance.oauth.endpoint import oauth_error
from governance.text import has_nul

OAUTH_PREFIXES = ("/oauth/", "/.well-known/")
SENTENCE = "The request contains a NUL character."


class QueryStringGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "%00" in request.META.get("QUERY_STRING", "") and any(
            has_nul(key, *values) for key, values in request.GET.lists()
        ):
            if request.path.startswith(OAUTH_PREFIXES):
                return oauth_error("invalid_request", SENTENCE)
            return HttpResponseBadRequest(SENTENCE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
