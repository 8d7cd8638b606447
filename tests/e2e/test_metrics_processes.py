"""Metrics across real processes (docs/operations.md, "Metrics"): a gunicorn front end
with two workers (``oauthledger serve``, the packaged config) and a Celery worker with a
pool of two processes, on PostgreSQL, Redis and a Redis broker, sharing one data
directory as on one host.

- Signed requests spread over both gunicorn workers (each worker's own file shows its
  share) are all counted in one scrape of ``/metrics``, exactly (once each worker has
  handed its queue over: within a second).
- An expiry sweep run by the Celery worker, of a request token past its expiry, shows
  up in the front end's scrape: the worker's tree is merged in.
- Stopped gracefully, each tree removes its metrics directory.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from celery import Celery
from oauthlib.oauth1 import Client as OAuthClient
from prometheus_client.multiprocess import MultiProcessCollector

from oauthledger.events.metrics import sample_value
from oauthledger.services import dance
from tests.e2e import servers as s
from tests.e2e.test_problems import access_token

MYSELF = "/rest/api/2/myself"
ACCEPTED = {"kind": "resource", "outcome": "accepted", "oauth_problem": ""}
SIGNED = "oauthledger_signed_requests_total"


@dataclasses.dataclass
class Deployment:
    """The stack's schema and environment, this module's front end and worker."""

    stack: s.Stack
    web: s.Server
    worker: s.Process

    @property
    def metrics_base(self) -> Path:
        """``<data dir>/metrics``: the base every tree of this host uses."""
        return Path(self.stack.env["OAUTHLEDGER_DATA_DIR"]) / "metrics"

    def scrape(self) -> str:
        """One scrape of the front end's /metrics."""
        resp = requests.get(self.web.url + "/metrics", timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.text

    def tree_dirs(self, role: str) -> list[Path]:
        """The metrics directories of this role's trees."""
        return sorted(self.metrics_base.glob(f"{role}-*"))


def per_process(tree: Path, name: str, labels: dict[str, str]) -> dict[int, float]:
    """The value of one sample in each process file of a tree: pid -> value."""
    out: dict[int, float] = {}
    for path in tree.glob("*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    out[pid] = out.get(pid, 0.0) + float(sample.value)
    return out


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """A fresh stack (schema, environment, broker database); one front end with two
    gunicorn workers and one Celery worker (prefork, two processes) started here."""
    stack = s.make_stack(servers=0, worker=False)
    worker = web = None
    try:
        worker = s.spawn("celery-metrics", [
            s.CELERY, "-A", "oauthledger.workers.celery_app", "worker", "--pool=prefork",
            "--concurrency=2", "--loglevel=INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-n", f"e2e-metrics-{uuid.uuid4().hex[:8]}@%h"],
            stack.env, stack.workdir)
        web = s.start_server(stack.env, stack.workdir, workers=2)
        deployment = Deployment(stack, web, worker)
        s.wait_until(lambda: bool(deployment.tree_dirs("worker")),
                     "the Celery worker's metrics directory", worker)
        yield deployment
    finally:
        if web is not None:
            web.stop()
        if worker is not None:
            worker.stop()
        stack.close()


def test_requests_over_both_gunicorn_workers_are_all_counted(
        deployment: Deployment) -> None:
    """Concurrent signed calls until both gunicorn workers have served some (each
    worker's own file shows its share); one scrape counts every one of them, for the
    consumer too."""
    stack = deployment.stack
    consumer = s.add_consumer(stack, s.rsa_pair(), methods=("HMAC-SHA1",))
    at = access_token(deployment.web.url, consumer, s.add_user(stack))
    (tree,) = deployment.tree_dirs("web")
    base = sample_value(deployment.scrape(), SIGNED, ACCEPTED) or 0.0

    def call(_: int) -> int:
        client = OAuthClient(consumer.key, client_secret=consumer.secret,
                             resource_owner_key=at["oauth_token"],
                             resource_owner_secret=at["oauth_token_secret"])
        uri, headers, _ = client.sign(deployment.web.url + MYSELF)
        # A new connection per call: gunicorn's workers compete for each one.
        return requests.get(uri, headers={**headers, "Connection": "close"},
                            timeout=30).status_code

    def counted() -> float:
        return (sample_value(deployment.scrape(), SIGNED, ACCEPTED) or 0.0) - base

    sent = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(50):
            codes = list(pool.map(call, range(40)))
            assert codes == [200] * len(codes), codes
            sent += len(codes)
            # Each worker hands its queue over within a second (services/http/metrics.py):
            # wait until the scrape holds every call so far, never more.
            s.wait_until(lambda n=sent: counted() >= n, f"{sent} calls in the scrape",
                         timeout=60)
            assert counted() == sent
            shares = per_process(tree, SIGNED, ACCEPTED)
            if len([v for v in shares.values() if v > 0]) >= 2:
                break
        else:
            pytest.fail(f"2000 calls all went to one gunicorn worker: {shares}")

    text = deployment.scrape()
    assert (sample_value(text, SIGNED, ACCEPTED) or 0.0) - base == sent
    assert sum(per_process(tree, SIGNED, ACCEPTED).values()) - base == sent
    assert sample_value(text, "oauthledger_signed_requests_by_consumer_total",
                        {"consumer": consumer.key, "kind": "resource",
                         "outcome": "accepted"}) == sent
    assert at["oauth_token"] not in text


def test_the_celery_workers_sweep_is_in_the_front_ends_scrape(
        deployment: Deployment) -> None:
    """A request token that expires, then a sweep task sent by name to the broker (what
    beat sends): the Celery worker records the expiry, and the front end's scrape shows
    the sweep, the token it expired and the Expired event appended — counted in the
    worker's own tree."""
    stack = deployment.stack
    deps = stack.deps()
    consumer = s.add_consumer(stack, s.rsa_pair(), methods=("HMAC-SHA1",))
    from oauthledger.events.state import ConsumerState, consumer_stream

    state, _ = deps.ledger.load(consumer_stream(consumer.key))
    assert isinstance(state, ConsumerState)
    short = dataclasses.replace(deps.settings, request_token_ttl=1.0)
    dance.issue_request_token(deps.ledger, deps.sealer, short, state, s.CALLBACK,
                              {"actor": "e2e"})
    time.sleep(1.5)  # past its expiry (a wait for the token, not a timing assertion)
    before = deployment.scrape()
    expired_before = sample_value(before, "oauthledger_token_events_total",
                                  {"kind": "request", "change": "expired"}) or 0.0

    app = Celery("e2e-metrics", broker=stack.env["OAUTHLEDGER_BROKER_URL"])
    app.send_task("oauthledger.sweep_expired", ignore_result=True)

    def swept() -> str | None:
        text = deployment.scrape()
        expired = sample_value(text, "oauthledger_token_events_total",
                               {"kind": "request", "change": "expired"}) or 0.0
        return text if expired > expired_before else None

    s.wait_until(lambda: swept() is not None, "the sweep in the scrape", deployment.worker)
    text = deployment.scrape()
    assert (sample_value(text, "oauthledger_expiry_sweeps_total", {"outcome": "ok"})
            or 0.0) >= 1
    assert (sample_value(text, "oauthledger_expiry_sweep_expired_tokens_sum") or 0.0) >= 1
    assert (sample_value(text, "oauthledger_expiry_sweep_last_success_timestamp_seconds")
            or 0.0) > time.time() - 300
    (worker_tree,) = deployment.tree_dirs("worker")
    assert sum(per_process(worker_tree, "oauthledger_expiry_sweeps_total",
                           {"outcome": "ok"}).values()) >= 1
    assert sum(per_process(worker_tree, "oauthledger_events_appended_total",
                           {"type": "RequestTokenExpired"}).values()) >= 1


def test_stopped_trees_remove_their_directories(deployment: Deployment) -> None:
    """SIGTERM to gunicorn and to the Celery worker: each removes its directory."""
    assert deployment.tree_dirs("web") and deployment.tree_dirs("worker")
    deployment.web.stop()
    deployment.worker.stop()
    assert deployment.tree_dirs("web") == []
    assert deployment.tree_dirs("worker") == []
