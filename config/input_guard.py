"""``QueryStringGuardMiddleware``: a query string holding a NUL character is refused before any view.

PostgreSQL refuses NUL in text, so a NUL in a filter that reaches a query unchecked (the admin's search and
list filters, the authorization request) would answer 500.  This is the edge's one rule for those query
strings (:func:`governance.text.has_nul`): OAuth endpoints answer RFC 6749 JSON, the admin a plain sentence.
Portal pages and APIs read their filters through Django forms and FilterSets, whose fields refuse NUL
(``ProhibitNullCharactersValidator``) and answer in the page's or the API's own error shape; form bodies at
the OAuth endpoints are checked by :func:`governance.oauth.endpoint.check_params`.
"""

from __future__ import annotations

from django.http import HttpResponseBadRequest

from governance.oauth.endpoint import oauth_error
from governance.text import has_nul

OAUTH_PREFIXES = ("/oauth/", "/.well-known/")
GUARDED_PREFIXES = (*OAUTH_PREFIXES, "/admin/")
SENTENCE = "The request contains a NUL character."


class QueryStringGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if (
            request.path.startswith(GUARDED_PREFIXES)
            and "%00" in request.META.get("QUERY_STRING", "")
            and any(has_nul(key, *values) for key, values in request.GET.lists())
        ):
            if request.path.startswith(OAUTH_PREFIXES):
                return oauth_error("invalid_request", SENTENCE)
            return HttpResponseBadRequest(SENTENCE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
