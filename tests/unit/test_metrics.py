"""Metrics without servers (docs/operations.md, "Metrics"): names and labels, the cap on
consumer labels, counting in the store's append path and the sweep, route groups, the
token check, the projection collector when Redis is down or hangs, the process-tree
directories (stale ones removed, live ones kept, several processes merged in one
scrape), the Grafana dashboard and the docs naming only metrics that exist.

The values live in this process's memory and are shared by every test, so each test
compares a value before and after what it does, or uses names of its own."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import falcon.testing
import pytest
import redis
from oauthlib.oauth1 import Client as OAuthClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from oauthledger.events import catalog as ev
from oauthledger.events import metrics as m
from oauthledger.events.errors import ConcurrencyConflict
from oauthledger.events.expiry import sweep_expired
from oauthledger.events.keys import KeyLayout
from oauthledger.events.projection import project_pending, status
from oauthledger.events.readmodel import ReadModel
from oauthledger.events.state import token_stream
from oauthledger.events.store import EventStore
from oauthledger.services import dance
from oauthledger.services.deps import Deps
from oauthledger.services.http import metrics as http_metrics
from oauthledger.services.http.app import create_app
from oauthledger.services.users import register_user
from tests.conftest import migrated_store
from tests.support import CONSUMER_SECRET, META, grant, hmac_consumer

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "oauthledger-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
HOST = "http://falconframework.org"  # falcon.testing's default host


def value(name: str, **labels: str) -> float:
    """This process's value of one sample (0 when the series does not exist yet), with
    the requests the middleware queued handed over first."""
    http_metrics.flush_pending()
    found = m.metrics().registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# -- names and labels ---------------------------------------------------------------------

FAMILIES = {
    # family (as scraped) -> label names
    "oauthledger_http_request_duration_seconds": ("group",),
    "oauthledger_http_responses_total": ("group", "code"),
    "oauthledger_signed_requests_total": ("kind", "outcome", "oauth_problem"),
    "oauthledger_signed_requests_by_consumer_total": ("consumer", "kind", "outcome"),
    "oauthledger_dance_steps_total": ("step",),
    "oauthledger_token_events_total": ("kind", "change"),
    "oauthledger_events_appended_total": ("type",),
    "oauthledger_store_appends_total": (),
    "oauthledger_store_append_failures_total": ("reason",),
    "oauthledger_store_append_duration_seconds": (),
    "oauthledger_expiry_sweeps_total": ("outcome",),
    "oauthledger_expiry_sweep_duration_seconds": (),
    "oauthledger_expiry_sweep_expired_tokens": (),
    "oauthledger_expiry_sweep_last_success_timestamp_seconds": (),
    "oauthledger_dependency_errors_total": ("dependency", "where"),
}


def test_every_metric_has_its_name_and_labels() -> None:
    """The registry holds exactly the documented families with their label names; every
    name is prefixed and follows the Prometheus naming rules."""
    found = {}
    for family in m.metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        found[name] = labels
    assert set(found) == set(FAMILIES)
    for name, labels in FAMILIES.items():
        # A family without samples yet has no labels to show; pre-bound ones all do.
        assert found[name] <= set(labels), name
        assert re.fullmatch(r"oauthledger_[a-z_]+", name), name
    assert set(m.exported_names().values()) >= set(FAMILIES) | set(m.PROJECTION_FAMILIES)


def test_label_values_are_closed_sets() -> None:
    """Pre-bound series use only the closed label sets: no series names an identifier."""
    for family in m.metrics().registry.collect():
        for sample in family.samples:
            for label, v in sample.labels.items():
                allowed = {
                    "group": set(m.ROUTE_GROUPS), "kind": {"access", "request", *m.SIGNED_KINDS},
                    "outcome": {"accepted", "refused", "ok", "failed"},
                    "step": set(m.DANCE_STEPS), "change": {c for _, c in m.TOKEN_CHANGES},
                    "type": {*ev.EVENT_TYPES, m.OTHER}, "reason": set(m.APPEND_FAILURES),
                    "dependency": set(m.DEPENDENCIES), "where": set(m.ERROR_SOURCES),
                    "code": {"1xx", "2xx", "3xx", "4xx", "5xx", m.OTHER},
                }.get(label)
                if allowed is not None:
                    assert v in allowed, (sample.name, label, v)


# -- the cap on consumer labels -------------------------------------------------------------


def test_consumer_labels_are_capped() -> None:
    """The first ``cap`` consumer keys get a label each; every later key counts as
    "other"; a key seen before keeps its label."""
    labels = http_metrics._ConsumerLabels(cap=3)
    keys = [f"cap-{i}-{os.getpid()}" for i in range(5)]
    for key in keys:
        labels.child(key, "resource", "accepted").inc()
    labels.child(keys[0], "resource", "refused").inc()
    assert labels.labelled == 3
    name = "oauthledger_signed_requests_by_consumer_total"
    for key in keys[:3]:
        assert value(name, consumer=key, kind="resource", outcome="accepted") == 1
    assert value(name, consumer=keys[0], kind="resource", outcome="refused") == 1
    for key in keys[3:]:
        assert m.metrics().registry.get_sample_value(
            name, {"consumer": key, "kind": "resource", "outcome": "accepted"}) is None
    # Two keys over the cap: both in "other" (other tests' labelers may add to it too).
    assert value(name, consumer="other", kind="resource", outcome="accepted") >= 2


# -- the append path and the sweep ---------------------------------------------------------


def test_appends_count_events_dance_steps_and_tokens(deps: Deps) -> None:
    """A whole dance and a renewal through the services: each event by type, each dance
    step once (the renewal's new token is not an exchange), tokens by change."""
    register_user(deps.ledger, "bob", "bob-password", meta=META)
    consumer = hmac_consumer(deps, "count-app")
    steps = {s: value("oauthledger_dance_steps_total", step=s) for s in m.DANCE_STEPS}
    issued_before = value("oauthledger_token_events_total", kind="access", change="issued")
    appends_before = value("oauthledger_store_appends_total")
    approved_before = value("oauthledger_events_appended_total", type="TokenApproved")

    access = grant(deps, consumer)
    old, _ = deps.ledger.load(token_stream(access.token))
    dance.renew(deps.ledger, deps.sealer, deps.settings, consumer, old,
                access.session_handle, META)

    delta = {s: value("oauthledger_dance_steps_total", step=s) - steps[s]
             for s in m.DANCE_STEPS}
    assert delta == {"request_token_issued": 1, "authorized": 1, "denied": 0,
                     "access_token_issued": 1, "renewed": 1}
    # Exchange and renewal each put a new access token in the log.
    assert value("oauthledger_token_events_total", kind="access",
                 change="issued") - issued_before == 2
    assert value("oauthledger_events_appended_total", type="TokenApproved") \
        - approved_before == 1
    # issue, approve, exchange, renew: four transactions.
    assert value("oauthledger_store_appends_total") - appends_before == 4
    assert value("oauthledger_store_append_duration_seconds_count") >= 4


def test_a_conflict_counts_as_a_failed_append(deps: Deps) -> None:
    """An append with a stale version writes nothing and counts as a conflict."""
    before = value("oauthledger_store_append_failures_total", reason="conflict")
    deps.store.append("stream-conflict", 0, [ev.UserPasswordChanged(
        name="x", password_hash="h")], META)
    with pytest.raises(ConcurrencyConflict):
        deps.store.append("stream-conflict", 0, [ev.UserPasswordChanged(
            name="x", password_hash="h")], META)
    assert value("oauthledger_store_append_failures_total", reason="conflict") - before == 1


def test_sweep_counts_tokens_expired_and_its_duration(deps: Deps) -> None:
    """A sweep after a token's expiry: one sweep ok, the token counted, the last
    success time set."""
    register_user(deps.ledger, "bob", "bob-password", meta=META)
    consumer = hmac_consumer(deps, "sweep-app")
    access = grant(deps, consumer)
    token, _ = deps.ledger.load(token_stream(access.token))
    ok_before = value("oauthledger_expiry_sweeps_total", outcome="ok")
    tokens_before = value("oauthledger_expiry_sweep_expired_tokens_sum")
    expired_before = value("oauthledger_token_events_total", kind="access", change="expired")

    result = sweep_expired(deps.store, deps.read_model, now=token.expires_at + 1)

    assert result.expired_access == 1
    assert value("oauthledger_expiry_sweeps_total", outcome="ok") - ok_before == 1
    assert value("oauthledger_expiry_sweep_expired_tokens_sum") - tokens_before == 1
    assert value("oauthledger_token_events_total", kind="access",
                 change="expired") - expired_before == 1
    assert value("oauthledger_expiry_sweep_last_success_timestamp_seconds") > 0


def test_failed_sweep_counts_as_failed(tmp_path: Path) -> None:
    """A sweep whose Redis is down raises, and counts as failed."""
    with migrated_store(f"sqlite:///{tmp_path / 'e.sqlite3'}") as store:
        down = ReadModel(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1),
                         KeyLayout("olmetrics-down"))
        before = value("oauthledger_expiry_sweeps_total", outcome="failed")
        with pytest.raises(redis.ConnectionError):
            sweep_expired(store, down)
        assert value("oauthledger_expiry_sweeps_total", outcome="failed") - before == 1


