"""Domain errors raised by services; views turn them into a plain sentence or the API's error shape."""

from __future__ import annotations


class GovernanceError(Exception):
    code = "invalid"

    def __init__(self, message: str, *, errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or {}


class NotPermitted(GovernanceError):
    code = "not_permitted"


class InvalidInput(GovernanceError):
    code = "invalid_input"


class Conflict(GovernanceError):
    code = "conflict"


class InvalidState(GovernanceError):
    code = "invalid_state"
