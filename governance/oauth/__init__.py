"""The token broker on django-oauth-toolkit: validator, server, grants, DPoP, JWT access tokens, metadata."""
