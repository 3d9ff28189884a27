"""A DPoP client for tests and the demo: good proofs, and on request every bad shape. Not production code."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import base64url_encode

from governance.oauth.dpop import access_token_hash

_DEFAULT_ALG = {("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("OKP", "Ed25519"): "EdDSA"}


def new_key(kind: str = "EC") -> jwk.JWK:
    """A fresh private key: "EC" (P-256), "EC384", "Ed25519", "RSA" (2048 bits) or "oct" (HMAC)."""
    if kind == "EC":
        return jwk.JWK.generate(kty="EC", crv="P-256")
    if kind == "EC384":
        return jwk.JWK.generate(kty="EC", crv="P-384")
    if kind == "Ed25519":
        return jwk.JWK.generate(kty="OKP", crv="Ed25519")
    if kind == "RSA":
        return jwk.JWK.generate(kty="RSA", size=2048)
    if kind == "oct":
        return jwk.JWK.generate(kty="oct", size=256)
    raise ValueError(kind)


def default_alg(key: jwk.JWK) -> str:
    if key["kty"] == "RSA":
        return "RS256"
    if key["kty"] == "oct":
        return "HS256"
    return _DEFAULT_ALG[(key["kty"], key["crv"])]


def public_jwk(key: jwk.JWK) -> dict[str, Any]:
    return json.loads(key.export_public())


def make_proof(
    method: str,
    url: str,
    key: jwk.JWK,
    *,
    nonce: str | None = None,
    access_token: str | None = None,
    ath: str | None = None,
    iat_offset: float = 0,
    jti: str | None = None,
    typ: str | None = "dpop+jwt",
    alg: str | None = None,
    header_key: jwk.JWK | None = None,
    embed_private: bool = False,
    extra_header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    omit: tuple[str, ...] = (),
) -> str:
    """A compact DPoP proof signed with ``key``.

    ``header_key`` puts another key in the ``jwk`` header (the signature then comes from ``key``);
    ``embed_private`` exports the private members into that header; ``claims`` overrides or adds claims
    and ``omit`` drops them; ``access_token`` sets ``ath`` to its hash unless ``ath`` is given.
    """
    shown = header_key or key
    if shown["kty"] == "oct":
        header_jwk = json.loads(shown.export())
    else:
        header_jwk = json.loads(shown.export_private() if embed_private else shown.export_public())
    header: dict[str, Any] = {"alg": alg or default_alg(key), "jwk": header_jwk}
    if typ is not None:
        header["typ"] = typ
    header.update(extra_header or {})
    payload: dict[str, Any] = {
        "jti": jti or uuid.uuid4().hex,
        "htm": method,
        "htu": url,
        "iat": int(time.time() + iat_offset),
    }
    if nonce is not None:
        payload["nonce"] = nonce
    if ath is None and access_token is not None:
        ath = access_token_hash(access_token)
    if ath is not None:
        payload["ath"] = ath
    payload.update(claims or {})
    for name in omit:
        payload.pop(name, None)
    token = jws.JWS(json.dumps(payload).encode())
    token.allowed_algs = [header["alg"]]
    token.add_signature(key, alg=header["alg"], protected=json.dumps(header))
    return token.serialize(compact=True)


def unsigned_proof(method: str, url: str, key: jwk.JWK, *, alg: str = "none") -> str:
    """An ``alg: none`` proof built by hand: base64url header and payload, empty signature."""
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(key)}
    payload = {"jti": uuid.uuid4().hex, "htm": method, "htu": url, "iat": int(time.time())}
    encode = lambda value: base64url_encode(json.dumps(value).encode())  # noqa: E731
    return f"{encode(header)}.{encode(payload)}."
