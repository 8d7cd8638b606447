"""docs/clients.md, executed: a real ``oauthledger serve`` (the embedded default, in a
temporary directory), the page's commands in a shell in that directory, its Python and
Node.js clients written to the files it names and run, a person in a browser session
approving where the page says so — and every output the page shows checked.

The page is a sequence of fenced blocks: ``sh`` (commands, one shell: an ``export`` holds
for the later blocks), ``python`` and ``js`` (a file, named by its first comment line,
written before the commands that run it), ``text`` (the output of the one command of the
``sh`` block just before it, standard output and standard error as a terminal shows them;
``…`` stands for any text in a line, and a line of only ``…`` for any number of lines).
:data:`PAGE` lists the blocks in order: the test first checks that the page has exactly
these blocks, so a block added, removed, reordered or a command changed fails until this
file knows it.

What is not run as written, and why:

- ``oauthledger serve`` runs with ``--bind 127.0.0.1:<free port>``, and the callback the
  Node.js client listens on gets a free port as well: the page's 127.0.0.1:8080 and
  127.0.0.1:8000 are replaced in commands, files and outputs alike.
- ``export NAME='paste the shared secret here'`` is the reader pasting the secret the
  previous ``consumer add`` printed: the test pastes it.
- The ``pip install`` and ``npm install`` lines download nothing here: the test checks
  that the packages they name (with the requirements of a named extra) are the ones the
  test environment has installed (the test extras; tests/e2e/node's lock file), and runs
  ``client/bin/python`` as this environment's interpreter and ``node`` with
  tests/e2e/node's modules.
- Where a client prints the authorize URL, the browser part is done by a person's
  session (sign in as alice, check the page names the consumer, press Allow); with
  ``oob`` the verifier is read off the page and typed at the client's ``verifier: ``
  prompt (the transcript shows it typed, as a terminal does), with a callback the browser
  follows the redirect to the client.
- Before a client runs, the test waits until the server's projection has caught up with
  the log (``/readyz``), as the page tells the reader that signed calls do within
  seconds of a ``consumer add``.

A command whose output shows an ``oauthledger: `` line (other than the server's first
line or a warning) must exit 1; every other command must exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
import requests

from tests.e2e.servers import Browser, element_text, free_port

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "clients.md"
BIN = Path(sys.executable).parent
NODE_DIR = Path(__file__).with_name("node")
DOC_SERVER = "127.0.0.1:8080"
DOC_CALLBACK = "127.0.0.1:8000"
USER, PASSWORD = "alice", "alice-password"
PASTE = "paste the shared secret here"
PROMPT = "verifier: "
OUTPUT = "output"
WAIT = 60.0  # bound on waiting for the server to start or to catch up

# The page, block by block: (language, the block's commands | the file it names | OUTPUT).
PAGE: list[tuple[str, str]] = [
    ("sh", "oauthledger serve"), ("text", OUTPUT),
    ("sh", "echo 'alice-password' | oauthledger user add alice --display-name Alice "
           "--password-stdin"), ("text", OUTPUT),
    ("sh", 'oauthledger consumer add hmac-demo --name "HMAC demo" --generate-secret'),
    ("text", OUTPUT),
    ("sh", f"export HMAC_DEMO_SECRET='{PASTE}'"),
    ("sh", "python3 -m venv client && client/bin/pip install requests-oauthlib"),
    ("python", "hmac_client.py"),
    ("sh", "client/bin/python hmac_client.py"), ("text", OUTPUT),
    ("sh", 'oauthledger consumer add node-demo --name "Node demo" --generate-secret '
           "--callback http://127.0.0.1:8000/callback"), ("text", OUTPUT),
    ("sh", f"export NODE_DEMO_SECRET='{PASTE}'"),
    ("sh", "npm install oauth@0.10.2"),
    ("js", "node_client.js"),
    ("sh", "node node_client.js"), ("text", OUTPUT),
    ("sh", "openssl genrsa -out rsa-demo.pem 2048\n"
           "openssl pkey -in rsa-demo.pem -pubout -out rsa-demo.pub"),
    ("sh", 'oauthledger consumer add rsa-demo --name "RSA demo" --public-key rsa-demo.pub '
           "--signature-methods RSA-SHA1"), ("text", OUTPUT),
    ("sh", "client/bin/pip install 'oauthlib[signedtoken]' jira"),
    ("python", "rsa_client.py"),
    ("sh", "client/bin/python rsa_client.py"), ("text", OUTPUT),
    ("python", "problems.py"),
    ("sh", "client/bin/python problems.py"), ("text", OUTPUT),
    ("python", "signed_header.py"),
    ("sh", "oauthledger debug signature -X POST --url "
           "http://127.0.0.1:8080/plugins/servlet/oauth/request-token "
           '-H "$(client/bin/python signed_header.py)"'), ("text", OUTPUT),
    ("sh", 'oauthledger consumer add rsa-oops --name "RSA oops" --public-key rsa-demo.pem'),
    ("text", OUTPUT),
]

# The clients that send the user to the authorize page: how the user's decision gets back
# to them, and the consumer name the page must show.
DANCES = {
    "client/bin/python hmac_client.py": ("oob", "HMAC demo"),
    "node node_client.js": ("callback", "Node demo"),
    "client/bin/python rsa_client.py": ("oob", "RSA demo"),
}
CALLBACK_URL = f"http://{DOC_CALLBACK}/callback"  # node-demo's, as registered above


# -- the page ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    """One fenced block of the page."""

    lang: str
    body: str

    def commands(self) -> list[str]:
        """An ``sh`` block's commands: continuation lines joined, comments left out."""
        out: list[str] = []
        pending = ""
        for line in self.body.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1].strip() + " "
                continue
            line = (pending + line.strip()).strip()
            pending = ""
            if line and not line.startswith("#"):
                out.append(line)
        return out

    def file_name(self) -> str:
        """A ``python`` or ``js`` block's file: its first line is ``# NAME`` or
        ``// NAME`` (a colon and a description may follow)."""
        first = self.body.splitlines()[0] if self.body else ""
        m = re.match(r"(?:#|//) ([\w.-]+\.(?:py|js))\b", first)
        assert m, f"a {self.lang} block starts with a comment naming its file: {first!r}"
        return m.group(1)

    def key(self) -> str:
        """What identifies the block in :data:`PAGE`."""
        if self.lang == "sh":
            return "\n".join(self.commands())
        if self.lang in ("python", "js"):
            return self.file_name()
        return OUTPUT


