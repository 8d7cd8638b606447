"""Front end against two reference apps, one run: every figure of the front-end targets.

Starts, in one run and on this machine:

- ``bench/reference/hello_falcon.py`` (bare Falcon, ``GET /api/me``) and
  ``bench/reference/lean_limit.py`` (the least a correct HMAC-SHA1 check needs: one Redis
  pipeline, oauthlib's primitives, no logging), each as
  ``gunicorn -w 1 -b 127.0.0.1:PORT --chdir bench/reference MODULE:app`` (gunicorn's
  default sync worker);
- oauthledger as shipped, as ``bench/http_bench.py`` starts it (``tests/e2e/servers.py``):
  a fresh PostgreSQL schema, Redis under a unique prefix, a Redis broker, a real Celery
  worker, and ``oauthledger serve`` (the packaged oauthledger.services.http.gunicorn_conf,
  access log on) with ``--workers 1`` for the ratio rows and a second front end on the same
  stack with ``--workers 3`` for the scaling row. A real dance gives the access token, and
  the measurements start once the worker's projection has reached the head of the log, so
  ``GET /rest/api/2/myself`` takes the Redis-only hot path.

Load is ``wrk -t1 -cN -dD --latency`` (a separate C process); signed requests are pre-signed
with oauthlib (``bench/http_bench.py``'s ``presign``), one fresh nonce each, and replayed once
each by a Lua script that counts the requests it had no header left for ("exhausted") and
reports them from ``done()``. Each round measures, in this order, with all signing done
before the round's first measurement: bare Falcon, lean, oauthledger ``/healthz``,
HMAC-SHA1, RSA-SHA1, HMAC-SHA1 paced at 70 % of the round's HMAC-SHA1 rate (latency), and
HMAC-SHA1 on ``--workers 3``. Ratios are taken within the round; the final table shows
the medians over rounds against the targets. Redis memory per access token comes from
``bench/token_memory.py`` (its own redis-server).

    .venv/bin/python bench/front_end_bench.py [--rounds 3] [--duration 8]
        [--connections 16] [--skip-memory] [--memory-tokens 1000000] [--skip-scaling]
        [--pacing schedule|fixed] [--keep]

Prints figures only, never asserts. Needs PostgreSQL and Redis (as the tests do) and
``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REFERENCE = BENCH / "reference"
# bench/ is a folder of scripts, not a package: http_bench is imported from beside this
# file (it puts the repository root on sys.path itself, for tests.e2e.servers).
sys.path.insert(0, str(BENCH))

import http_bench as hb  # noqa: E402
import redis  # noqa: E402
import requests  # noqa: E402

from tests.e2e import servers as s  # noqa: E402

PATH = hb.PATH  # GET /rest/api/2/myself
REFERENCE_PATH = "/api/me"
WARMUP_SECONDS = 2
FIRST_GUESS = 2000.0  # req/s, only to size the first warm-up batch of signed headers
HEADROOM = 1.5  # pre-signed headers = rate estimate x duration x HEADROOM
PACED_SHARE = 0.7
LEAN_CREDENTIALS = s.Consumer("ck", "cs", s.RsaPair("", ""), "lean reference")
LEAN_TOKEN = {"oauth_token": "tk", "oauth_token_secret": "ts"}

LUA = r"""
-- Replays pre-signed Authorization headers, each exactly once (nonces are single use).
-- Arguments after "--": the headers file; for a paced run also the target rate (req/s)
-- and the connections of this thread.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  -- Each request is formatted here, before the clock starts, not in request(): wrk
  -- shares the machine with the servers, and formatting a request per call was a good
  -- part of its CPU (which the --workers 3 row counts against the front ends).
  headers = {}
  for line in io.lines(args[1]) do
    headers[#headers + 1] = wrk.format("GET", wrk.path, {["Authorization"] = line})
  end
  count = #headers
  rate = tonumber(args[2]) or 0
  connections = tonumber(args[3]) or 1
  sent = 0
  exhausted = 0
end

function request()
  sent = sent + 1
  if sent > #headers then
    -- Out of fresh headers: counted, and sent unsigned to a path that answers 404. A
    -- header sent twice would be refused as a used nonce and pass for a refusal.
    exhausted = exhausted + 1
    return wrk.format("GET", "/bench-out-of-presigned-headers")
  end
  return headers[sent]
end
-- DELAY --
function done(summary, latency, requests)
  local total, signed = 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("exhausted")
    signed = signed + thread:get("count")
  end
  io.write(string.format("presigned: %d headers, exhausted %d\n", signed, total))
end
"""

# Pacing (wrk 4.1 has no -R): wrk calls delay() before every request of a connection and
# sends it that many milliseconds later; it truncates the value to whole milliseconds, so
# every wait below is dithered between its two neighbouring integers (mean kept exact).
LUA_DITHER = r"""
local function whole_ms(ms)
  if ms <= 0 then return 0 end
  local whole = math.floor(ms)
  if math.random() < ms - whole then return whole + 1 end
  return whole
end
"""
# "fixed": each connection waits connections / rate seconds before each request. wrk
# calls delay() after the previous answer, so a connection's cycle is wait + latency and
# the achieved rate falls short of the target by the latency's share of the cycle.
LUA_FIXED = LUA_DITHER + r"""
function delay()
  return whole_ms(1000 * connections / rate)
end
"""
# "schedule": the thread's requests go out on one timetable, one every 1 / rate seconds:
# each delay() call takes the next slot, whichever connection asks, and waits for it
# (CLOCK_MONOTONIC through LuaJIT's ffi). While a connection is free when a slot comes
# (latency < connections / rate), requests leave on time whatever the latency; a late
# slot is sent at once.
LUA_SCHEDULE = LUA_DITHER + r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local due = nil
function delay()
  local now = now_ms()
  due = due and due + 1000 / rate or now
  return whole_ms(due - now)
end
"""
PACING = {"schedule": LUA_SCHEDULE, "fixed": LUA_FIXED}

_EXHAUSTED = re.compile(r"presigned: (\d+) headers, exhausted (\d+)")
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([0-9.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                            r"timeout (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class Run:
    """One wrk run, parsed."""

    label: str
    requests: int  # completed, as wrk counts them
    seconds: float
    non2xx: int
    exhausted: int  # requests the Lua script had no fresh header for
    presigned: int
    percentiles_ms: dict[int, float]
    socket_errors: dict[str, int]
    raw: str

    @property
    def validated(self) -> int:
        """2xx answers: exhausted requests are answered 404, so they are not among them."""
        return self.requests - self.non2xx

    @property
    def rate(self) -> float:
        """Validated (2xx) requests per second."""
        return self.validated / self.seconds

    @property
    def refused(self) -> int:
        """Non-2xx answers not explained by exhaustion. Up to one exhausted request per
        connection may still be in flight when wrk stops, so with exhaustion this is a
        lower bound (by at most --connections)."""
        return max(0, self.non2xx - self.exhausted)


def parse_wrk(label: str, out: str) -> Run:
    """Figures from wrk's output (``--latency``) and the Lua script's done() line."""
    total, secs, unit = hb._TOTAL.search(out).groups()  # type: ignore[union-attr]
    seconds = float(secs) / (1000 if unit == "ms" else 1)
    non2xx = int(m.group(1)) if (m := hb._NON2XX.search(out)) else 0
    presigned, exhausted = ((int(m.group(1)), int(m.group(2)))
                            if (m := _EXHAUSTED.search(out)) else (0, 0))
    pct = {int(p): float(v) * _UNIT_MS[u] for p, v, u in _PERCENTILE.findall(out)}
    errors = ({k: int(v) for k, v in zip(("connect", "read", "write", "timeout"),
                                          m.groups(), strict=True)}
              if (m := _SOCKET_ERRORS.search(out)) else {})
    return Run(label, int(total), seconds, non2xx, exhausted, presigned, pct, errors, out)


def run_unsigned(label: str, url: str, duration: int, connections: int, tmp: Path) -> Run:
    """An unsigned target through http_bench's wrk helper (one wrk thread)."""
    out = hb.wrk(url, duration, connections, 1, None, tmp)
    return parse_wrk(label, str(out["raw"]))


def run_signed(label: str, url: str, duration: int, connections: int, headers: Path,
               tmp: Path, rate: float = 0.0, pacing: str = "schedule",
               midway: Callable[[], str] | None = None) -> Run:
    """Replay ``headers`` once each with ``wrk -t1``; paced to ``rate`` req/s when it is
    above 0 (``pacing``: "schedule" or "fixed", see PACING). ``midway`` is called half
    way through the run; what it returns is appended to the run's label."""
    # http_bench.wrk runs its own Lua script (no exhaustion count, no pacing), so the
    # signed runs start wrk here with the same flags.
    script = tmp / (f"paced-{pacing}.lua" if rate else "presigned.lua")
    script.write_text(LUA.replace("-- DELAY --", PACING[pacing] if rate else ""))
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s",
            str(script), url, "--", str(headers), f"{rate:.3f}", str(connections)]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        if midway is not None:
            time.sleep(duration / 2)
            label += midway()
        out, err = proc.communicate()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, args, out, err)
    return parse_wrk(label, out)


def connections_per_worker(server: s.Server) -> str:
    """How the client's open connections sit on the server's worker processes right now
    (``ss -tnp``): with keep-alive a connection stays on the worker that accepted it."""
    if shutil.which("ss") is None:  # iproute2
        return ""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( sport = :{server.port} )"],
                         capture_output=True, text=True).stdout
    counts: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[pid] = counts.get(pid, 0) + 1
    spread = "/".join(str(n) for n in sorted(counts.values(), reverse=True)) or "?"
    return f" (connections per worker {spread})"


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _process_jiffies(pids: list[str]) -> int:
    """User + system CPU time of ``pids`` so far, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def worker_pids(server: s.Server) -> list[str]:
    """The gunicorn worker processes of a front end (children of its arbiter)."""
    return subprocess.run(["pgrep", "-P", str(server.process.proc.pid)],
                          capture_output=True, text=True).stdout.split()


class CpuShare:
    """Cores used during a run: by a front end's workers and by the whole machine."""

    def __init__(self, server: s.Server) -> None:
        self.pids = worker_pids(server)
        self.machine = _machine_jiffies()
        self.front = _process_jiffies(self.pids)

    def text(self) -> str:
        """``front ends x.xx cores, everything else y.yy, of n``, since construction."""
        busy, total = _machine_jiffies()
        front = _process_jiffies(self.pids) - self.front
        cores = os.cpu_count() or 1
        elapsed = (total - self.machine[1]) / cores or 1
        used = busy - self.machine[0]
        return (f"; CPU: front end {front / elapsed:.2f} cores, everything else "
                f"(wrk, Redis, ...) {(used - front) / elapsed:.2f}, of {cores}")


