"""gunicorn's access log with secrets taken out.

gunicorn logs the request line and the query string as the client sent them. OAuth 1.0a
lets a client put its protocol parameters in the query (RFC 5849 §3.5.3), so a
PLAINTEXT-signed call would write the consumer secret and token secret to the log
(the PLAINTEXT "signature" is the two secrets), and an access-token call its verifier.
This logger replaces the value of every secret-bearing parameter with ``[redacted]`` in
the request line, the query string, the Referer and any logged request header, before
the line is formatted. The app's own log lines never carry these values.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

# Parameters whose value is a secret or a one-time credential. ``oauth_token`` is an
# identifier (it appears in admin pages and the audit log), not a secret.
SECRET_PARAMETERS = (
    "oauth_signature", "oauth_verifier", "oauth_token_secret", "oauth_consumer_secret",
    "oauth_session_handle", "password", "csrf_token", "secret", "shared_secret",
    "sharedSecret", "client_secret",
)
_SECRET = re.compile(
    r"(?i)((?:^|[?&;\s,])(?:" + "|".join(re.escape(p) for p in SECRET_PARAMETERS)
    + r")(?:=|%3D)\"?)([^&;\s\",]*)"
)
REDACTED = "[redacted]"


def redact(text: str | None) -> str | None:
    """``text`` with the value of every secret-bearing parameter replaced."""
    if not text:
        return text
    return _SECRET.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingLogger(Logger):
    """gunicorn's Logger whose access-log atoms never contain a secret parameter."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any
              ) -> dict[str, Any]:
        """The atoms gunicorn formats, with secret parameter values redacted."""
        atoms = super().atoms(resp, req, environ, request_time)
        # Every text atom: the request line, the query, and the request headers ("{x}i")
        # and environ entries ("{x}e") a custom access_log_format may name.
        for name, value in list(atoms.items()):
            if not isinstance(value, str):
                continue
            if name in ("{authorization}i", "{http_authorization}e"):
                atoms[name] = "[redacted]"
            else:
                atoms[name] = redact(value)
        return atoms
