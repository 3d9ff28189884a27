"""Enforcement: the decision API tool servers call before every tool call (docs/decision-api.md).

``api`` (HTTP edge) → ``requests`` (reading bodies) and ``caller`` (who asks) → ``pipeline`` (the order of
the checks, the audit event) → ``checks`` (token ▸ scope ▸ user ▸ rate) → ``constraints``, ``limits``,
``approvals`` and the broker's own rules.
"""