def report_run(run: Run) -> None:
    """One line per run; WARNINGs for refusals, exhaustion and socket errors."""
    p50, p99 = run.percentiles_ms.get(50), run.percentiles_ms.get(99)
    lat = f"p50 {p50:.2f} ms p99 {p99:.2f} ms" if p50 is not None and p99 is not None else ""
    extra = (f": exhausted {run.exhausted:,} of {run.presigned:,} pre-signed, refused "
             f"{run.refused:,}" if run.presigned else "")
    print(f"    {run.label:<34} {run.rate:8,.0f} validated req/s  ({run.validated:,} 2xx of "
          f"{run.requests:,} in {run.seconds:.2f} s, non-2xx {run.non2xx:,}{extra}; {lat})",
          flush=True)
    if run.refused:
        print(f"    WARNING: {run.label}: {run.refused:,} requests refused (non-2xx not "
              "caused by running out of pre-signed headers)", flush=True)
    if run.exhausted:
        print(f"    WARNING: {run.label}: ran out of pre-signed headers ({run.exhausted:,} "
              "requests unsigned, answered 404 and not counted): the rate is a lower "
              "bound", flush=True)
    if any(run.socket_errors.values()):
        print(f"    WARNING: {run.label}: socket errors {run.socket_errors}", flush=True)