def test_counting_errors_counts_store_and_redis_failures_only() -> None:
    """Where a worker meets an error: the store and Redis count; other errors do not."""
    metrics = m.metrics()
    before = value("oauthledger_dependency_errors_total", dependency="redis", where="worker")
    with pytest.raises(redis.ConnectionError), metrics.counting_errors("worker"):
        raise redis.ConnectionError("down")
    with pytest.raises(KeyError), metrics.counting_errors("worker"):
        raise KeyError("not a dependency")
    assert value("oauthledger_dependency_errors_total", dependency="redis",
                 where="worker") - before == 1


# -- the HTTP side ---------------------------------------------------------------------------


@pytest.fixture
def app(deps: Deps) -> falcon.testing.TestClient:
    """The app on the embedded deps."""
    return falcon.testing.TestClient(create_app(deps))


@pytest.mark.parametrize(("path", "group"), [
    ("/healthz", "other"),
    ("/rest/api/2/serverInfo", "resource"),
    ("/rest/api/2/myself", "resource"),
    ("/rest/oauthledger/1/consumers", "admin_api"),
    ("/login", "pages"),
    ("/plugins/servlet/oauth/admin/tokens", "pages"),
    ("/plugins/servlet/oauth/request-token", "dance"),
    ("/oauth/token", "dance"),
    ("/no/such/route", "other"),
    ("/plugins/servlet/oauth/consumer-info", "other"),
])
def test_route_groups(app: falcon.testing.TestClient, path: str, group: str) -> None:
    """Each request is timed once, in its route's group."""
    before = value("oauthledger_http_request_duration_seconds_count", group=group)
    app.simulate_get(path)
    assert value("oauthledger_http_request_duration_seconds_count", group=group) \
        - before == 1


