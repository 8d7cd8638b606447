"""The README's quick start, executed: the embedded server starts with no configuration,
and the commands the README shows work against it."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from requests_oauthlib import OAuth1Session

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def readme_commands() -> list[str]:
    """The oauthledger commands of the README's "Run it" section (after the install line)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Run it", 1)[1].split("## Test it", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line for block in blocks[1:] for line in block.strip().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_run_command_and_examples(tmp_path):
    install_line = (ROOT / "README.md").read_text().split("## Run it", 1)[1]
    assert "pip install -e . && .venv/bin/oauthledger serve" in install_line
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTHLEDGER_")}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "oauthledger"), "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "embedded server did not start"
            time.sleep(0.2)
        assert (tmp_path / ".oauthledger" / "events.sqlite3").exists()
        assert (tmp_path / ".oauthledger" / "secret-keys.json").stat().st_mode & 0o777 == 0o600
        secret = None
        for line in readme_commands():
            cmd = line.replace(".venv/bin/", "")
            out = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 0, (cmd, out.stderr)
            m = re.search(r"shared secret \(shown once\): (\S+)", out.stdout)
            secret = m.group(1) if m else secret
        assert secret, "the README's consumer add should print a generated secret"
        assert shlex.split(readme_commands()[-1])[3] == "my-app"
        # The consumer the README registers works against the running server once the
        # embedded projection catches up (CLI and server are separate processes).
        client = OAuth1Session("my-app", client_secret=secret, callback_uri="oob")
        deadline = time.monotonic() + 20
        while True:
            try:
                token = client.fetch_request_token(base + "/plugins/servlet/oauth/request-token")
                break
            except Exception:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert token["oauth_callback_confirmed"] == "true"
        assert requests.get(base + "/login", timeout=5).status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