# -- processes ------------------------------------------------------------------------


def start_reference(module: str, workdir: Path, env: dict[str, str]) -> s.Server:
    """``gunicorn -w 1 -b 127.0.0.1:PORT --chdir bench/reference MODULE:app``."""
    port = s.free_port()
    args = [str(s.BIN / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir",
            str(REFERENCE), f"{module}:app"]
    server = s.Server(s.spawn(module, args, env, workdir), port)
    try:
        # Any HTTP answer means it serves (the lean app answers 500 without a header).
        s.wait_until(lambda: requests.get(server.url + REFERENCE_PATH, timeout=2) is not None,
                     f"{module} on port {port}", server.process)
    except BaseException:
        server.stop()
        raise
    return server


def delete_lean_nonces(client: redis.Redis, headers: Path) -> None:
    """Remove the nonce keys the lean app wrote for ``headers`` (they would expire after
    600 s anyway; the shared Redis is never flushed)."""
    from oauthlib.oauth1.rfc5849 import utils

    keys = []
    for line in headers.read_text().splitlines():
        p = dict(utils.parse_authorization_header(line))
        keys.append("n:" + p["oauth_nonce"] + p["oauth_timestamp"])
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start:start + 10_000])


# -- the benchmark --------------------------------------------------------------------


@dataclass
class Signed:
    """A signed target: where it is, how its headers are signed, its rate estimate."""

    key: str
    label: str
    url: str
    method: str
    consumer: s.Consumer
    access: dict[str, str]
    estimate: float = FIRST_GUESS

    def sign(self, count: int, path: Path) -> Path:
        """``count`` fresh headers, one per line (http_bench's multiprocessing signer)."""
        return hb.presign(self.method, self.consumer, self.access, self.url, count, path)


