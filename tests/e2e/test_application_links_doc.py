"""docs/application-links.md, executed: two real installations (``oauthledger serve``,
the embedded default, each with its own data directory) are linked both ways with the
commands the page shows, users connect and approve in real HTTP sessions, and every
command's output is checked against the page.

The commands are the page's fenced ``sh`` blocks, each marked ``# A`` or ``# B`` (the
shell of that installation: the block's ``export`` lines hold for every later block with
the same mark). :data:`SCRIPT` lists them in order with the browser steps the page
describes in prose in between; the test first checks that it lists exactly the page's
commands, so the page cannot drift from what is run. A ``text`` block right after an
``sh`` block is that block's output: line by line, ``…`` standing for any text. An
output with an ``oauthledger: `` line (other than a warning) is a failure: the command
must exit 1; every other command must exit 0.

The page's ports (8081 for A at 127.0.0.1, 8082 for B at localhost) and data directory
(/tmp/linkdemo) are replaced with free ports and the test's temporary directory, in
commands and outputs alike.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from tests.e2e.servers import element_text, free_port, parse_forms

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "application-links.md"
BIN = Path(sys.executable).parent
CONNECTIONS = "/plugins/servlet/oauth/users/connections"
PASSWORDS = {"alice": "alice-password-on-A", "asmith": "asmith-password-on-B"}
# Where the page runs A and B: two host names (cookies are kept per host name, not per
# port, RFC 6265 §8.5), B listening on loopback under the name localhost.
DOC_HOSTS = {"A": ("127.0.0.1", "8081"), "B": ("localhost", "8082")}
DOC_DATA = "/tmp/linkdemo"
WAIT = 60.0  # bound on waiting for a server to start or to pick up a CLI change


# -- the page ---------------------------------------------------------------------------


@dataclass
class Block:
    """One ``sh`` block: its mark (A or B), its commands, the output shown after it."""

    mark: str
    commands: list[str]
    output: str | None


def doc_blocks(text: str) -> list[Block]:
    """The page's ``sh`` blocks in order, each with the ``text`` block that follows it
    directly (only blank lines between), if any."""
    fences = list(re.finditer(r"^```(\w*)\n(.*?)^```[ \t]*$", text, re.S | re.M))
    blocks: list[Block] = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "sh":
            continue
        lines = fence.group(2).splitlines()
        mark = re.fullmatch(r"# (A|B)", lines[0].strip()) if lines else None
        assert mark, f"every sh block starts with '# A' or '# B': {fence.group(2)[:80]!r}"
        commands: list[str] = []
        pending = ""
        for line in lines[1:]:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = (pending + line).strip()
            pending = ""
            if line and not line.startswith("#"):
                commands.append(line)
        output = None
        nxt = fences[i + 1] if i + 1 < len(fences) else None
        if nxt is not None and nxt.group(1) == "text" \
                and not text[fence.end():nxt.start()].strip():
            output = nxt.group(2)
        blocks.append(Block(mark.group(1), commands, output))
    return blocks


# -- what runs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Browser:
    """A step the page tells in prose: a person in a browser."""

    name: str


A_ENV = [
    "export OAUTHLEDGER_DATA_DIR=/tmp/linkdemo/a",
    "export OAUTHLEDGER_BASE_URL=http://127.0.0.1:8081",
    "export OAUTHLEDGER_FETCH_ALLOW_PRIVATE=true",
]
B_ENV = [
    "export OAUTHLEDGER_DATA_DIR=/tmp/linkdemo/b",
    "export OAUTHLEDGER_BASE_URL=http://localhost:8082",
    "export OAUTHLEDGER_FETCH_ALLOW_PRIVATE=true",
]
MYSELF_CALL = ("curl -s -u alice:alice-password-on-A -H 'Content-Type: application/json' "
               "-d '{\"method\": \"GET\", \"url\": \"/rest/api/2/myself\"}' "
               "http://127.0.0.1:8081/rest/oauthledger/1/service-providers/B/call "
               "| python3 -m json.tool")

# The page's commands in order, and where the people in it use their browsers.
SCRIPT: list[tuple[str, str] | Browser] = [
    *[("A", c) for c in A_ENV],
    ("A", "oauthledger serve --bind 127.0.0.1:8081"),
    *[("B", c) for c in B_ENV],
    ("B", "oauthledger serve --bind 127.0.0.1:8082"),
    ("A", "echo 'alice-password-on-A' | oauthledger user add alice --password-stdin"),
    ("B", "echo 'asmith-password-on-B' | oauthledger user add asmith --password-stdin"),
    ("A", "oauthledger provider add B --base-url http://localhost:8082"),
    ("B", "oauthledger consumer add --url http://127.0.0.1:8081"),
    Browser("alice connects to B, approving as asmith"),
    ("A", "curl -s -u alice:alice-password-on-A "
          "http://127.0.0.1:8081/rest/oauthledger/1/users/me/connections "
          "| python3 -m json.tool"),
    ("A", "oauthledger provider call B --user alice GET /rest/api/2/myself "
          "| python3 -m json.tool"),
    ("A", MYSELF_CALL),
    ("B", "oauthledger provider add A --base-url http://127.0.0.1:8081"),
    ("A", "oauthledger consumer add --url http://localhost:8082"),
    Browser("asmith connects to A, approving as alice"),
    ("B", "oauthledger provider call A --user asmith GET /rest/api/2/myself "
          "| python3 -m json.tool"),
    ("A", "oauthledger audit user alice"),
    ("A", "oauthledger audit provider B"),
    ("B", "curl -s -X DELETE -u asmith:asmith-password-on-B "
          "http://localhost:8082/rest/oauthledger/1/users/me/connections/A "
          "| python3 -m json.tool"),
    ("B", "oauthledger provider call A --user asmith GET /rest/api/2/myself"),
    ("A", "oauthledger provider drop B alice"),
    Browser("alice connects to B again"),
    Browser("asmith revokes at B every access she gave A"),
    ("A", "oauthledger provider call B --user alice GET /rest/api/2/myself"),
    ("A", "oauthledger provider connections B"),
    ("A", "oauthledger provider remove B"),
    ("A", "oauthledger provider list"),
]


def test_script_lists_exactly_the_pages_commands() -> None:
    blocks = doc_blocks(DOC.read_text())
    page = [(b.mark, c) for b in blocks for c in b.commands]
    assert [s for s in SCRIPT if not isinstance(s, Browser)] == page


# -- running it -------------------------------------------------------------------------


@dataclass
class Walkthrough:
    """The two installations as the page runs them: each mark's shell environment, the
    servers, and the substitutions of ports and directories."""

    tmp: Path
    ports: dict[str, int]
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    servers: list[subprocess.Popen] = field(default_factory=list)

    def url(self, mark: str) -> str:
        return f"http://{DOC_HOSTS[mark][0]}:{self.ports[mark]}"

    def local(self, text: str) -> str:
        """The page's text with this run's ports and directory."""
        for mark, (host, port) in DOC_HOSTS.items():
            for name in {host, "127.0.0.1"}:
                text = text.replace(f"{name}:{port}", f"{name}:{self.ports[mark]}")
        return text.replace(DOC_DATA, str(self.tmp / "linkdemo"))

    def shell_env(self, mark: str) -> dict[str, str]:
        if mark not in self.env:
            base = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
            base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
            self.env[mark] = base
        return self.env[mark]

    def run(self, mark: str, command: str) -> tuple[int, str, str]:
        """Run one of the page's commands in ``mark``'s shell; (status, stdout, stderr)."""
        command = self.local(command)
        env = self.shell_env(mark)
        if command.startswith("export "):
            name, _, value = command[len("export "):].partition("=")
            env[name] = shlex.split(value)[0] if value else ""
            return 0, "", ""
        if command.startswith("oauthledger serve "):
            self.serve(mark, command)
            return 0, "", ""
        done = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env,
                              cwd=self.tmp, capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout, done.stderr

    def serve(self, mark: str, command: str) -> None:
        log = (self.tmp / f"serve-{mark}.log").open("wb")
        proc = subprocess.Popen(shlex.split(command), env=self.shell_env(mark), cwd=self.tmp,
                                stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.servers.append(proc)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                if requests.get(self.url(mark) + "/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert proc.poll() is None, self.server_log(mark)
            assert time.monotonic() < deadline, f"server {mark} did not start"
            time.sleep(0.2)

    def server_log(self, mark: str) -> str:
        path = self.tmp / f"serve-{mark}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


@pytest.fixture
def walkthrough(tmp_path: Path) -> Iterator[Walkthrough]:
    w = Walkthrough(tmp_path, {"A": free_port(), "B": free_port()})
    try:
        yield w
    finally:
        w.stop()


def matches(expected: str, actual: str) -> bool:
    """``actual`` line for line as ``expected``, ``…`` standing for any text."""
    want = expected.rstrip("\n").splitlines()
    got = actual.rstrip("\n").splitlines()
    if len(want) != len(got):
        return False
    for w, g in zip(want, got, strict=True):
        pattern = ".*".join(re.escape(part) for part in w.split("…"))
        if not re.fullmatch(pattern, g.rstrip()):
            return False
    return True


# -- the people in the page -------------------------------------------------------------


class Person:
    """A browser (one cookie jar for every site) that signs in where it is asked to."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.http = requests.Session()

    def get(self, url: str) -> requests.Response:
        """GET, following redirects; signs in when a site sends it to /login."""
        resp = self.http.get(url, timeout=15)
        if "/login" in resp.url and "username" in resp.text:
            form = parse_forms(resp.text)[0]
            resp = self.http.post(urljoin(resp.url, form["action"]), timeout=15,
                                  data={**form["inputs"], "username": self.user,
                                        "password": PASSWORDS[self.user]})
        assert resp.status_code == 200, (resp.status_code, resp.url, resp.text[:500])
        return resp

    def post(self, page: requests.Response, form: dict, extra: dict[str, str] | None = None,
             follow: bool = True) -> requests.Response:
        return self.http.post(urljoin(page.url, form["action"]),
                              data={**form["inputs"], **(extra or {})},
                              allow_redirects=follow, timeout=15)