def test_signed_requests_accepted_and_refused(deps: Deps,
                                              app: falcon.testing.TestClient) -> None:
    """An accepted call counts as accepted for its consumer; a bad signature counts as
    refused with its oauth_problem; an unknown consumer key never becomes a label."""
    register_user(deps.ledger, "bob", "bob-password", meta=META)
    consumer = hmac_consumer(deps, "signed-app")
    access = grant(deps, consumer)
    good = OAuthClient(consumer.key, client_secret=CONSUMER_SECRET,
                       resource_owner_key=access.token, resource_owner_secret=access.secret)
    bad = OAuthClient(consumer.key, client_secret="wrong",
                      resource_owner_key=access.token, resource_owner_secret=access.secret)
    stranger = OAuthClient("nobody-registered-this", client_secret="x")
    name = "oauthledger_signed_requests_total"
    accepted = value(name, kind="resource", outcome="accepted", oauth_problem="")
    invalid = value(name, kind="resource", outcome="refused",
                    oauth_problem="signature_invalid")
    unknown = value(name, kind="resource", outcome="refused",
                    oauth_problem="consumer_key_unknown")

    for client, code in ((good, 200), (bad, 401), (stranger, 401)):
        _, headers, _ = client.sign(HOST + "/rest/api/2/myself")
        assert app.simulate_get("/rest/api/2/myself", headers=headers).status_code == code

    assert value(name, kind="resource", outcome="accepted", oauth_problem="") - accepted == 1
    assert value(name, kind="resource", outcome="refused",
                 oauth_problem="signature_invalid") - invalid == 1
    assert value(name, kind="resource", outcome="refused",
                 oauth_problem="consumer_key_unknown") - unknown == 1
    by = "oauthledger_signed_requests_by_consumer_total"
    assert value(by, consumer="signed-app", kind="resource", outcome="accepted") == 1
    assert value(by, consumer="signed-app", kind="resource", outcome="refused") == 1
    scrape = app.simulate_get("/metrics").text
    assert "nobody-registered-this" not in scrape
    assert access.token not in scrape


