"""Where a validated request's CPU time goes: py-spy samples one front-end worker while
wrk replays pre-signed ``GET /rest/api/2/myself`` calls, and each sample is charged to
the innermost frame that belongs to a known part (the HTTP server, Falcon, OAuth
parsing, the Redis round trip, the checks and signature, logging, metrics, ...).

    .venv/bin/python bench/request_profile.py [--method HMAC-SHA1] [--seconds 6]
        [--flamegraph out.svg] [--raw out.txt]

The stack is the production deployment bench/http_bench.py starts (PostgreSQL, Redis,
a Celery worker keeping the projection, ``oauthledger serve --workers 1`` with the
packaged gunicorn configuration). The worker's CPU time per request is measured from
/proc (user + system seconds in the window ÷ requests answered in it); py-spy
(``pip install py-spy``) samples the thread holding the interpreter lock, so each part's
µs are Python time, and the rest of the CPU time (system calls, C code that released the
lock) is one line of its own.
Prints the table; ``--flamegraph`` also writes py-spy's SVG. Not a test: nothing
asserts on a figure.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import http_bench as hb  # noqa: E402 - bench/ is not a package

from tests.e2e import servers as s  # noqa: E402

# (part, pattern on "function (file:line)") in priority order; the innermost frame of a
# sample that matches any pattern decides its part.
PARTS: list[tuple[str, re.Pattern[str]]] = [
    ("Redis round trip (client side)", re.compile(
        r"round_trip\.py|[(/]redis/|hiredis|ReadModel\.lookup|readmodel\.py:\d+\)$")),
    ("read model: decoding states", re.compile(r"token_codec\.py|decode_value|_decoded")),
    ("OAuth: parsing the request", re.compile(
        r"oauth/request\.py|oauth/urls\.py|signed_request|external_url|read_body")),
    ("OAuth: checks and signature", re.compile(
        r"oauth/signatures\.py|oauth/authenticator\.py|oauth/problems\.py|/hmac\.py|"
        r"[(/]cryptography/")),
    ("access log", re.compile(r"access_log\.py|gunicorn/glogging\.py|[(/]logging/")),
    ("metrics and failure counts", re.compile(
        r"http/metrics\.py|prometheus_client|failures\.py")),
    ("gunicorn: HTTP parsing, response writing", re.compile(
        r"[(/]gunicorn|gunicorn_h1c|services/http/worker\.py")),
    ("app middleware and resource", re.compile(
        r"services/http/|services/logs\.py|[(/]oauthledger/|[(/]events/")),
    ("Falcon", re.compile(r"[(/]falcon/")),
    # Last: the fallback (see classify).
    ("event loop or thread pool, sockets", re.compile(
        r"[(/]gevent/|greenlet|selectors|threading\.py|socket\.py")),
]


def classify(frames: list[str]) -> str:
    """The part of one sample: its innermost frame that matches a pattern. The event
    loop's own frames (gevent's socket wrappers) count only when nothing else does: a
    socket write inside the Redis client is the Redis round trip's cost."""
    *parts, (loop, loop_pattern) = PARTS
    for frame in reversed(frames):
        for part, pattern in parts:
            if pattern.search(frame):
                return part
    return loop if any(loop_pattern.search(f) for f in frames) else "other"