def connect(home: str, user: str, provider: str, provider_url: str, approver: str) -> None:
    """``user`` presses Connect for ``provider`` on ``home``'s connections page, signs in
    at the provider as ``approver`` and approves; the page then says so."""
    person = Person(user)
    deadline = time.monotonic() + WAIT
    while True:
        page = person.get(home + CONNECTIONS)
        row = element_text(page.text, f"connection-{provider}")
        assert row is not None and ("Not connected" in row or "Needs reconnecting" in row), \
            page.text[:2000]
        form = next(f for f in parse_forms(page.text)
                    if f["action"].endswith(f"/service-providers/{provider}/connect"))
        started = person.post(page, form, follow=False)
        assert started.status_code == 303, started.text[:500]
        location = started.headers["Location"]
        if location.startswith(provider_url):
            break
        # The provider's server has not picked up the consumer the CLI added yet (the
        # page says so: "refused to start the connection"); the page tells to try again.
        back = person.http.get(urljoin(home, location), timeout=15)
        message = element_text(back.text, "connection-message") or ""
        assert "refused to start the connection" in message, message
        assert time.monotonic() < deadline, message
        time.sleep(1)
    at_provider = Person(approver)
    at_provider.http = person.http  # the same browser
    at_provider.user = approver
    authorize = at_provider.get(location)
    form = parse_forms(authorize.text)[0]
    assert {"approve", "deny"} <= set(form["buttons"]), authorize.text[:1000]
    decided = at_provider.post(authorize, form, {"approve": form["buttons"]["approve"]},
                               follow=False)
    assert decided.status_code == 303
    callback = decided.headers["Location"]
    assert callback.startswith(f"{home}/plugins/servlet/oauth/service-providers/"
                               f"{provider}/callback?"), callback
    done = person.get(callback)
    assert done.url.startswith(home + CONNECTIONS)
    assert element_text(done.text, "connection-message") == f"Connected to {provider}."
    status = element_text(done.text, f"connection-{provider}") or ""
    assert "Connected since" in status, status


