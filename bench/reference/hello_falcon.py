"""Reference app for the front-end benchmark: the smallest Falcon app that answers JSON.

One route, ``GET /api/me``, answering ``{"user": "alice"}`` with no authentication, no
middleware and no logging: the floor any Falcon front end stands on.
``bench/front_end_bench.py`` serves it as
``gunicorn -w 1 -b 127.0.0.1:PORT --chdir bench/reference hello_falcon:app`` (gunicorn's
default sync worker) and compares oauthledger's ``/healthz`` with it.
"""

import falcon


class Me:
    """The one resource: a fixed JSON body."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"user": "alice"}


app = falcon.App()
app.add_route("/api/me", Me())
