"""Errors of the application services, independent of HTTP or the CLI."""

from __future__ import annotations


class ValidationError(ValueError):
    """Input was refused; ``fields`` maps each bad field to a message for a person."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


class NotFound(LookupError):
    """The named entity does not exist."""


class Conflict(ValueError):
    """The entity already exists, or changed under the writer."""
