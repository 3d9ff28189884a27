import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@pytest.fixture(scope="session")
def audit_signing_pem() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(autouse=True)
def audit_signing_key(settings, audit_signing_pem):
    """pytest-django runs tests with DEBUG off, where no key file is generated: give the tests a key."""
    settings.AUDIT_SIGNING_KEY = audit_signing_pem
    return audit_signing_pem