def warm_up(target: Signed, connections: int, tmp: Path,
            after: Callable[[Path], None]) -> None:
    """Short runs that warm the server and set ``target.estimate``: a first pass warms
    (the first signed requests of a fresh process are slow), a second one with three
    times the headers the first pass used measures; repeated while it runs out."""
    count = int(target.estimate * WARMUP_SECONDS)
    rates = []
    for attempt in range(5):
        headers = target.sign(count, tmp / f"warmup-{target.key}.txt")
        run = run_signed(f"warm-up {target.label}", target.url, WARMUP_SECONDS,
                         connections, headers, tmp)
        after(headers)
        rates.append(run.rate)
        if attempt and not run.exhausted:
            break
        count = (count if run.exhausted else run.validated) * 3
    target.estimate = max(max(rates), 1.0)
    print(f"  warm-up {target.label:<30} {target.estimate:8,.0f} validated req/s"
          f"{'' if not run.exhausted else ' (lower bound: ran out of headers)'}"
          f"{f'; WARNING: {run.refused} refused' if run.refused else ''}", flush=True)


TARGETS: list[tuple[str, str, str, float, str]] = [
    # key, measure, comparison, target, unit
    ("hmac_lean", "HMAC-SHA1 validated req/s ÷ lean handler", ">=", 1.2, "x"),
    ("rsa_lean", "RSA-SHA1 validated req/s ÷ lean handler", ">=", 1.1, "x"),
    ("health_bare", "oauthledger /healthz ÷ bare Falcon", ">=", 0.9, "x"),
    ("p99_p50", "p99 ÷ p50 at 70% of max rate, HMAC-SHA1", "<=", 3.0, "x"),
    ("memory", "Redis bytes per active access token", "<=", 200.0, "B"),
    ("w3_w1", "--workers 3 ÷ --workers 1 (HMAC-SHA1)", ">=", 1.6, "x"),
]


