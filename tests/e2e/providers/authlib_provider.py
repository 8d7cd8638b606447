"""An OAuth 1.0a service provider on Authlib's Flask integration
(``authlib.integrations.flask_oauth1``: AuthorizationServer, ResourceProtector), with one
consumer, tokens and nonces in memory. What it serves and its command line: see
:mod:`tests.e2e.providers`.

Denying at the authorize page answers as Authlib does: a redirect to the callback with
``error=access_denied`` and no verifier (RFC 5849 §2.2 leaves the denial's form to the
server).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from authlib.integrations.flask_oauth1 import (
    AuthorizationServer,
    ResourceProtector,
    current_credential,
    register_temporary_credential_hooks,
)
from authlib.oauth1 import ClientMixin, TokenCredentialMixin
from authlib.oauth1.errors import OAuth1Error
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from tests.e2e.providers import (
    NONCE_TTL,
    MemoryCache,
    ProviderConfig,
    authorize_page,
    decision_of,
    parse_args,
)


class Client(ClientMixin):
    """The one registered consumer."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    def get_default_redirect_uri(self) -> str | None:
        """No registered callback: every consumer sends ``oauth_callback``."""
        return None

    def get_client_secret(self) -> str | None:
        """The shared secret (HMAC-SHA1), None when only RSA-SHA1 is allowed."""
        return self.config.client_secret

    def get_rsa_public_key(self) -> str | None:
        """The consumer's RSA public key as PEM (RSA-SHA1)."""
        return self.config.rsa_public_key


class TokenCredential(dict, TokenCredentialMixin):
    """Token credentials (RFC 5849 §2.3) with the consumer and user they belong to."""

    def get_oauth_token(self) -> str:
        """The token."""
        return self["oauth_token"]

    def get_oauth_token_secret(self) -> str:
        """The token secret."""
        return self["oauth_token_secret"]


class User:
    """The person approving at the authorize page."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get_user_id(self) -> str:
        """What Authlib records in the temporary credential on approval."""
        return self.name


def create_app(config: ProviderConfig) -> Flask:
    """The Flask app: the three dance endpoints, the approval form and /api/me."""
    app = Flask(__name__)
    methods = (["HMAC-SHA1"] if config.client_secret else []) + (
        ["RSA-SHA1"] if config.rsa_public_key else [])
    app.config["OAUTH1_SUPPORTED_SIGNATURE_METHODS"] = methods
    client = Client(config)
    cache = MemoryCache()
    tokens: dict[str, TokenCredential] = {}

    def query_client(client_id: str) -> Client | None:
        return client if client_id == config.client_key else None

    def exists_nonce(nonce: str, timestamp: str, client_id: str, token: str | None) -> bool:
        # RFC 5849 §3.3: unique per timestamp, client credentials and token.
        return not cache.add(f"nonce:{nonce}:{timestamp}:{client_id}:{token or ''}", 1,
                             timeout=NONCE_TTL)

    def create_token_credential(token: dict[str, str], temporary: Any) -> TokenCredential:
        credential = TokenCredential(token, client_id=temporary.get_client_id(),
                                     user_id=temporary.get_user_id())
        tokens[credential.get_oauth_token()] = credential
        return credential

    def query_token(client_id: str, oauth_token: str) -> TokenCredential | None:
        credential = tokens.get(oauth_token)
        if credential is None or credential["client_id"] != client_id:
            return None
        return credential

    server = AuthorizationServer(app, query_client=query_client)
    server.register_hook("exists_nonce", exists_nonce)
    register_temporary_credential_hooks(server, cache)
    server.register_hook("create_token_credential", create_token_credential)
    require_oauth = ResourceProtector(app, query_client=query_client,
                                      query_token=query_token, exists_nonce=exists_nonce)

    @app.get("/")
    def index() -> Response:
        return Response("Authlib OAuth 1.0a provider\n", mimetype="text/plain")

    @app.post("/oauth/initiate")
    def initiate() -> Response:
        return server.create_temporary_credentials_response()

    @app.route("/oauth/authorize", methods=["GET", "POST"])
    def authorize() -> Response:
        decision = decision_of(request.values.to_dict())
        try:
            if decision is None:
                req = server.check_authorization_request()
                return Response(authorize_page("Authlib", req.token, config.user),
                                mimetype="text/html")
            user = User(request.values.get("user") or config.user)
            return server.create_authorization_response(
                grant_user=user if decision == "approve" else None)
        except OAuth1Error as error:
            # An unknown or used token: a page for the person, not a redirect.
            return Response(f"Cannot authorize: {error.error}\n", status=400,
                            mimetype="text/plain")

    @app.post("/oauth/token")
    def token() -> Response:
        return server.create_token_response()

    @app.get("/api/me")
    @require_oauth()
    def me() -> Response:
        return jsonify(name=current_credential["user_id"],
                       consumer=current_credential["client_id"], provider="authlib")

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until killed (werkzeug's threaded server, on 127.0.0.1 only)."""
    config = parse_args("authlib_provider", argv)
    server = make_server("127.0.0.1", config.port, create_app(config), threaded=True)
    print(f"Authlib provider listening on {config.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