def test_dance_steps_signed_outcome(deps: Deps, app: falcon.testing.TestClient) -> None:
    """A request-token step accepted over HTTP counts as an accepted dance request."""
    consumer = hmac_consumer(deps, "dance-app", callback_url="https://app.example/cb")
    client = OAuthClient(consumer.key, client_secret=CONSUMER_SECRET,
                         callback_uri="https://app.example/cb")
    name = "oauthledger_signed_requests_total"
    before = value(name, kind="dance", outcome="accepted", oauth_problem="")
    url, headers, _ = client.sign(HOST + "/plugins/servlet/oauth/request-token", "POST")
    resp = app.simulate_post("/plugins/servlet/oauth/request-token", headers=headers)
    assert resp.status_code == 200, resp.text
    assert "oauth_token" in dict(parse_qsl(resp.text))
    assert value(name, kind="dance", outcome="accepted", oauth_problem="") - before == 1


def test_concurrent_requests_are_all_counted(app: falcon.testing.TestClient) -> None:
    """Requests from many threads at once, queued without a lock: after the hand-over,
    every one is counted."""
    before = value("oauthledger_http_responses_total", group="other", code="2xx")

    def calls(_: int) -> None:
        for _ in range(50):
            assert app.simulate_get("/healthz").status_code == 200

    threads = [threading.Thread(target=calls, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert value("oauthledger_http_responses_total", group="other", code="2xx") \
        - before == 400


def test_the_background_thread_hands_requests_over(app: falcon.testing.TestClient) -> None:
    """Without a scrape or an explicit flush, the queued requests reach prometheus-client
    within the flush interval (waited for, bounded)."""
    registry = m.metrics().registry
    labels = {"group": "other", "code": "4xx"}
    http_metrics.flush_pending()
    before = registry.get_sample_value("oauthledger_http_responses_total", labels) or 0.0
    assert app.simulate_get("/no/such/page").status_code == 404
    deadline = time.monotonic() + 30
    while (registry.get_sample_value("oauthledger_http_responses_total", labels) or 0.0) \
            == before:
        assert time.monotonic() < deadline, "the flusher did not hand the request over"
        time.sleep(0.05)


def test_metrics_endpoint_answers_the_text_format(deps: Deps,
                                                  app: falcon.testing.TestClient) -> None:
    """``/metrics`` is the Prometheus text format, parseable, with the projection's
    families read now."""
    register_user(deps.ledger, "dave", "dave-password", meta=META)
    project_pending(deps.store, deps.read_model)
    resp = app.simulate_get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert m.sample_value(resp.text, "oauthledger_projection_up", {"reason": ""}) == 1
    assert m.sample_value(resp.text, "oauthledger_log_head_position") is not None
    assert m.sample_value(resp.text, "oauthledger_projection_checkpoint_position") \
        == deps.store.head()
    assert m.sample_value(resp.text, "oauthledger_projection_lag_events") == 0


def test_metrics_token(tmp_path: Path) -> None:
    """With OAUTHLEDGER_METRICS_TOKEN: no or a wrong bearer token is 401 with a Bearer
    challenge and no metric; the right one (any case of the scheme) is 200."""
    from tests.conftest import embedded_deps_in

    with embedded_deps_in(tmp_path, METRICS_TOKEN="s3cret-metrics") as deps:
        client = falcon.testing.TestClient(create_app(deps))
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": "Basic czNjcmV0LW1ldHJpY3M6"},
                        {"Authorization": "Bearer s3cret-metrics-and-more"}):
            resp = client.simulate_get("/metrics", headers=headers)
            assert resp.status_code == 401, headers
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert "oauthledger_" not in resp.text
            assert "s3cret-metrics" not in resp.text
        for scheme in ("Bearer", "bearer"):
            ok = client.simulate_get("/metrics",
                                     headers={"Authorization": f"{scheme} s3cret-metrics"})
            assert ok.status_code == 200
            assert "oauthledger_http_responses_total" in ok.text


# -- the projection collector ------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[EventStore]:
    """A migrated SQLite store."""
    with migrated_store(f"sqlite:///{tmp_path / 'events.sqlite3'}") as store:
        yield store


def _families(collector: m.ProjectionCollector) -> dict[str, list]:
    return {f.name: f.samples for f in collector.collect()}


def test_collector_when_redis_is_down(sqlite_store: EventStore) -> None:
    """Nothing listens on the Redis port: the scrape still answers, with up 0 and the
    reason, and no checkpoint or lag it cannot know."""
    down = ReadModel(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1),
                     KeyLayout("olmetrics-down"))
    collector = m.ProjectionCollector(lambda: status(sqlite_store, down), timeout=10)
    families = _families(collector)
    assert list(families) == ["oauthledger_projection_up"]
    (sample,) = families["oauthledger_projection_up"]
    assert sample.value == 0 and sample.labels == {"reason": "redis"}


