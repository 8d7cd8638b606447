"""OAuth Problem Reporting: the ``oauth_problem`` codes, their HTTP statuses and how a
problem is rendered into ``WWW-Authenticate`` and the response body.

Codes and extra parameters follow the OAuth Problem Reporting extension (docs/oauth.md,
"Problems"): 400 for version, parameter, timestamp and signature-method
problems, 503 for ``user_refused`` and ``consumer_key_refused``, 401 for the rest.
"""

from __future__ import annotations

import re
from urllib.parse import quote

STATUS: dict[str, int] = {
    "version_rejected": 400,
    "parameter_absent": 400,
    "parameter_rejected": 400,
    "timestamp_refused": 400,
    "signature_method_rejected": 400,
    "nonce_used": 401,
    "signature_invalid": 401,
    "consumer_key_unknown": 401,
    "consumer_key_rejected": 401,
    "consumer_key_refused": 503,
    "token_used": 401,
    "token_expired": 401,
    "token_revoked": 401,
    "token_rejected": 401,
    "additional_authorization_required": 401,
    "permission_unknown": 401,
    "permission_denied": 401,
    "user_refused": 503,
}

# The extension's extra parameters, in the order they are rendered.
EXTRA_PARAMETERS = (
    "oauth_acceptable_versions",
    "oauth_acceptable_timestamps",
    "oauth_parameters_absent",
    "oauth_parameters_rejected",
)


_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]*").fullmatch


def escape(value: str) -> str:
    """RFC 5849 §3.6 percent-encoding: everything but ALPHA / DIGIT / "-" / "." / "_" /
    "~" is encoded as UTF-8 octets.

    Same result as oauthlib's ``utils.escape``, which costs ~2 µs a call (bytes round
    trip); most OAuth values (keys, tokens, nonces, timestamps) are already unreserved,
    and one regex match lets them through unchanged."""
    if _UNRESERVED(value):
        return value
    return quote(value, safe="~")


def _quoted_realm(realm: str) -> str:
    # RFC 5849 §3.5.1: realm is an RFC 2617 quoted-string, not percent-encoded.
    return realm.replace("\\", "\\\\").replace('"', '\\"')


class OAuthProblem(Exception):
    """A request the OAuth layer refuses, with its ``oauth_problem`` code.

    ``params`` are the extension's extra parameters (``oauth_acceptable_versions``,
    ``oauth_acceptable_timestamps``, ``oauth_parameters_absent``,
    ``oauth_parameters_rejected``); ``advice`` is text for a person
    (``oauth_problem_advice``).
    """

    def __init__(self, problem: str, advice: str | None = None, **params: str) -> None:
        if problem not in STATUS:
            raise ValueError(f"unknown oauth_problem {problem!r}")
        unknown = set(params) - set(EXTRA_PARAMETERS)
        if unknown:
            raise ValueError(f"unknown problem parameters: {', '.join(sorted(unknown))}")
        super().__init__(f"{problem}: {advice}" if advice else problem)
        self.problem = problem
        self.status = STATUS[problem]
        self.advice = advice
        self.params: dict[str, str] = {k: params[k] for k in EXTRA_PARAMETERS if k in params}

    def pairs(self) -> list[tuple[str, str]]:
        """The reported parameters in order: problem, extras, advice."""
        out = [("oauth_problem", self.problem)]
        out += list(self.params.items())
        if self.advice:
            out.append(("oauth_problem_advice", self.advice))
        return out

    def www_authenticate(self, realm: str) -> str:
        """The ``WWW-Authenticate`` header value: ``OAuth realm="x", oauth_problem="..."``,
        values quoted and percent-encoded as RFC 5849 §3.5.1 does for request
        parameters, so any OAuth header parser reads them back."""
        parts = [f'realm="{_quoted_realm(realm)}"']
        parts += [f'{k}="{escape(v)}"' for k, v in self.pairs()]
        return "OAuth " + ", ".join(parts)

    def body(self) -> str:
        """The same pairs form-encoded (``application/x-www-form-urlencoded``), the body
        format clients already parse for token responses."""
        return "&".join(f"{k}={escape(v)}" for k, v in self.pairs())
