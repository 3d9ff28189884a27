"""What a tool server tells the toolkit: who issues its tokens, what it is, how it calls Gatehouse."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Asymmetric algorithms accepted for access tokens (Gatehouse signs with ES256 or EdDSA) and DPoP proofs.
DEFAULT_TOKEN_ALGS: tuple[str, ...] = ("ES256", "ES384", "EdDSA", "RS256", "PS256")
DEFAULT_DPOP_ALGS: tuple[str, ...] = ("ES256", "ES384", "EdDSA", "RS256", "PS256")


def _absolute(url: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment or "#" in url:
        raise ValueError(f"{name} must be an absolute http(s) URL without a fragment")
    return url


def metadata_url_for(resource: str) -> str:
    """RFC 9728 §3.1: the well-known path goes between the host and the resource's path."""
    parts = urlsplit(resource)
    path = "" if parts.path in ("", "/") else parts.path
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{path}"


@dataclass(frozen=True)
class ToolServerSettings:
    """One tool server's configuration.

    ``resource`` is the tool server's audience exactly as registered in Gatehouse (the RFC 8707 resource its
    tokens carry in ``aud``).  ``public_origin`` is the scheme and host clients reach it at (default: the
    resource's); DPoP ``htu`` is checked against ``public_origin`` + the request path, never against a Host
    header taken on trust.  ``client_id`` with either ``client_secret`` or ``private_jwk`` (a JWK dict with
    its private half, for ``private_key_jwt``) are the tool server's own credentials for the decision API.
    """

    issuer: str
    resource: str
    scopes_supported: tuple[str, ...] = ()
    jwks_uri: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    private_jwk: dict | None = field(default=None, repr=False)
    decision_endpoint: str | None = None
    public_origin: str | None = None
    resource_name: str | None = None
    token_algs: tuple[str, ...] = DEFAULT_TOKEN_ALGS
    dpop_algs: tuple[str, ...] = DEFAULT_DPOP_ALGS
    #: Clock skew tolerated on ``exp``, ``iat`` and ``nbf`` (seconds).
    leeway: int = 10
    #: A DPoP proof is accepted from ``iat - dpop_future_skew`` until ``iat + dpop_window``.
    dpop_window: int = 60
    dpop_future_skew: int = 5
    #: JWKS: kept this long, and fetched again at most once per ``jwks_min_refresh`` on an unknown ``kid``.
    jwks_max_age: int = 300
    jwks_min_refresh: int = 30
    #: Decision API: connect and total timeouts (seconds); a slower answer is a denial.
    connect_timeout: float = 1.0
    timeout: float = 3.0

    def __post_init__(self):
        object.__setattr__(self, "issuer", _absolute(self.issuer, "issuer").rstrip("/"))
        _absolute(self.resource, "resource")
        if self.jwks_uri is not None:
            _absolute(self.jwks_uri, "jwks_uri")
        if self.client_secret and self.private_jwk:
            raise ValueError("give the tool server a client_secret or a private_jwk, not both")
        if (self.client_secret or self.private_jwk) and not self.client_id:
            raise ValueError("credentials need the tool server's client_id")
        if self.private_jwk is not None and "d" not in self.private_jwk:
            raise ValueError("private_jwk must hold the private half of the tool server's signing key")
        for alg in (*self.token_algs, *self.dpop_algs):
            if alg == "none" or alg.startswith("HS"):
                raise ValueError(f"{alg} is not an asymmetric signing algorithm")

    @property
    def metadata_url(self) -> str:
        """Where this tool server's RFC 9728 document is served (named in every challenge)."""
        return metadata_url_for(self.resource)

    @property
    def origin(self) -> str:
        if self.public_origin:
            return self.public_origin.rstrip("/")
        parts = urlsplit(self.resource)
        return f"{parts.scheme}://{parts.netloc}"

    def url_for(self, path: str) -> str:
        """The absolute URL clients use for ``path`` on this tool server (for DPoP ``htu``)."""
        return self.origin + (path if path.startswith("/") else "/" + path)

    @property
    def evaluation_endpoint(self) -> str:
        return self.decision_endpoint or self.issuer + "/access/v1/evaluation"

    @property
    def authorization_server_metadata_url(self) -> str:
        return self.issuer + "/.well-known/oauth-authorization-server"