def revoke_all(site: str, user: str) -> None:
    """``user`` revokes, on ``site``'s access-token page, every access listed there."""
    person = Person(user)
    page = person.get(site + "/plugins/servlet/oauth/users/access-tokens")
    forms = [f for f in parse_forms(page.text) if "token" in f["inputs"]]
    # The grant A was given before the drop is still here: the provider is never told.
    assert len(forms) == 2, page.text[:2000]
    for form in forms:
        assert person.post(page, form).status_code == 200
    left = person.get(site + "/plugins/servlet/oauth/users/access-tokens")
    assert not [f for f in parse_forms(left.text) if "token" in f["inputs"]]


def browser_step(w: Walkthrough, step: Browser) -> None:
    a, b = w.url("A"), w.url("B")
    steps: dict[str, Callable[[], None]] = {
        "alice connects to B, approving as asmith": lambda: connect(a, "alice", "B", b,
                                                                    "asmith"),
        "asmith connects to A, approving as alice": lambda: connect(b, "asmith", "A", a,
                                                                    "alice"),
        "alice connects to B again": lambda: connect(a, "alice", "B", b, "asmith"),
        "asmith revokes at B every access she gave A": lambda: revoke_all(b, "asmith"),
    }
    steps[step.name]()


def test_the_walkthrough_runs_as_written(walkthrough: Walkthrough) -> None:
    w = walkthrough
    blocks = doc_blocks(DOC.read_text())
    outputs: dict[tuple[str, str], str | None] = {}
    for block in blocks:
        # A block's output belongs to its last command (the page keeps one command to a
        # block whenever it shows output).
        assert block.output is None or len(block.commands) == 1, block
        for command in block.commands:
            # A command shown twice would need its outputs told apart.
            assert (block.mark, command) not in outputs, command
            outputs[(block.mark, command)] = block.output
    for step in SCRIPT:
        if isinstance(step, Browser):
            browser_step(w, step)
            continue
        mark, command = step
        status, out, err = w.run(mark, command)
        expected = outputs[step]
        fails = expected is not None and any(
            line.startswith("oauthledger: ") and not line.startswith("oauthledger: warning:")
            for line in expected.splitlines())
        where = f"{mark}$ {command}\nstatus {status}\nstdout:\n{out}\nstderr:\n{err}"
        assert status == (1 if fails else 0), where
        if expected is not None:
            # Standard output, then standard error: two streams, so a body without a
            # final line end (the provider's, relayed as it came) ends its own line.
            shown = out + ("\n" if out and not out.endswith("\n") else "") + err
            assert matches(w.local(expected), shown), \
                f"{where}\nthe page shows:\n{w.local(expected)}"
        assert "Traceback" not in out + err, where
