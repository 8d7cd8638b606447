"""HTTP hot-path benchmark: validated requests/s for GET /rest/api/2/myself signed with
HMAC-SHA1 and RSA-SHA1, against /healthz in the same run.

The server runs as deploy/ configures it in production mode: ``oauthledger serve`` (gunicorn
with the packaged oauthledger.services.http.gunicorn_conf and its default worker count) on
PostgreSQL, Redis and a Redis broker, with a real Celery worker keeping the projection (so
the hot path is the Redis-only one). Requests are pre-signed with unique nonces (nonces are
single use), then ``wrk`` (Debian package ``wrk``; a separate C process) replays them
through a Lua script, so the figures measure the server, not a Python client.

    .venv/bin/python bench/http_bench.py [--rounds 3] [--duration 10] [--connections 16]

Prints requests/s for each target per round and the ratio signed/healthz within the
round, then the medians. Not a test: nothing
asserts on a figure. Needs PostgreSQL and Redis (as the tests do) and ``wrk``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oauthledger.services.http import gunicorn_conf  # noqa: E402 - the worker model it serves
from tests.e2e import servers as s  # noqa: E402

PATH = "/rest/api/2/myself"

LUA = r"""
-- Each wrk thread replays its own slice of pre-signed Authorization headers once.
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  headers = {}
  local n = 0
  for line in io.lines(file) do
    if n % nthreads == id then table.insert(headers, line) end
    n = n + 1
  end
  i = 0
end
function request()
  i = i + 1
  if i > #headers then
    -- Out of fresh nonces: count it rather than replay (a replay is nonce_used).
    exhausted = (exhausted or 0) + 1
    return wrk.format("GET", "/healthz-exhausted")
  end
  return wrk.format("GET", wrk.path, {["Authorization"] = headers[i]})
end
"""
_RESULT = re.compile(r"Requests/sec:\s+([0-9.]+)")
_TOTAL = re.compile(r"(\d+) requests in ([0-9.]+)(m?s)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def _sign_chunk(args: tuple[str, str, str, str, str, str, str, int]) -> list[str]:
    from oauthlib.oauth1 import Client

    method, key, secret, rsa_pem, token, token_secret, url, count = args
    rsa = method.startswith("RSA")
    rsa_key = None
    if rsa:
        # A parsed key object: oauthlib hands rsa_key to PyJWT's prepare_key, which
        # would otherwise parse the PEM again for every signature (slow).
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        rsa_key = load_pem_private_key(rsa_pem.encode(), password=None)
    client = Client(key, client_secret=None if rsa else secret,
                    rsa_key=rsa_key, signature_method=method,
                    resource_owner_key=token, resource_owner_secret=token_secret)
    out = []
    for _ in range(count):
        _, headers, _ = client.sign(url, "GET")  # a fresh random nonce each time
        out.append(headers["Authorization"])
    return out


def presign(method: str, consumer: s.Consumer, access: dict[str, str], url: str, count: int,
            path: Path) -> Path:
    """``count`` Authorization headers with unique nonces, one per line."""
    procs = max(1, os.cpu_count() or 1)
    chunk = -(-count // procs)
    args = [(method, consumer.key, consumer.secret, consumer.rsa.private_pem,
             access["oauth_token"], access["oauth_token_secret"], url, chunk)] * procs
    # close() + join(), not the context manager's terminate(): terminate() can kill a
    # worker while it holds the task queue's lock and then wait forever for a sibling
    # blocked on that lock (a run of front_end_bench hung there).
    pool = multiprocessing.Pool(procs)
    try:
        lines = [h for part in pool.map(_sign_chunk, args) for h in part]
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    path.write_text("\n".join(lines[:count]) + "\n")
    return path


def wrk(url: str, duration: float, connections: int, threads: int,
        headers_file: Path | None, script_dir: Path) -> dict[str, float]:
    """Run wrk; returns requests, seconds, non-2xx and validated requests/s."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--latency"]
    if headers_file is not None:
        script = script_dir / "presigned.lua"
        script.write_text(LUA)
        args += ["-s", str(script), url, "--", str(headers_file), str(threads)]
    else:
        args.append(url)
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    total, secs, unit = _TOTAL.search(out).groups()  # type: ignore[union-attr]
    seconds = float(secs) / (1000 if unit == "ms" else 1)
    non2xx = int(m.group(1)) if (m := _NON2XX.search(out)) else 0
    ok = int(total) - non2xx
    return {"requests": int(total), "seconds": seconds, "non2xx": non2xx,
            "rps": ok / seconds, "raw": out}  # type: ignore[dict-item]


