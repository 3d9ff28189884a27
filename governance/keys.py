"""Agents' public keys: a JWK Set parsed and checked with jwcrypto, never a private key."""

from __future__ import annotations

import json

from jwcrypto import jwk

from governance.errors import InvalidInput

ALLOWED_KTY = {"EC", "OKP", "RSA"}
# Signature keys only: X25519/X448 are key-agreement curves.
ALLOWED_OKP_CURVES = {"Ed25519", "Ed448"}
ALLOWED_ALGS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
MIN_RSA_BITS = 2048
MAX_KEYS = 10


def _refuse(where: str, message: str, short: str) -> InvalidInput:
    return InvalidInput(f"{where} {message}", errors={"jwks": [f"{where}: {short}"]})


def validate_public_jwks(value) -> dict:
    """Return the JWK Set as a dict of public keys only; refuse private, symmetric or malformed keys."""
    if value in (None, "", {}):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidInput("The JWKS is not valid JSON.", errors={"jwks": ["not valid JSON"]}) from None
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise InvalidInput(
            'The JWKS must be an object with a "keys" list.', errors={"jwks": ["no keys list"]}
        )
    if len(value["keys"]) > MAX_KEYS:
        raise InvalidInput(f"A JWKS may hold at most {MAX_KEYS} keys.", errors={"jwks": ["too many keys"]})
    public_keys, kids = [], set()
    for index, member in enumerate(value["keys"]):
        where = f"keys[{index}]"
        if not isinstance(member, dict):
            raise InvalidInput(f"{where} is not a JSON object.", errors={"jwks": [f"{where}: not an object"]})
        try:
            key = jwk.JWK(**member)
        except Exception:  # jwcrypto raises several types for malformed keys
            raise _refuse(where, "is not a valid JWK.", "invalid") from None
        if member.get("kty") not in ALLOWED_KTY:
            raise InvalidInput(
                f"{where} must be an EC, OKP or RSA key.", errors={"jwks": [f"{where}: unsupported kty"]}
            )
        if key.has_private:
            raise InvalidInput(
                f"{where} contains private key material; register public keys only.",
                errors={"jwks": [f"{where}: private key"]},
            )
        if member["kty"] == "OKP" and member.get("crv") not in ALLOWED_OKP_CURVES:
            raise _refuse(where, "must be an Ed25519 or Ed448 signing key.", "unsupported curve")
        if member["kty"] == "RSA" and _rsa_bits(key) < MIN_RSA_BITS:
            raise _refuse(where, f"is an RSA key shorter than {MIN_RSA_BITS} bits.", "weak key")
        if "alg" in member and member["alg"] not in ALLOWED_ALGS:
            raise _refuse(where, "names an algorithm that is not an asymmetric signature.", "unsupported alg")
        if "use" in member and member["use"] != "sig":
            raise _refuse(where, 'must be a signing key ("use": "sig").', "not a signing key")
        exported = json.loads(key.export_public())
        for optional in ("kid", "use", "alg"):
            if optional in member:
                exported[optional] = member[optional]
        kid = exported.get("kid") or key.thumbprint()
        if kid in kids:
            raise _refuse(where, f"repeats the key id {kid!r}.", "duplicate kid")
        kids.add(kid)
        public_keys.append(exported)
    return {"keys": public_keys}


def _rsa_bits(key: jwk.JWK) -> int:
    return key.get_op_key("verify").key_size
