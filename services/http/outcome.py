"""What became of a signed request, for the parts that observe it without deciding it:
metrics, the access and app logs, and each consumer's failure history.

The error handler that answers an ``oauth_problem`` records a :class:`Refusal` on the
request (``req.context.refusal``); an accepted resource request carries its
``AuthContext`` on ``req.context.oauth`` (services/http/protect.py). Observers read these
and never re-run a check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Refusal:
    """A signed request (resource call or dance step) answered with an oauth_problem."""

    problem: str
    # The consumer key as sent, only when it names a registered consumer: anything else
    # is attacker-chosen text and must not become a metric label or a history key.
    consumer_key: str | None
    advice: str = ""


def refusal_of(req: Any) -> Refusal | None:
    """The request's Refusal, or None when it was not refused with an oauth_problem."""
    return getattr(req.context, "refusal", None)