def main() -> None:
    """Start the stack, run /healthz, HMAC-SHA1 and RSA-SHA1, print the figures."""
    # A SIGTERM (``timeout``, a CI job stopped) unwinds like an exception, so the stack's
    # servers and Celery worker are stopped: a worker left running keeps taking tasks
    # from a broker database another run may lease later.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the server running "
                        "(for profiling); prints its URL and waits for Enter")
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("http_bench: wrk is required (apt-get install wrk)")

    # servers=0: start the front end below without --workers, so gunicorn uses the
    # worker count oauthledger.services.http.gunicorn_conf computes.
    stack = s.make_stack(servers=0)
    tmp = Path(tempfile.mkdtemp(prefix="oauthledger-bench-"))
    try:
        server = s.start_server(stack.env, stack.workdir, workers=None)
        stack.servers.append(server)
        user = s.add_user(stack)
        consumer = s.add_consumer(stack, s.rsa_pair(), methods=("HMAC-SHA1", "RSA-SHA1"))
        access = _dance(stack, consumer, user)
        # Hot path only once the worker's projection is complete (checkpoint at the head).
        head = stack.deps().store.head()
        s.wait_until(lambda: (s.projection_position(stack) or 0) >= head,
                     "the projection to catch up", stack.worker)
        workers = _gunicorn_workers(server)
        url = server.url + PATH
        print(f"server: {server.url} (gunicorn, {workers} {gunicorn_conf.worker_class} "
              f"workers x {gunicorn_conf.worker_connections} connections, "
              "oauthledger.services.http.gunicorn_conf); "
              f"load: wrk -t{opts.threads} -c{opts.connections} -d{opts.duration}s; "
              f"{os.cpu_count()} cores", flush=True)

        # The machine is shared: load from other processes comes and goes. Each round
        # measures /healthz right before the signed runs, and the ratio is taken within
        # the round; the median over rounds is reported.
        ratios: dict[str, list[float]] = {"HMAC-SHA1": [], "RSA-SHA1": []}
        rates: dict[str, list[float]] = {"/healthz": [], "HMAC-SHA1": [], "RSA-SHA1": []}
        for round_no in range(1, opts.rounds + 1):
            # Sign first (signing is CPU work that must not overlap a measurement).
            files = {}
            for method in ratios:
                # Enough fresh nonces: nothing signed goes faster than /healthz did.
                count = int(max(rates["/healthz"] or [1500]) * opts.duration * 1.5) + 1000
                files[method] = presign(method, consumer, access, url, count,
                                        tmp / f"{method}.txt")
            health = wrk(server.url + "/healthz", opts.duration, opts.connections,
                         opts.threads, None, tmp)
            rates["/healthz"].append(health["rps"])
            line = [f"round {round_no}: /healthz {health['rps']:7.0f} req/s"]
            for method, path in files.items():
                r = wrk(url, opts.duration, opts.connections, opts.threads, path, tmp)
                if r["non2xx"]:
                    print(f"WARNING: {method}: {r['non2xx']} responses were not 2xx "
                          "(out of pre-signed headers, or refused)", flush=True)
                rates[method].append(r["rps"])
                ratios[method].append(r["rps"] / health["rps"])
                line.append(f"{method} {r['rps']:6.0f} ({ratios[method][-1]:.2f})")
            print("  ".join(line), flush=True)
        print(f"median /healthz     {statistics.median(rates['/healthz']):7.0f} req/s")
        for method, values in ratios.items():
            print(f"median {method:<12} {statistics.median(rates[method]):7.0f} validated "
                  f"req/s  ratio to /healthz {statistics.median(values):.2f}", flush=True)
        if opts.keep:
            input(f"server running at {server.url}; press Enter to stop ")
    finally:
        stack.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _dance(stack: s.Stack, consumer: s.Consumer, user: str) -> dict[str, str]:
    from requests_oauthlib import OAuth1Session

    base = stack.url
    session = OAuth1Session(consumer.key, client_secret=consumer.secret, callback_uri="oob")
    rt = session.fetch_request_token(base + "/plugins/servlet/oauth/request-token")
    page = s.Browser(base).decide(s.authorize_url(base, rt["oauth_token"]), user)
    verifier = s.element_text(page.text, "oauth-verifier")
    assert verifier, "the oob page shows the verifier"
    token = session.fetch_access_token(base + "/plugins/servlet/oauth/access-token",
                                       verifier=verifier)
    return {k: str(v) for k, v in token.items()}


def _gunicorn_workers(server: s.Server) -> int:
    out = subprocess.run(["pgrep", "-g", str(server.process.proc.pid), "-f", "gunicorn"],
                         capture_output=True, text=True).stdout.split()
    return max(0, len(out) - 1)  # minus the arbiter


if __name__ == "__main__":
    main()
