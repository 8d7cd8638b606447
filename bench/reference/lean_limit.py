"""Reference app for the front-end benchmark: the least a correct OAuth 1.0a (RFC 5849)
HMAC-SHA1 check of a signed ``GET /api/me`` has to do, and nothing more.

Per request: parse the Authorization header; one Redis pipeline that reads the consumer
(``c:<key>``) and the token (``t:<token>``) and claims the nonce with ``SET NX EX 600``;
build the signature base string with oauthlib's own primitives; one HMAC-SHA1 and a
constant-time compare. No logging, no error handling (a malformed request is a 500), no
timestamp window, no expiry, no revocation, no metrics. It is the yardstick the signed
hot path of oauthledger is measured against, so its logic is kept as it is.

The consumer ``ck`` (secret ``cs``) and the token ``tk`` (secret ``ts``, user ``alice``)
are written at import. The only setting: ``LEAN_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``). ``bench/front_end_bench.py`` serves it as
``gunicorn -w 1 -b 127.0.0.1:PORT --chdir bench/reference lean_limit:app`` (gunicorn's
default sync worker).
"""

import base64
import hashlib
import hmac
import os

import falcon
import redis
from oauthlib.oauth1.rfc5849 import signature, utils

r = redis.Redis.from_url(os.environ.get("LEAN_REDIS_URL", "redis://127.0.0.1:6379/0"))
r.hset("c:ck", mapping={"secret": "cs"})
r.hset("t:tk", mapping={"secret": "ts", "consumer": "ck", "user": "alice"})


class Me:
    """The protected resource: answers the token's user once the request verifies."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        params = utils.parse_authorization_header(req.get_header("Authorization"))
        p = dict(params)
        pipe = r.pipeline(transaction=False)
        pipe.hgetall("c:" + p["oauth_consumer_key"])
        pipe.hgetall("t:" + p["oauth_token"])
        pipe.set("n:" + p["oauth_nonce"] + p["oauth_timestamp"], 1, nx=True, ex=600)
        consumer, token, fresh = pipe.execute()
        uri = req.uri
        collected = [(k, v) for k, v in params if k != "oauth_signature"] + list(
            req.params.items())
        norm = signature.normalize_parameters(collected)
        base = signature.signature_base_string(req.method, signature.base_string_uri(uri),
                                               norm)
        key = utils.escape(consumer[b"secret"].decode()) + "&" + utils.escape(
            token[b"secret"].decode())
        sig = base64.b64encode(hmac.digest(key.encode(), base.encode(), hashlib.sha1)).decode()
        if not (fresh and hmac.compare_digest(sig, utils.unescape(p["oauth_signature"]))):
            raise falcon.HTTPUnauthorized()
        resp.media = {"user": token[b"user"].decode()}


app = falcon.App()
app.add_route("/api/me", Me())
