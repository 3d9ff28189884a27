"""Gatehouse's tool-server toolkit: the tool server's half of "may this exact call proceed?".

Importable without Django or the portal: it needs jwcrypto and httpx.  The adapters for DRF
(:mod:`gatehouse_toolkit.drf`), plain ASGI (:mod:`gatehouse_toolkit.asgi`) and the MCP Python SDK
(:mod:`gatehouse_toolkit.mcp`) are imported only by whoever uses them.  See docs/toolkit.md.
"""

from gatehouse_toolkit.challenges import Challenge, Challenges
from gatehouse_toolkit.decisions import Decision, DecisionClient, evaluation_request
from gatehouse_toolkit.dpop import (
    DPoPVerifier,
    MemoryReplayCache,
    ProofRejected,
    RedisReplayCache,
    ReplayCache,
    VerifiedProof,
)
from gatehouse_toolkit.guard import Caller, Refused, ToolServerGuard, parse_authorization
from gatehouse_toolkit.jwks import JWKSCache
from gatehouse_toolkit.metadata import protected_resource_metadata
from gatehouse_toolkit.settings import ToolServerSettings, metadata_url_for
from gatehouse_toolkit.tokens import AccessTokenVerifier, TokenRejected, VerifiedToken

__all__ = [
    "AccessTokenVerifier",
    "Caller",
    "Challenge",
    "Challenges",
    "DPoPVerifier",
    "Decision",
    "DecisionClient",
    "JWKSCache",
    "MemoryReplayCache",
    "ProofRejected",
    "RedisReplayCache",
    "Refused",
    "ReplayCache",
    "TokenRejected",
    "ToolServerGuard",
    "ToolServerSettings",
    "VerifiedProof",
    "VerifiedToken",
    "evaluation_request",
    "metadata_url_for",
    "protected_resource_metadata",
    "parse_authorization",
]
