"""docs/cli.md documents the whole `oauthledger` command line: every command of the click
tree (the root group after ``_register()``, as the console script builds it) has a
section whose heading names it in code (`` `oauthledger consumer add` ``), and that
section — the text under the heading, its subsections included, plus any other section
naming the same command — mentions every option (each of its spellings: ``-n`` and
``--last``, ``--check-chain`` and ``--no-check-chain``) and every argument (``KEY``).

The tree is walked when the test runs, so a command or an option added later fails here
until docs/cli.md describes it; and a reference heading naming a command that no longer
exists fails too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from oauthledger.services.cli.main import _register, cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
ROOT_NAME = "oauthledger"


@dataclass(frozen=True)
class Section:
    """A markdown heading and the text under it, up to the next heading of the same or a
    higher level (so a group's section holds its commands' subsections)."""

    level: int
    heading: str
    body: str

    def names(self) -> set[str]:
        """The command paths the heading names in code spans: `oauthledger X Y` -> "X Y"
        ("" for the root)."""
        spans = re.findall(r"`([^`]+)`", self.heading)
        out = set()
        for span in spans:
            words = span.split()
            if words and words[0] == ROOT_NAME:
                out.add(" ".join(words[1:]))
        return out


def sections(text: str) -> list[Section]:
    """Every heading of ``text`` outside fenced code blocks, with its section's text."""
    lines = text.splitlines()
    heads: list[tuple[int, int, str]] = []  # (line index, level, heading)
    fenced = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        m = re.match(r"(#{1,6}) (.*)", line)
        if m and not fenced:
            heads.append((i, len(m.group(1)), m.group(2).strip()))
    out = []
    for n, (i, level, heading) in enumerate(heads):
        end = len(lines)
        for j, other_level, _ in heads[n + 1:]:
            if other_level <= level:
                end = j
                break
        out.append(Section(level, heading, "\n".join(lines[i:end])))
    return out


def walk(command: click.Command, path: str = "") -> Iterator[tuple[str, click.Command]]:
    """(path, command) for ``command`` and everything below it, hidden ones left out."""
    if command.hidden:
        return
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, f"{path} {name}".strip())


def mentioned(word: str, text: str) -> bool:
    """``word`` (an option spelling or an argument's name) appears in ``text`` as a whole
    token: ``--name`` is not found inside ``--display-name``."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def spellings(param: click.Parameter) -> list[str]:
    """What the page must mention for a parameter: every option string, or the
    argument's name as the usage line shows it (KEY, SERVER_ID)."""
    if isinstance(param, click.Option):
        return [*param.opts, *param.secondary_opts]
    return [param.human_readable_name.upper()]


def missing(tree: list[tuple[str, click.Command]], text: str) -> list[str]:
    """What ``text`` fails to document about ``tree``, one line per command."""
    secs = sections(text)
    problems = []
    for path, command in tree:
        shown = f"`{f'{ROOT_NAME} {path}'.strip()}`"
        bodies = [s.body for s in secs if path in s.names()]
        if not bodies:
            problems.append(f"{shown}: no section whose heading names it")
            continue
        body = "\n".join(bodies)
        lacking = [word for param in command.params if not getattr(param, "hidden", False)
                   for word in spellings(param) if not mentioned(word, body)]
        if lacking:
            problems.append(f"{shown}: its section does not mention {', '.join(lacking)}")
    return problems


@pytest.fixture(scope="module")
def tree() -> Iterator[list[tuple[str, click.Command]]]:
    """The command tree as the console script builds it; the root group is put back as
    it was afterwards (other tests register only some groups on the same object)."""
    before = dict(cli.commands)
    _register()
    try:
        yield list(walk(cli))
    finally:
        cli.commands.clear()
        cli.commands.update(before)


def test_every_command_option_and_argument_is_in_docs_cli_md(
        tree: list[tuple[str, click.Command]]) -> None:
    problems = missing(tree, DOC.read_text())
    assert not problems, "docs/cli.md is missing:\n" + "\n".join(problems)


def test_every_command_heading_names_a_command_that_exists(
        tree: list[tuple[str, click.Command]]) -> None:
    """A section for a command that was renamed or removed is stale: it fails too."""
    paths = {path for path, _ in tree}
    stale = sorted({name for s in sections(DOC.read_text()) for name in s.names()} - paths)
    assert not stale, f"docs/cli.md has sections for commands that do not exist: {stale}"


def test_the_walk_sees_the_real_tree(tree: list[tuple[str, click.Command]]) -> None:
    """The walk reaches nested commands and their options (so the checks above are not
    vacuous): consumer add and its --generate-secret, the root's --version."""
    commands = dict(tree)
    assert "consumer add" in commands and "events tail" in commands
    assert "--generate-secret" in spellings(next(
        p for p in commands["consumer add"].params if p.name == "generate_secret"))
    assert any("--version" in spellings(p) for p in commands[""].params)


def test_the_check_finds_what_is_missing() -> None:
    """An undocumented command, option spelling or argument is reported, and an option
    is not found inside a longer one."""

    @click.group(name=ROOT_NAME)
    def root() -> None:
        """Root."""

    @root.command("thing")
    @click.argument("thing_id")
    @click.option("-n", "--name")
    @click.option("--check/--no-check", default=True)
    def thing(thing_id: str, name: str, check: bool) -> None:
        """A thing."""

    @root.command("other")
    def other() -> None:
        """Another."""

    tree = list(walk(root))
    text = ("# `oauthledger`\n\n## `oauthledger thing`\n\n`--display-name`, `--check`\n\n"
            "## Elsewhere\n\nTHING_ID, -n, --name, --no-check\n")
    assert missing(tree, text) == [
        "`oauthledger other`: no section whose heading names it",
        "`oauthledger thing`: its section does not mention THING_ID, -n, --name, --no-check",
    ]
    complete = ("# `oauthledger`\n\n## `oauthledger thing`\n\nTHING_ID, `-n, --name`, "
                "`--check/--no-check`\n\n## `oauthledger other`\n\nnothing to say\n")
    assert missing(tree, complete) == []
