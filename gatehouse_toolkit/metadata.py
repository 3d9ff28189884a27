"""RFC 9728 protected-resource metadata, generated from the tool server's settings."""

from __future__ import annotations

from urllib.parse import urlsplit

from gatehouse_toolkit.settings import ToolServerSettings


def protected_resource_metadata(settings: ToolServerSettings) -> dict:
    """The document served at :attr:`ToolServerSettings.metadata_url`."""
    document = {
        "resource": settings.resource,
        "authorization_servers": [settings.issuer],
        "bearer_methods_supported": ["header"],
    }
    if settings.dpop_algs:  # empty for a tool server that takes no DPoP tokens (the MCP SDK adapter)
        document["dpop_signing_alg_values_supported"] = list(settings.dpop_algs)
    if settings.scopes_supported:
        document["scopes_supported"] = list(settings.scopes_supported)
    if settings.resource_name:
        document["resource_name"] = settings.resource_name
    return document


def metadata_path(settings: ToolServerSettings) -> str:
    """The path part of the metadata URL, for routing."""
    return urlsplit(settings.metadata_url).path