def test_collector_when_redis_hangs(sqlite_store: EventStore) -> None:
    """A Redis that accepts the connection and never answers: the scrape gives up after
    its bound with reason timeout, and a second scrape does not start a second reading
    while the first one still hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        hung = ReadModel(redis.Redis(host="127.0.0.1", port=port, socket_timeout=60),
                         KeyLayout("olmetrics-hung"))
        calls = []

        def reading() -> m.ProjectionStatus:
            calls.append(1)
            return status(sqlite_store, hung)

        collector = m.ProjectionCollector(reading, timeout=0.2)
        for _ in range(2):
            families = _families(collector)
            assert list(families) == ["oauthledger_projection_up"]
            assert families["oauthledger_projection_up"][0].labels == {"reason": "timeout"}
        assert len(calls) == 1


def test_collector_keeps_the_last_failure_while_a_reading_hangs(
        sqlite_store: EventStore) -> None:
    """Redis refuses (reason redis), then the same address accepts and never answers:
    while that reading hangs past the bound, the scrape still says redis — the last
    reading that finished — rather than a bare timeout."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=60,
                         retry=Retry(NoBackoff(), 0))
    read_model = ReadModel(client, KeyLayout("olmetrics-flaky"))
    collector = m.ProjectionCollector(lambda: status(sqlite_store, read_model), timeout=5)
    assert _families(collector)["oauthledger_projection_up"][0].labels == {"reason": "redis"}
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(8)
        collector.timeout = 0.2
        families = _families(collector)
        assert list(families) == ["oauthledger_projection_up"]
        assert families["oauthledger_projection_up"][0].labels == {"reason": "redis"}


