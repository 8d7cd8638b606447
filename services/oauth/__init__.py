"""The OAuth 1.0a protocol layer (RFC 5849), independent of the web framework.

- :mod:`.problems`: ``oauth_problem`` codes, statuses and rendering (Problem Reporting).
- :mod:`.request`: parsing a signed request into a :class:`SignedRequest`.
- :mod:`.urls`: rebuilding the URL the client signed (base URL, trusted proxies).
- :mod:`.signatures`: base strings, verification and signing for every method.
- :mod:`.authenticator`: the checks in order, and the protected-resource hot path.
"""

from oauthledger.services.oauth.problems import STATUS, OAuthProblem
from oauthledger.services.oauth.request import SignedRequest, parse_request
from oauthledger.services.oauth.urls import signed_url

__all__ = ["STATUS", "OAuthProblem", "SignedRequest", "parse_request", "signed_url"]