def fences(text: str) -> list[Fence]:
    """Every fenced block of ``text``, in order."""
    return [Fence(m.group(1), m.group(2))
            for m in re.finditer(r"^```(\w*)\n(.*?)^```[ \t]*$", text, re.S | re.M)]


def matches(expected: str, actual: str) -> bool:
    """``actual`` line by line as ``expected``: ``…`` in a line stands for any text, a
    line of only ``…`` for any number of lines (none included). Trailing spaces and
    final line ends do not count."""
    pattern = ""
    for line in expected.rstrip("\n").split("\n"):
        if line.strip() == "…":
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += "[^\n]*".join(re.escape(part) for part in line.rstrip().split("…"))
            pattern += r"\n"
    got = "".join(line.rstrip() + "\n" for line in actual.rstrip("\n").split("\n"))
    return re.fullmatch(pattern, got) is not None


def expects_failure(output: str) -> bool:
    """An output showing an ``oauthledger: `` error line belongs to a command that fails."""
    return any(line.startswith("oauthledger: ")
               and not line.startswith(("oauthledger: warning:", "oauthledger: serving on"))
               for line in output.splitlines())


def test_the_page_has_exactly_the_blocks_this_test_runs() -> None:
    blocks = fences(DOC.read_text())
    assert [(f.lang, f.key()) for f in blocks] == PAGE
    for before, fence in zip(blocks, blocks[1:], strict=False):
        if fence.lang == "text":
            # An output belongs to one command.
            assert before.lang == "sh" and len(before.commands()) == 1, before


def test_output_matching() -> None:
    """The rules the page's outputs are checked by, shown to refuse what they should."""
    shown = "token: …\n…\nlast line\n"
    assert matches(shown, "token: abc\nlast line\n")
    assert matches(shown, "token: abc\none\ntwo\nlast line")
    assert not matches(shown, "token: abc\nlast line\nanother\n")
    assert not matches(shown, "tokens: abc\nlast line\n")
    assert not matches("a: …\nb\n", "a: 1\nx\nb\n")  # … stays within its line
    assert expects_failure("oauthledger: public_key: this is a private key")
    assert not expects_failure("oauthledger: serving on http://127.0.0.1:8080 (...)\n…")


