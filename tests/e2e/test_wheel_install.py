"""oauthledger as a distribution: the wheel built from the repository holds only the
``oauthledger`` namespace (code, templates, static files, migrations, licence), installs
with its declared dependencies into a fresh virtual environment, and the README's quick
start works there with the installed ``oauthledger`` command, far from the checkout.

The build runs on a copy of the tree so that it leaves no build/ or *.egg-info behind in
the repository; the quick start runs in a temporary directory so that nothing can be
imported from the checkout by accident.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from requests_oauthlib import OAuth1Session

from tests.e2e import servers as s
from tests.e2e.test_readme_quickstart import readme_commands

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT = 300
REQUEST = "/plugins/servlet/oauth/request-token"
ACCESS = "/plugins/servlet/oauth/access-token"
MYSELF = "/rest/api/2/myself"
# Data files the code loads at run time; a wheel without them imports fine and then fails
# on the first page or migration, so the listing is checked against the source folders.
DATA_FOLDERS = {
    "services/http/templates": "*.html",
    "services/http/static": "*",
    "events/migrations/versions": "[0-9]*.py",
}


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output if it exits non-zero."""
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def copy_source_tree(dest: Path) -> Path:
    """Copy the repository's files (tracked, plus new files git does not ignore) to
    ``dest``: what a clean checkout would build from, without .venv, caches or the
    egg-info of the editable install. A tree without git metadata (an unpacked archive)
    is copied whole minus what .gitignore names."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        ignored = [line.strip().rstrip("/") for line in
                   (ROOT / ".gitignore").read_text().splitlines() if line.strip()]
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", *ignored))
        return dest
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                 cwd=ROOT).stdout
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is not built
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build_wheel(tmp: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the tree with the project's own pip."""
    source = copy_source_tree(tmp / "source")
    dist = tmp / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", str(source),
         "-w", str(dist)], timeout=PIP_TIMEOUT)
    wheels = list(dist.glob("oauthledger-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def check_wheel_listing(wheel: Path) -> None:
    """Only ``oauthledger/...`` and the dist-info; every data file and the licence."""
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"
    strays = sorted(n for n in names
                    if not n.startswith("oauthledger/") and not n.startswith(dist_info + "/"))
    assert not strays, f"entries outside the oauthledger namespace: {strays}"
    for role in ("events", "services", "workers"):
        assert f"oauthledger/{role}/__init__.py" in names, role
    assert "oauthledger/services/http/gunicorn_conf.py" in names
    assert "oauthledger/events/migrations/script.py.mako" in names
    assert "oauthledger/events/migrations/env.py" in names
    for folder, pattern in DATA_FOLDERS.items():
        files = sorted((ROOT / folder).glob(pattern))
        assert files, f"{folder} has no {pattern}"
        for path in files:
            assert f"oauthledger/{path.relative_to(ROOT).as_posix()}" in names, path
    versions = [n for n in names if re.fullmatch(r"oauthledger/events/migrations/versions/"
                                                 r"\d{4}_\w+\.py", n)]
    assert len(versions) >= 2, versions
    assert f"{dist_info}/licenses/LICENSE" in names, sorted(n for n in names
                                                            if n.startswith(dist_info))
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "oauthledger = oauthledger.services.cli.main:main" in entry_points


def clean_env(venv: Path) -> dict[str, str]:
    """The caller's environment without oauthledger settings or anything that could put
    the checkout or the test venv on the path; the new venv's bin first on PATH."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OAUTHLEDGER_") and k not in drop}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONNOUSERSITE"] = "1"
    return env


def install(wheel: Path, venv: Path) -> None:
    """A fresh venv with the wheel installed (not editable) and its declared dependencies,
    resolved by pip from the configured indexes."""
    run([sys.executable, "-m", "venv", str(venv)], timeout=PIP_TIMEOUT)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", str(wheel)], timeout=PIP_TIMEOUT,
        env=clean_env(venv))
    # Every requirement the wheel declares (and theirs) is installed and compatible.
    run([python, "-m", "pip", "check"], timeout=120, env=clean_env(venv))


def check_imports(venv: Path, workdir: Path, env: dict[str, str]) -> None:
    """The package comes from the venv's site-packages; no folder name is importable."""
    python = str(venv / "bin" / "python")
    probe = ("import json, sysconfig, oauthledger.events, oauthledger.services, "
             "oauthledger.workers as w; print(json.dumps([sysconfig.get_paths()['purelib'], "
             "oauthledger.events.__file__, oauthledger.services.__file__, w.__file__]))")
    purelib, *files = json.loads(run([python, "-c", probe], cwd=workdir, env=env).stdout)
    assert len(files) == 3, files
    for path in files:
        assert Path(path).resolve().is_relative_to(Path(purelib).resolve()), path
        assert not Path(path).resolve().is_relative_to(ROOT), path
    for folder in ("events", "services", "workers"):
        done = subprocess.run([python, "-c", f"import {folder}"], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0, f"import {folder} worked in the installed venv"
        assert "ModuleNotFoundError" in done.stderr, done.stderr


def start_server(venv: Path, workdir: Path, env: dict[str, str]) -> s.Server:
    """``oauthledger serve`` of the installed venv in ``workdir``; returns once /healthz
    answers (stop it with ``.stop()``)."""
    port = s.free_port()
    log_path = workdir / "serve.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "oauthledger"), "serve", "--bind", f"127.0.0.1:{port}"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    server = s.Server(s.Process("installed-serve", proc, log_path), port)
    try:
        s.wait_until(lambda: requests.get(server.url + "/healthz", timeout=2).status_code
                     == 200, f"/healthz on port {port}", server.process, timeout=90)
    except BaseException:
        server.stop()
        raise
    return server


def readme_quickstart(venv: Path, workdir: Path, env: dict[str, str]
                      ) -> tuple[str, str, str]:
    """Run the README's commands with the installed ``oauthledger``; returns the admin's
    name and password and the consumer's generated secret."""
    commands = readme_commands()
    user_add = next(c for c in commands if " user add " in c)
    words = shlex.split(user_add)
    assert words[0] == "echo" and "--password-stdin" in words, user_add
    user, password = words[words.index("add") + 1], words[1]
    assert any(" consumer add my-app " in c for c in commands), commands
    secret = None
    for line in commands:
        cmd = line.replace(".venv/bin/", f"{venv / 'bin'}/")
        done = run(["sh", "-c", cmd], cwd=workdir, env=env, timeout=120)
        found = re.search(r"shared secret \(shown once\): (\S+)", done.stdout)
        secret = found.group(1) if found else secret
    assert secret, "the README's consumer add should print a generated secret"
    return user, password, secret


def request_token(client: OAuth1Session, base: str) -> dict[str, str]:
    """The request-token step, retried while the server has not yet seen the consumer:
    in the embedded default the CLI appends from its own process and the server's
    projection picks it up within its catch-up interval, 5 s (docs/design.md)."""
    from requests_oauthlib.oauth1_session import TokenRequestDenied

    deadline = time.monotonic() + 30
    while True:
        try:
            return dict(client.fetch_request_token(base + REQUEST))
        except TokenRequestDenied:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def three_legged_dance(base: str, user: str, password: str, secret: str) -> None:
    """Request token (oob), sign in and approve, access token, a signed GET."""
    client = OAuth1Session("my-app", client_secret=secret, callback_uri="oob")
    rt = request_token(client, base)
    assert rt["oauth_callback_confirmed"] == "true"
    browser = s.Browser(base)
    authorize = s.authorize_url(base, rt["oauth_token"])
    login = browser.get(authorize)
    assert "/login" in login.url, login.url
    assert s.parse_forms(login.text)[0]["inputs"].get("csrf_token")
    browser.submit(login, {"username": user, "password": password})
    decision = browser.decide(authorize, user)  # signed in: straight to approve
    assert decision.status_code == 200, decision.text
    verifier = s.element_text(decision.text, "oauth-verifier")
    assert verifier and verifier != "denied"
    access = client.fetch_access_token(base + ACCESS, verifier=verifier)
    assert access["oauth_token"] != rt["oauth_token"]
    resp = client.get(base + MYSELF, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == user
    assert resp.json()["oauth"]["consumerKey"] == "my-app"


@pytest.mark.timeout(400)
def test_wheel_installs_and_runs_the_readme_quick_start(tmp_path: Path) -> None:
    """Build, inspect, install into a fresh venv, run the quick start and a full dance
    with the installed command, then verify the event log it wrote."""
    wheel = build_wheel(tmp_path)
    check_wheel_listing(wheel)
    venv = tmp_path / "venv"
    install(wheel, venv)
    workdir = tmp_path / "quickstart"
    workdir.mkdir()
    env = clean_env(venv)
    check_imports(venv, workdir, env)

    server = start_server(venv, workdir, env)
    try:
        user, password, secret = readme_quickstart(venv, workdir, env)
        three_legged_dance(server.url, user, password, secret)
    finally:
        server.stop()
    assert server.process.proc.returncode == 0, server.process.log_tail()
    assert (workdir / ".oauthledger" / "events.sqlite3").exists()
    verify = run([str(venv / "bin" / "oauthledger"), "events", "verify"], cwd=workdir,
                 env=env, timeout=120)
    intact = re.match(r"intact: (\d+) events", verify.stdout)
    # At least: the user, the consumer, the request token, its approval, the access token.
    assert intact and int(intact.group(1)) >= 5, verify.stdout