def measure_memory(tokens: int) -> float | None:
    """``bench/token_memory.py --tokens N --json``: INFO used_memory delta per token."""
    script = BENCH / "token_memory.py"
    if not script.exists():
        print(f"memory: {script.relative_to(s.ROOT)} does not exist (yet): the memory row "
              "is not measured", flush=True)
        return None
    args = [sys.executable, str(script.relative_to(s.ROOT)), "--tokens", str(tokens), "--json"]
    print(f"memory: {shlex.join(args)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=str(s.ROOT))
    lines = done.stdout.strip().splitlines()
    try:
        figures = json.loads(lines[-1])
        per_token = float(figures["used_memory_per_token"])
    except (IndexError, ValueError, KeyError, TypeError):
        print(f"memory: WARNING: token_memory.py exited {done.returncode} without its JSON "
              f"line:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}", flush=True)
        return None
    print(f"memory: {figures.get('tokens', tokens):,} tokens, path "
          f"{figures.get('path', '?')}, redis-server {figures.get('redis_server', '?')}: "
          f"{per_token:.1f} bytes per token (INFO used_memory delta; "
          f"{time.perf_counter() - started:.0f} s)", flush=True)
    return per_token


def final_table(per_round: dict[str, list[float]], memory: float | None,
                skipped: dict[str, str]) -> None:
    """Medians against the targets."""
    print("\nmeasure                                        median   per round"
          "                  target   result")
    for key, measure, op, target, unit in TARGETS:
        values = [memory] if key == "memory" and memory is not None else per_round.get(key, [])
        if not values:
            why = skipped.get(key, "not measured")
            print(f"{measure:<44} {'-':>8}   {why:<26} {op} {target:g}{unit:<2}  not measured")
            continue
        median = statistics.median(values)
        met = median >= target if op == ">=" else median <= target
        fmt = "{:.0f}" if unit == "B" else "{:.2f}"
        rounds = " ".join(fmt.format(v) for v in values)
        print(f"{measure:<44} {fmt.format(median):>8}{unit:<2} {rounds:<26} {op} "
              f"{target:g}{unit:<2}  {'met' if met else 'NOT MET'}")


def main() -> None:
    """Start the reference apps and oauthledger, measure in rounds, print the table."""
    # A SIGTERM (``timeout``, a CI job stopped) unwinds like an exception, so the stack's
    # servers and Celery worker are stopped: a worker left running keeps taking tasks
    # from a broker database another run may lease later.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-tokens", type=int, default=1_000_000)
    parser.add_argument("--skip-scaling", action="store_true",
                        help="no --workers 3 front end")
    parser.add_argument("--pacing", choices=sorted(PACING), default="schedule",
                        help="how the 70%% run is paced: one timetable for all connections "
                             "(schedule) or a fixed wait per connection before each request "
                             "(fixed)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the servers running (for profiling): prints their URLs "
                             "and pids and waits for Enter")
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("front_end_bench: wrk is required (apt-get install wrk)")

    started = time.perf_counter()
    load_before = os.getloadavg()
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"machine: {os.cpu_count()} cores; load average before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="oauthledger-front-end-bench-"))
    references: list[s.Server] = []
    stack: s.Stack | None = None
    lean_redis = redis.Redis.from_url(s.REDIS_URL)
    ok = False
    try:
        stack = s.make_stack(servers=0)
        one = s.start_server(stack.env, stack.workdir, workers=1)
        stack.servers.append(one)
        three = None
        if not opts.skip_scaling:
            three = s.start_server(stack.env, stack.workdir, workers=3)
            stack.servers.append(three)
        ref_env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
        bare = start_reference("hello_falcon", stack.workdir, ref_env)
        references.append(bare)
        lean = start_reference("lean_limit", stack.workdir,
                               {**ref_env, "LEAN_REDIS_URL": s.REDIS_URL})
        references.append(lean)

        user = s.add_user(stack)
        consumer = s.add_consumer(stack, s.rsa_pair(), methods=("HMAC-SHA1", "RSA-SHA1"))
        access = hb._dance(stack, consumer, user)
        # Hot path only once the worker's projection is complete (checkpoint at the head).
        head = stack.deps().store.head()
        s.wait_until(lambda: (s.projection_position(stack) or 0) >= head,
                     "the projection to catch up", stack.worker)

        conf = hb.gunicorn_conf
        print(f"servers: bare Falcon {bare.url}{REFERENCE_PATH} and lean {lean.url}"
              f"{REFERENCE_PATH} (gunicorn sync, {hb._gunicorn_workers(bare)} and "
              f"{hb._gunicorn_workers(lean)} worker); oauthledger {one.url} "
              f"({hb._gunicorn_workers(one)} {conf.worker_class} worker x "
              f"{conf.worker_connections} connections, access log on)"
              + (f" and {three.url} ({hb._gunicorn_workers(three)} workers)" if three else "")
              + "; PostgreSQL, Redis, Celery worker, projection at the head", flush=True)
        print(f"load: wrk -t1 -c{opts.connections} -d{opts.duration}s --latency; "
              f"{opts.rounds} rounds; latency run paced by {opts.pacing} to "
              f"{PACED_SHARE:.0%} of the round's HMAC-SHA1 rate", flush=True)

        lean_target = Signed("lean", "lean HMAC-SHA1", lean.url + REFERENCE_PATH,
                             "HMAC-SHA1", LEAN_CREDENTIALS, LEAN_TOKEN)
        hmac_target = Signed("hmac", "oauthledger HMAC-SHA1", one.url + PATH, "HMAC-SHA1",
                             consumer, access)
        rsa_target = Signed("rsa", "oauthledger RSA-SHA1", one.url + PATH, "RSA-SHA1",
                            consumer, access)
        w3_target = (Signed("w3", "oauthledger --workers 3 HMAC-SHA1", three.url + PATH,
                            "HMAC-SHA1", consumer, access) if three else None)
        signed = [t for t in (lean_target, hmac_target, rsa_target, w3_target) if t]

        def after(headers: Path) -> None:
            if headers.name.startswith(("warmup-lean", "lean")):
                delete_lean_nonces(lean_redis, headers)

        print("warm-up (sizes the pre-signed batches: rate x duration x "
              f"{HEADROOM})", flush=True)
        for url in (bare.url + REFERENCE_PATH, one.url + "/healthz"):
            run_unsigned("warm-up", url, WARMUP_SECONDS, opts.connections, tmp)
        for target in signed:
            warm_up(target, opts.connections, tmp, after)

        per_round: dict[str, list[float]] = {}
        rates: dict[str, list[float]] = {}
        latency: dict[str, list[float]] = {"p50": [], "p99": [], "achieved": []}
        for round_no in range(1, opts.rounds + 1):
            # All signing before the round's first measurement: signing is CPU work
            # that must not overlap a run.
            t0 = time.perf_counter()
            files: dict[str, Path] = {}
            for target in signed:
                estimate = target.estimate
                if target is w3_target:
                    # Three workers' rate swings with how the connections fall on the
                    # workers: sized for up to twice one worker's rate as well.
                    estimate = max(estimate, 2 * hmac_target.estimate)
                count = int(estimate * opts.duration * HEADROOM) + 200
                files[target.key] = target.sign(count, tmp / f"{target.key}.txt")
            # Paced at 70 % of this round's HMAC-SHA1 rate, which is at most the
            # estimate x HEADROOM (more would have run out of headers): as many as the
            # full-speed run is plenty.
            paced_count = int(hmac_target.estimate * opts.duration * HEADROOM) + 200
            files["paced"] = hmac_target.sign(paced_count, tmp / "paced.txt")
            print(f"round {round_no} (signed {len(files)} batches in "
                  f"{time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.2f})",
                  flush=True)

            runs: dict[str, Run] = {}
            runs["bare"] = run_unsigned("bare Falcon /api/me", bare.url + REFERENCE_PATH,
                                        opts.duration, opts.connections, tmp)
            report_run(runs["bare"])
            runs["lean"] = run_signed(lean_target.label, lean_target.url, opts.duration,
                                      opts.connections, files["lean"], tmp)
            report_run(runs["lean"])
            runs["health"] = run_unsigned("oauthledger /healthz", one.url + "/healthz",
                                          opts.duration, opts.connections, tmp)
            report_run(runs["health"])
            for target in (hmac_target, rsa_target):
                share = CpuShare(one)
                runs[target.key] = run_signed(target.label, target.url, opts.duration,
                                              opts.connections, files[target.key], tmp)
                runs[target.key].label += share.text()
                report_run(runs[target.key])
            goal = PACED_SHARE * runs["hmac"].rate
            runs["paced"] = run_signed(f"HMAC-SHA1 paced to {goal:,.0f}/s", hmac_target.url,
                                       opts.duration, opts.connections, files["paced"], tmp,
                                       rate=goal, pacing=opts.pacing)
            report_run(runs["paced"])
            # The same pacing against bare Falcon at 70 % of its own maximum: what this
            # load generator and machine give an app that does nothing (a floor for the
            # latency row, not a target).
            control_goal = PACED_SHARE * runs["bare"].rate
            control_headers = tmp / "control.txt"
            control_headers.write_text(
                "OAuth unused\n" * (int(control_goal * opts.duration * HEADROOM) + 200))
            runs["control"] = run_signed(f"bare Falcon paced to {control_goal:,.0f}/s",
                                         bare.url + REFERENCE_PATH, opts.duration,
                                         opts.connections, control_headers, tmp,
                                         rate=control_goal, pacing=opts.pacing)
            report_run(runs["control"])
            if w3_target is not None:
                share = CpuShare(three)
                runs["w3"] = run_signed(w3_target.label, w3_target.url, opts.duration,
                                        opts.connections, files["w3"], tmp,
                                        midway=lambda: connections_per_worker(three))
                runs["w3"].label += share.text()
                report_run(runs["w3"])
            after(files["lean"])

            for key, run in runs.items():
                rates.setdefault(key, []).append(run.rate)
            for target in signed:
                run = runs[target.key]
                # Next round's batch: never smaller than a rate already seen; doubled
                # after running out.
                target.estimate = max(target.estimate, run.rate) * (2 if run.exhausted else 1)
            paced = runs["paced"]
            p50, p99 = paced.percentiles_ms[50], paced.percentiles_ms[99]
            latency["p50"].append(p50)
            latency["p99"].append(p99)
            latency["achieved"].append(_ratio(paced.rate, runs["hmac"].rate))
            control = runs["control"].percentiles_ms
            ratios = {"hmac_lean": _ratio(runs["hmac"].rate, runs["lean"].rate),
                      "rsa_lean": _ratio(runs["rsa"].rate, runs["lean"].rate),
                      "health_bare": _ratio(runs["health"].rate, runs["bare"].rate),
                      "p99_p50": _ratio(p99, p50),
                      "control_p99_p50": _ratio(control[99], control[50])}
            if "w3" in runs:
                ratios["w3_w1"] = _ratio(runs["w3"].rate, runs["hmac"].rate)
            for key, value in ratios.items():
                per_round.setdefault(key, []).append(value)
            print(f"  round {round_no}: HMAC/lean {ratios['hmac_lean']:.2f}  RSA/lean "
                  f"{ratios['rsa_lean']:.2f}  /healthz/bare {ratios['health_bare']:.2f}  "
                  f"paced {paced.rate:,.0f}/s ({latency['achieved'][-1]:.0%} of max) "
                  f"p50 {p50:.2f} ms p99 {p99:.2f} ms p99/p50 {ratios['p99_p50']:.2f} "
                  f"(bare Falcon {ratios['control_p99_p50']:.2f})"
                  + (f"  w3/w1 {ratios['w3_w1']:.2f}" if "w3_w1" in ratios else ""),
                  flush=True)
            for path in files.values():
                path.unlink(missing_ok=True)

        print("\nmedians over rounds (validated req/s):")
        names = {"bare": "bare Falcon /api/me", "lean": "lean HMAC-SHA1 /api/me",
                 "health": "oauthledger /healthz", "hmac": "oauthledger HMAC-SHA1",
                 "rsa": "oauthledger RSA-SHA1", "paced": "HMAC-SHA1 paced (achieved)",
                 "control": "bare Falcon paced (achieved)",
                 "w3": "oauthledger --workers 3 HMAC-SHA1"}
        for key, values in rates.items():
            print(f"  {names[key]:<36} {statistics.median(values):8,.0f}   per round "
                  + " ".join(f"{v:,.0f}" for v in values))
        print(f"  paced run: achieved {statistics.median(latency['achieved']):.0%} of the "
              f"round's max; p50 {statistics.median(latency['p50']):.2f} ms, p99 "
              f"{statistics.median(latency['p99']):.2f} ms (medians)", flush=True)

        memory = None
        skipped = {"memory": "--skip-memory" if opts.skip_memory else "no figure",
                   "w3_w1": "--skip-scaling"}
        if not opts.skip_memory:
            memory = measure_memory(opts.memory_tokens)
        final_table(per_round, memory, skipped)
        control = per_round.get("control_p99_p50")
        if control:
            print(f"{'(control: bare Falcon paced the same way)':<44} "
                  f"{statistics.median(control):8.2f}x  "
                  + " ".join(f"{v:.2f}" for v in control))
        load_after = os.getloadavg()
        print(f"\nmachine: {os.cpu_count()} cores; load average before "
              f"{' '.join(f'{x:.2f}' for x in load_before)}, after "
              f"{' '.join(f'{x:.2f}' for x in load_after)}; total "
              f"{time.perf_counter() - started:.0f} s")
        print(f"command: {shlex.join(sys.orig_argv)}", flush=True)

        if opts.keep:
            keep(references, stack)
        ok = True
    finally:
        for server in references:
            server.stop()
        if stack is not None:
            stack.close()
            if ok:
                shutil.rmtree(stack.workdir, ignore_errors=True)
            else:
                print(f"front_end_bench: server logs kept in {stack.workdir}",
                      file=sys.stderr)
        # The lean app's nonces were deleted after each run. Its two fixture keys (c:ck,
        # t:tk) stay: any other lean app on this Redis reads the same two keys.
        lean_redis.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _ratio(a: float, b: float) -> float:
    """a / b; NaN when b is 0 (every request of the denominator's run failed)."""
    return a / b if b else float("nan")


def keep(references: list[s.Server], stack: s.Stack) -> None:
    """--keep: print where everything runs and wait for Enter."""
    bare, lean = references
    rows: list[tuple[str, str, Any]] = [
        ("bare Falcon", bare.url + REFERENCE_PATH, f"gunicorn master pid {bare.process.proc.pid}"),
        ("lean (consumer ck, token tk)", lean.url + REFERENCE_PATH,
         f"gunicorn master pid {lean.process.proc.pid}")]
    for server, workers in zip(stack.servers, ("1", "3"), strict=False):
        rows.append((f"oauthledger --workers {workers}", server.url + PATH,
                     f"gunicorn master pid {server.process.proc.pid}"))
    if stack.worker is not None:
        rows.append(("celery worker", "-", f"pid {stack.worker.proc.pid}"))
    for name, url, pid in rows:
        print(f"  {name:<30} {url:<46} {pid}")
    print(f"  logs in {stack.workdir}")
    with contextlib.suppress(EOFError):  # no terminal: stop at once
        input("servers running; press Enter to stop ")


if __name__ == "__main__":
    main()