def _cpu_seconds(pid: str) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarize(raw: Path, rate: int, requests: float) -> list[tuple[str, float, float]]:
    """(part, share of samples, µs per request) from py-spy's raw output: each sample
    stands for 1/rate seconds of Python running, spread over the requests answered."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[classify(stack.split(";"))] += int(count)
    total = sum(counts.values()) or 1
    return [(part, n / total, n / rate * 1e6 / max(1.0, requests))
            for part, n in counts.most_common()]


def main() -> None:
    """Start the stack, load it, sample it, print the table."""
    # A SIGTERM (``timeout``, a CI job stopped) unwinds like an exception, so the stack's
    # servers and Celery worker are stopped: a worker left running keeps taking tasks
    # from a broker database another run may lease later.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="HMAC-SHA1")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--flamegraph", type=Path)
    parser.add_argument("--raw", type=Path)
    opts = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() or shutil.which("wrk") is None:
        sys.exit("request_profile: needs py-spy (pip install py-spy) and wrk (apt-get install wrk)")
    stack = s.make_stack(servers=0)
    tmp = Path(tempfile.mkdtemp(prefix="oauthledger-profile-"))
    try:
        server = s.start_server(stack.env, stack.workdir, workers=1)
        stack.servers.append(server)
        user = s.add_user(stack)
        consumer = s.add_consumer(stack, s.rsa_pair(), methods=("HMAC-SHA1", "RSA-SHA1"))
        access = hb._dance(stack, consumer, user)
        head = stack.deps().store.head()
        s.wait_until(lambda: (s.projection_position(stack) or 0) >= head,
                     "the projection to catch up", stack.worker)
        children = subprocess.run(["pgrep", "-P", str(server.process.proc.pid)],
                                  capture_output=True, text=True).stdout.split()
        worker = children[0] if len(children) == 1 else None
        if worker is None:  # serve execs gunicorn: the arbiter is the process itself
            sys.exit(f"request_profile: expected one gunicorn worker, found {children}")
        url = server.url + hb.PATH
        headers = hb.presign(opts.method, consumer, access, url, 12000 * (opts.seconds + 4),
                             tmp / "headers.txt")
        raw = opts.raw or tmp / "profile.txt"
        load = subprocess.Popen(
            ["wrk", "-t1", f"-c{opts.connections}", f"-d{opts.seconds + 3}s", "-s",
             str(_script(tmp)), url, "--", str(headers), "1"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # warm: keep-alive connections open, caches filled
        cpu_before, wall_before = _cpu_seconds(worker), time.monotonic()
        # --gil: only samples of the thread holding the interpreter lock, i.e. Python
        # running; comparable between a threaded and an event-loop worker.
        subprocess.run([spy, "record", "-p", worker, "-d", str(opts.seconds), "-r",
                        str(opts.rate), "-f", "raw", "-o", str(raw), "--nonblocking",
                        "--gil"], check=True, capture_output=True)
        cpu = _cpu_seconds(worker) - cpu_before
        wall = time.monotonic() - wall_before
        if opts.flamegraph:
            subprocess.run([spy, "record", "-p", worker, "-d", "2", "-r", str(opts.rate),
                            "-o", str(opts.flamegraph), "--nonblocking"],
                           check=True, capture_output=True)
        out = load.communicate()[0]
        rps = float(hb._RESULT.search(out).group(1))  # type: ignore[union-attr]
        requests = rps * wall
        rows = summarize(raw, opts.rate, requests)
        cpu_per_request = cpu * 1e6 / requests
        rows.append(("outside Python: system calls, C code without the GIL", 0.0,
                     max(0.0, cpu_per_request - sum(r[2] for r in rows))))
        print(f"{opts.method} GET {hb.PATH}, one gunicorn worker "
              f"({os.cpu_count()} cores), wrk -t1 -c{opts.connections}: {rps:.0f} req/s; "
              f"worker CPU {cpu / wall * 100:.0f} % of a core; py-spy {opts.rate}/s for "
              f"{opts.seconds} s")
        print(f"{'part (Python holding the GIL, then the rest)':<54} {'share':>6} "
              f"{'µs/request':>11}")
        for part, share, micros in rows:
            shown = f"{share * 100:5.1f}%" if share else ""
            print(f"{part:<54} {shown:>6} {micros:11.1f}")
        print(f"{'worker CPU per request (/proc: user + system)':<54} {'':>6} "
              f"{cpu_per_request:11.1f}")
    finally:
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _script(tmp: Path) -> Path:
    script = tmp / "presigned.lua"
    script.write_text(hb.LUA)
    return script


if __name__ == "__main__":
    main()
