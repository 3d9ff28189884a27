"""OAuth endpoints and discovery documents, mounted at the site root."""

from django.urls import path

from governance.oauth import introspection, metadata, registration, views

app_name = "oauth"

# The consent page swaps its subclass in here.
from governance.oauth.consent import ConsentView as AuthorizationView  # noqa: E402

urlpatterns = [
    path(".well-known/oauth-authorization-server", metadata.authorization_server_metadata, name="metadata"),
    path("oauth/authorize/", AuthorizationView.as_view(), name="authorize"),
    path("oauth/token/", views.token, name="token"),
    path("oauth/introspect/", introspection.introspect, name="introspect"),
    path("oauth/revoke/", views.revoke, name="revoke"),
    path("oauth/register/", registration.register, name="register"),
    path("oauth/jwks.json", metadata.jwks, name="jwks"),
]