# -- running it -------------------------------------------------------------------------


class Alice(Browser):
    """The person of the page: signs in with the password the page gave her."""

    def login_page_for(self, url: str, user: str) -> requests.Response:
        page = self.get(url)
        if "/login" in page.url:
            page = self.submit(page, {"username": user, "password": PASSWORD})
        return page


@dataclass
class Walkthrough:
    """The reader's two terminals: the server, and a shell in the same directory."""

    tmp: Path
    port: int
    callback_port: int
    env: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen | None = None
    last_secret: str | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def local(self, text: str) -> str:
        """The page's text with this run's ports (percent-encoded too: base strings)."""
        for doc, port in ((DOC_SERVER, self.port), (DOC_CALLBACK, self.callback_port)):
            host, doc_port = doc.split(":")
            text = text.replace(doc, f"{host}:{port}")
            text = text.replace(f"{host}%3A{doc_port}", f"{host}%3A{port}")
        return text

    def log(self) -> str:
        return (self.tmp / "serve.log").read_text(errors="replace")

    def serve(self) -> tuple[int, str]:
        """``oauthledger serve`` on this run's port; its output once it answers."""
        log = (self.tmp / "serve.log").open("wb")
        self.server = subprocess.Popen(
            ["oauthledger", "serve", "--bind", f"127.0.0.1:{self.port}"], env=self.env,
            cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                if requests.get(self.base + "/healthz", timeout=5).status_code == 200:
                    return 0, self.log()
            except requests.RequestException:
                pass
            assert self.server.poll() is None, self.log()
            assert time.monotonic() < deadline, f"the server did not start:\n{self.log()}"
            time.sleep(0.2)

    def shell(self, command: str) -> tuple[int, str]:
        """One command in the reader's shell; (status, what the terminal shows)."""
        done = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=self.env,
                              cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=180)
        return done.returncode, done.stdout

    def caught_up(self) -> None:
        """Wait until the server's projection holds everything in the log (what the page
        tells the reader: signed calls see a new consumer within seconds)."""
        status, out = self.shell("oauthledger events stats --format json")
        assert status == 0, out
        head = json.loads(out)["head_position"]
        deadline = time.monotonic() + WAIT
        while True:
            at = requests.get(self.base + "/readyz", timeout=5).json()["checks"]["projection"]
            if at.startswith("at ") and int(at[3:]) >= head:
                return
            assert time.monotonic() < deadline, f"projection {at}, log head {head}"
            time.sleep(0.2)

    def dance(self, command: str) -> tuple[int, str]:
        """A client that sends the user to the authorize page: the user approves, and the
        verifier reaches the client as the page says (typed in, or by the callback)."""
        how, consumer_name = DANCES[command]
        self.caught_up()
        proc = subprocess.Popen(["bash", "-c", command], cwd=self.tmp,
                                env={**self.env, "PYTHONUNBUFFERED": "1"},
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            shown = ""
            while True:
                line = proc.stdout.readline()
                assert line, f"{command} ended before printing the authorize URL:\n{shown}"
                shown += line
                if line.startswith(self.base + "/plugins/servlet/oauth/authorize?"):
                    break
            url = line.strip()
            alice = Alice(self.base)
            page = alice.login_page_for(url, USER)
            assert consumer_name in page.text and "to act for you?" in page.text, page.text
            decided = alice.decide(url, USER)
            if how == "oob":
                assert "Copy this verification code" in decided.text, decided.text
                verifier = element_text(decided.text, "oauth-verifier")
                assert verifier, decided.text
                proc.stdin.write(verifier + "\n")
                proc.stdin.close()
                rest = proc.stdout.read()
                assert rest.startswith(PROMPT), rest
                # A terminal shows what the user typed after the prompt.
                shown += PROMPT + verifier + "\n" + rest[len(PROMPT):]
            else:
                proc.stdin.close()
                assert decided.status_code == 303, decided.text
                location = decided.headers["Location"]
                assert location.startswith(self.local(CALLBACK_URL) + "?"), location
                assert "oauth_verifier=" in location
                back = requests.get(location, timeout=15)  # the browser follows it
                assert back.status_code == 200 and "you can close this tab" in back.text
                shown += proc.stdout.read()
            return proc.wait(timeout=120), shown
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def installs(self, command: str) -> tuple[int, str]:
        """A ``pip install`` or ``npm install`` line: what it names is what the test
        environment has installed (nothing is downloaded)."""
        for part in command.split("&&"):
            args = shlex.split(part)
            if args[:1] == ["npm"]:
                check_npm_packages(args[args.index("install") + 1:])
                self.env["NODE_PATH"] = str(NODE_DIR / "node_modules")
            elif "pip" in Path(args[0]).name and "install" in args:
                check_python_packages(args[args.index("install") + 1:])
                python = self.tmp / "client" / "bin" / "python"
                python.parent.mkdir(parents=True, exist_ok=True)
                python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
                python.chmod(0o755)
        return 0, ""

    def run(self, command: str) -> tuple[int, str]:
        """One of the page's commands, the way the reader runs it."""
        command = self.local(command)
        if command == "oauthledger serve":
            return self.serve()
        if command.startswith("export "):
            name, _, value = command[len("export "):].partition("=")
            value = shlex.split(value)[0]
            if value == PASTE:
                assert self.last_secret, "no secret was printed to paste"
                value, self.last_secret = self.last_secret, None
            self.env[name] = value
            return 0, ""
        if " install " in f" {command} ":
            return self.installs(command)
        if command in {self.local(c) for c in DANCES}:
            return self.dance(next(c for c in DANCES if self.local(c) == command))
        if command.startswith(("client/bin/python ", "node ")):
            self.caught_up()
        return self.shell(command)

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(10)


def check_python_packages(requirements: list[str]) -> None:
    """Each ``name`` or ``name[extra]`` is installed, with the requirements the extra adds."""
    for requirement in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[([\w,-]+)\])?", requirement)
        assert m, requirement
        dist = metadata.distribution(m.group(1))
        for extra in (m.group(2) or "").split(","):
            if not extra:
                continue
            needed = [r for r in dist.requires or []
                      if re.search(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]", r)]
            assert needed, f"{m.group(1)} has no extra {extra!r}"
            for r in needed:
                metadata.distribution(re.match(r"[A-Za-z0-9_.-]+", r).group(0))


def check_npm_packages(packages: list[str]) -> None:
    """Each ``name@version`` is what tests/e2e/node pins and has installed (npm ci)."""
    assert shutil.which("node"), "Node.js is required for tests/e2e (apt-get install nodejs npm)"
    if not (NODE_DIR / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                       check=True, timeout=300)
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for package in packages:
        name, _, version = package.rpartition("@")
        assert pinned.get(name) == version, (package, pinned)
        installed = json.loads((NODE_DIR / "node_modules" / name / "package.json").read_text())
        assert installed["version"] == version, (package, installed["version"])


@pytest.fixture
def walkthrough(tmp_path: Path) -> Iterator[Walkthrough]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    w = Walkthrough(tmp_path, free_port(), free_port(), env)
    try:
        yield w
    finally:
        w.stop()


def test_the_page_runs_as_written(walkthrough: Walkthrough) -> None:
    w = walkthrough
    blocks = fences(DOC.read_text())
    assert [(f.lang, f.key()) for f in blocks] == PAGE
    last: tuple[str, int, str] | None = None  # the last command, its status and output
    for i, fence in enumerate(blocks):
        if fence.lang in ("python", "js"):
            (w.tmp / fence.file_name()).write_text(w.local(fence.body))
            continue
        if fence.lang == "text":
            assert last is not None
            command, status, out = last
            expected = w.local(fence.body)
            where = f"$ {command}\nstatus {status}\n{out}"
            assert status == (1 if expects_failure(expected) else 0), where
            assert matches(expected, out), f"{where}\nthe page shows:\n{expected}"
            continue
        for command in fence.commands():
            status, out = w.run(command)
            assert "Traceback" not in out, f"$ {command}\n{out}"
            m = re.search(r"^shared secret \(shown once\): (\S+)$", out, re.M)
            if m:
                w.last_secret = m.group(1)
            last = (command, status, out)
            shown = i + 1 < len(blocks) and blocks[i + 1].lang == "text"
            if not shown:
                assert status == 0, f"$ {command}\nstatus {status}\n{out}"
