"""gunicorn's access log with secrets taken out.

gunicorn logs the request line and the query string as the client sent them. OAuth 1.0a
lets a client put its protocol parameters in the query (RFC 5849 §3.5.3), so a
PLAINTEXT-signed call would write the consumer secret and token secret to the log
(the PLAINTEXT "signature" is the two secrets), and an access-token call its verifier.
This logger replaces the value of every secret-bearing parameter with ``[redacted]`` in
the request line, the path, the query string, the Referer, the User-Agent and any logged
request or response header or environ entry, before the line is formatted. The app's own
log lines never carry these values.

It runs for every request, so the common case stays cheap: only atoms that can carry
parameters are looked at, and only those holding an ``=`` (or its percent-encoding) are
searched.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from gunicorn.glogging import Logger

# Parameters whose value is a secret or a one-time credential, besides every parameter
# whose name contains "secret". ``oauth_token`` is an identifier (it appears in admin
# pages and the audit log), not a secret.
SECRET_PARAMETERS = (
    "oauth_signature", "oauth_verifier", "oauth_token_secret", "oauth_consumer_secret",
    "oauth_session_handle", "password", "csrf_token", "secret", "shared_secret",
    "sharedSecret", "client_secret",
)
_SECRET_NAMES = frozenset(p.lower() for p in SECRET_PARAMETERS)
# A parameter name and its "=" (or "%3D"), where a parameter can start: the start of the
# text or after ? & ; , or white space (a query, a form, an Authorization-style list).
# The value is not consumed, so a parameter inside another one's value (a callback URL
# with its own query) is found too.
_NAME = re.compile(r"(?:^|(?<=[?&;\s,]))([^=&;\s,?\"]+?)(?:=|%3[dD])\"?")
# Where a value ends.
_VALUE_END = re.compile(r"[&;\s\",]")
REDACTED = "[redacted]"

# gunicorn's atoms that can carry parameters: the request line ("r"), the path ("U",
# decoded, so an encoded "?" shows), the query ("q"), the Referer ("f"), the User-Agent
# ("a"), the Basic user name ("u"), and every request header ("{x}i"), response header
# ("{x}o": a Location carries a callback's verifier) and environ entry ("{x}e") a custom
# access_log_format may name. The others (address, time, status, sizes, durations, pid)
# are gunicorn's own.
_TEXT_ATOMS = frozenset("rUqfau")
_REDACTED_WHOLE = frozenset(("{authorization}i", "{http_authorization}e"))


def is_secret_parameter(name: str) -> bool:
    """Whether a parameter named ``name`` (as sent: percent-encoded or not, any case)
    carries a secret. The name is decoded first, as the application decodes it, so
    ``oauth%5Fsignature`` is ``oauth_signature``."""
    plain = unquote(name).lower() if "%" in name else name.lower()
    return plain in _SECRET_NAMES or "secret" in plain


def redact(text: str | None) -> str | None:
    """``text`` with the value of every secret-bearing parameter replaced."""
    if not text or ("=" not in text and "%3" not in text):
        return text
    out: list[str] = []
    done = 0  # text[:done] is in ``out``
    for match in _NAME.finditer(text):
        if match.start() < done or not is_secret_parameter(match.group(1)):
            continue  # inside a value already redacted, or not a secret
        end = _VALUE_END.search(text, match.end())
        stop = end.start() if end else len(text)
        out += (text[done:match.end()], REDACTED)
        done = stop
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


class RedactingLogger(Logger):
    """gunicorn's Logger whose access-log atoms never contain a secret parameter."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any
              ) -> dict[str, Any]:
        """The atoms gunicorn formats, with secret parameter values redacted."""
        atoms = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if not isinstance(value, str):
                continue
            if name in _REDACTED_WHOLE:
                atoms[name] = REDACTED
            elif name in _TEXT_ATOMS or name[:1] == "{":
                atoms[name] = redact(value)
        return atoms