def test_collector_reports_checkpoint_and_lag(deps: Deps) -> None:
    """With the embedded store and Redis: head, checkpoint and lag as status gives them."""
    register_user(deps.ledger, "carol", "carol-password", meta=META)
    collector = m.ProjectionCollector(lambda: status(deps.store, deps.read_model), timeout=10)
    families = _families(collector)
    assert families["oauthledger_projection_up"][0].value == 1
    assert families["oauthledger_log_head_position"][0].value == deps.store.head()


# -- the token check ------------------------------------------------------------------------


def test_bearer_matches_only_the_exact_token() -> None:
    """Constant-time compare of the whole token; the scheme in any case."""
    env = falcon.testing.create_environ

    def req(header: str | None) -> falcon.Request:
        return falcon.Request(env(headers={"Authorization": header} if header else {}))

    assert http_metrics.bearer_matches(req("Bearer tok"), "tok")
    assert http_metrics.bearer_matches(req("BEARER tok"), "tok")
    for header in (None, "Bearer", "Bearer to", "Bearer tokk", "Basic tok", "tok"):
        assert not http_metrics.bearer_matches(req(header), "tok"), header


# -- process-tree directories -------------------------------------------------------------


def test_stale_tree_directories_are_removed_live_ones_kept(tmp_path: Path) -> None:
    """A tree whose lock is free (it died) is removed when another starts; a locked one
    (alive), a set-up under way and anything not named like a tree stay."""
    live = m.TreeDir.create(tmp_path, "web")
    dead = m.TreeDir.create(tmp_path, "worker")
    os.close(dead.fd)  # the tree died without cleaning up
    setup = tmp_path / ".web-abc123"
    setup.mkdir()
    foreign = tmp_path / "something-else"
    foreign.mkdir()
    (tmp_path / "counter_1.db").write_bytes(b"")

    fresh = m.TreeDir.create(tmp_path, "worker")

    assert not dead.path.exists()
    assert live.path.is_dir() and fresh.path.is_dir()
    assert setup.is_dir() and foreign.is_dir() and (tmp_path / "counter_1.db").exists()
    assert re.fullmatch(rf"worker-{os.getpid()}-\w+", fresh.path.name)
    # The live tree's lock is really held: another description cannot take it.
    fd = os.open(live.path / m.OWNER_FILE, os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
    live.remove()
    fresh.remove()
    assert not live.path.exists() and not fresh.path.exists()


def test_base_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PROMETHEUS_MULTIPROC_DIR when set (its parent when it names a tree's own
    directory, as a re-executed server inherits it), else <data dir>/metrics."""
    monkeypatch.delenv(m.MULTIPROC_ENV, raising=False)
    assert m.metrics_base_dir(tmp_path / "data") == (tmp_path / "data").resolve() / "metrics"
    monkeypatch.setenv(m.MULTIPROC_ENV, str(tmp_path / "chosen"))
    assert m.metrics_base_dir(tmp_path / "data") == tmp_path / "chosen"
    tree = m.TreeDir.create(tmp_path / "chosen", "web")
    monkeypatch.setenv(m.MULTIPROC_ENV, str(tree.path))
    assert m.metrics_base_dir(tmp_path / "data") == tmp_path / "chosen"
    tree.remove()


TREE_SCRIPT = r"""
import os, sys
from pathlib import Path
from oauthledger.events import metrics as m

base = Path(sys.argv[1])
root = m.start_process_tree(base, "bench")
assert root is not None and root.parent == base / "metrics", root
children = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        for _ in range(i + 1):
            m.metrics().dependency_error("store", "worker")
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
    m.process_dead(pid)
m.metrics().dependency_error("store", "worker")
print(m.render().decode())
m.end_process_tree()
print("--- tree directory", "removed" if not root.exists() else "left")
"""


def _env() -> dict[str, str]:
    """This environment without a metrics directory of its own."""
    return {k: v for k, v in os.environ.items() if k != m.MULTIPROC_ENV}


def test_a_process_tree_counts_every_process_in_one_scrape(tmp_path: Path) -> None:
    """A tree's root and two forked children each count; the root's scrape holds the sum
    (1 + 2 + 1), and the directory is gone once the tree ends. Another tree's files under
    the same base are merged too."""
    other = subprocess.run([sys.executable, "-c", TREE_SCRIPT.replace(
        "m.end_process_tree()", "pass"), str(tmp_path)], capture_output=True, text=True,
        timeout=120, cwd=ROOT, env=_env())
    assert other.returncode == 0, other.stderr
    # That tree "died" without ending (its files stay, its lock is free): the next tree
    # removes it, so only the next tree's own counts remain.
    done = subprocess.run([sys.executable, "-c", TREE_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=_env())
    assert done.returncode == 0, done.stderr
    scrape, _, ending = done.stdout.partition("--- ")
    assert m.sample_value(scrape, "oauthledger_dependency_errors_total",
                          {"dependency": "store", "where": "worker"}) == 4
    assert ending.strip() == "tree directory removed"
    assert list((tmp_path / "metrics").iterdir()) == []


def test_a_live_tree_of_another_process_is_merged(tmp_path: Path) -> None:
    """Two trees alive at once under one base (a front end and a worker on one host): a
    scrape from either holds both trees' counts."""
    holder = subprocess.Popen(
        [sys.executable, "-c", TREE_SCRIPT.replace(
            "m.end_process_tree()", "sys.stdout.flush(); sys.stdin.read()"), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
    try:
        assert holder.stdout is not None
        deadline = time.monotonic() + 120
        while not any(p.name.startswith("bench-") for p in (tmp_path / "metrics").glob("*")):
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.1)
        seen = threading.Event()

        def wait_for_scrape() -> None:
            for line in holder.stdout:  # type: ignore[union-attr]
                if line.startswith("oauthledger_dependency_errors_total"):
                    seen.set()
                    return

        threading.Thread(target=wait_for_scrape, daemon=True).start()
        assert seen.wait(120)
        done = subprocess.run([sys.executable, "-c", TREE_SCRIPT, str(tmp_path)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env=_env())
        assert done.returncode == 0, done.stderr
        scrape = done.stdout.partition("--- ")[0]
        assert m.sample_value(scrape, "oauthledger_dependency_errors_total",
                              {"dependency": "store", "where": "worker"}) == 8
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(60)


# -- the dashboard and the docs ------------------------------------------------------------


def _exprs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, item in node.items():
            if key == "expr" and isinstance(item, str):
                yield item
            else:
                yield from _exprs(item)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def test_dashboard_names_only_metrics_that_exist() -> None:
    """The Grafana dashboard is valid JSON; every query names metrics oauthledger
    exports (a renamed metric breaks this test, not a panel nobody looks at), and every
    family is on some panel."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = list(_exprs(board))
    assert exprs and board["title"]
    names = m.exported_names()
    used = set()
    for expr in exprs:
        found = re.findall(r"\boauthledger_[a-z_]+", expr)
        assert found, expr
        for name in found:
            assert name in names, (name, expr)
            used.add(names[name])
    assert used == set(names.values())


def test_operations_doc_lists_every_metric() -> None:
    """docs/operations.md, "Metrics", names every family a scrape can hold."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    for family in set(m.exported_names().values()):
        assert f"`{family}`" in section, family
