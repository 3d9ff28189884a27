"""Token-broker state that django-oauth-toolkit's (unswapped) models cannot hold.

* :class:`SigningKey`: the keys that sign JWT access tokens, private halves encrypted at rest.
* :class:`TokenRecord`: per-token facts (jti, audience, agent, user, act, cnf, acr) beside DOT's AccessToken.
* :class:`InitialAccessToken`: lets dynamic registration skip the pending state.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from governance.models.agents import Agent
from governance.models.capabilities import ToolServer
from governance.models.organizations import Organization


class SigningKeyQuerySet(models.QuerySet):
    def signing(self, *, at=None):
        """Keys allowed to sign now: activated, not yet retired."""
        at = at or timezone.now()
        return self.filter(activated_at__lte=at).filter(
            models.Q(retired_at__isnull=True) | models.Q(retired_at__gt=at)
        )

    def published(self, *, at=None, grace_seconds: int = 0):
        """Keys in the JWKS: every key not retired, or retired less than ``grace_seconds`` ago."""
        at = at or timezone.now()
        return self.filter(
            models.Q(retired_at__isnull=True)
            | models.Q(retired_at__gt=at - timezone.timedelta(seconds=grace_seconds))
        )


class SigningKey(models.Model):
    """A key that signs access tokens (RFC 9068).  Published in the JWKS before it signs, kept after."""

    kid = models.CharField(max_length=64, unique=True)
    alg = models.CharField(max_length=16, default="ES256")
    private_key_encrypted = models.TextField(
        help_text="PKCS#8 PEM, Fernet-encrypted with a key derived from SECRET_KEY."
    )
    public_jwk = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(
        help_text="Signs from this moment on; published in the JWKS from creation."
    )
    retired_at = models.DateTimeField(
        null=True, blank=True, help_text="Stops signing; stays published a while."
    )

    objects = SigningKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-activated_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(alg__in=["ES256", "EdDSA"]), name="signingkey_alg_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(retired_at__isnull=True)
                | models.Q(retired_at__gte=models.F("activated_at")),
                name="signingkey_retired_after_activated",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.alg} {self.kid}"


class TokenRecord(models.Model):
    """Facts about one issued access token, beside DOT's AccessToken (which holds only a checksum)."""

    access_token = models.OneToOneField(
        "oauth2_provider.AccessToken", on_delete=models.CASCADE, related_name="gatehouse_record"
    )
    jti = models.CharField(max_length=64, unique=True)
    audience = models.CharField(max_length=500)
    tool_server = models.ForeignKey(ToolServer, on_delete=models.CASCADE, related_name="token_records")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="token_records")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="token_records",
    )
    subject = models.CharField(max_length=255)
    client_id = models.CharField(max_length=255)
    capabilities = models.TextField(help_text="Space-separated capability keys (the token's scope).")
    grant_type = models.CharField(max_length=64)
    token_family = models.UUIDField(null=True, blank=True)
    act = models.JSONField(null=True, blank=True)
    cnf_jkt = models.CharField(max_length=64, blank=True)
    acr = models.CharField(max_length=64, blank=True)
    auth_time = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["agent", "user"], name="tokenrecord_agent_user")]

    def __str__(self) -> str:
        return f"token {self.jti}"

    @property
    def capability_keys(self) -> list[str]:
        return self.capabilities.split()


class RefreshTokenBinding(models.Model):
    """RFC 9449 §5: a public client's refresh-token family, bound to the DPoP key it was first issued to.

    Keyed by DOT's ``token_family``, so the binding survives rotation (each new refresh token of the family
    needs a proof by the same key).  Confidential clients' families are not bound.
    """

    token_family = models.UUIDField(unique=True)
    jkt = models.CharField(max_length=64, help_text="RFC 7638 thumbprint of the bound key.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"refresh family {self.token_family} bound to a DPoP key"


class RefreshTokenAuthentication(models.Model):
    """The person's authentication behind a refresh-token family: the ``acr`` and ``auth_time`` its
    authorization code carried.  A refresh does not authenticate anyone, so every token of the family keeps
    these values (and a step-up capability stops refreshing once ``auth_time`` is too old)."""

    token_family = models.UUIDField(unique=True)
    acr = models.CharField(max_length=64)
    auth_time = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"refresh family {self.token_family} authenticated at {self.acr}"


class InitialAccessToken(models.Model):
    """RFC 7591 §3: an admin-issued credential; a registration carrying it is active at once."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="initial_access_tokens"
    )
    token_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the token, hex.")
    label = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    ceiling = models.TextField(
        blank=True, help_text="Capability keys the registered agent's ceiling receives."
    )
    max_uses = models.PositiveIntegerField(default=1)
    uses = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(uses__lte=models.F("max_uses")), name="iat_uses_bounded"
            ),
        ]

    def __str__(self) -> str:
        return self.label or f"initial access token #{self.pk}"

    def is_usable(self, *, at=None) -> bool:
        at = at or timezone.now()
        return self.revoked_at is None and self.expires_at > at and self.uses < self.max_uses
