"""Every refusal an admin can cause names the command that fixes it, and that command exists as written
(issue 11, item 1): the knowledge base's resolutions are what the link warning, the refusal pages and
`pomona diagnose` show."""

from __future__ import annotations

import re
import shlex

import click
import pytest

from pomona import knowledge
from pomona.cli.main import main

# The refusals an admin's settings or data cause (decide()'s checks, and the link itself).
ADMIN_CAUSED = (
    "MDM_AUTHORITY_NOT_SET",
    "APNS_CERT_MISSING",
    "APNS_CERT_EXPIRED",
    "USER_NOT_FOUND",
    "USER_DISABLED",
    "USER_NOT_LICENSED",
    "LICENSES_EXHAUSTED",
    "DEVICE_BLOCKED",
    "PLATFORM_BLOCKED",
    "OS_VERSION_TOO_LOW",
    "OS_VERSION_TOO_HIGH",
    "PERSONAL_DEVICE_BLOCKED",
    "DEVICE_ENROLLED_TO_OTHER_USER",
    "DEVICE_LIMIT_REACHED",
    "ENROLLMENT_TOKEN_INVALID",
    "ENROLLMENT_TOKEN_EXPIRED",
)
COMMAND = re.compile(r"`(pomona [^`]+)`")
# Commands the knowledge base names ahead of their issue (none now: `pomona abm assign|profile|release`
# arrived with issue 12's profiles and assignment).
PENDING: set[str] = set()


def resolve(command: str) -> str | None:
    """None when `command` names an existing `pomona` command with options it has, else what is wrong."""
    words = shlex.split(command)[1:]
    cmd: click.Command = main
    path = ["pomona"]
    while isinstance(cmd, click.Group) and words and not words[0].startswith("-"):
        if words[0].isupper() or " ".join([*path[1:], words[0]]) in PENDING:
            return None  # a placeholder (`pomona COMMAND --help`), or a pending command
        sub = cmd.get_command(click.Context(cmd), words[0])
        if sub is None:
            return f"{' '.join(path)} has no command {words[0]!r}"
        path.append(words.pop(0))
        cmd = sub
    known = {"--help"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    if isinstance(cmd, click.Group) and not (words and all(w in known for w in words)):
        return f"{' '.join(path)} needs a command"  # a group alone, unless with its own options
    unknown = [w.split("=", 1)[0] for w in words if w.startswith("--") and w.split("=", 1)[0] not in known]
    return f"{' '.join(path)} has no option {unknown}" if unknown else None


def step_commands(lang: str) -> list[tuple[str, str]]:
    return [
        (code, c)
        for code in sorted(knowledge.codes())
        for step in knowledge.text_for(code, lang).resolution
        for c in COMMAND.findall(step)
    ]


class TestFixCommands:
    @pytest.mark.parametrize("code", ADMIN_CAUSED)
    def test_each_admin_caused_refusal_names_a_command(self, code: str) -> None:
        """The resolution of each refusal an admin can cause names at least one `pomona` command."""
        assert knowledge.fix_commands(code, tenant="acme", upn="ana@acme.example"), code

    def test_fix_commands_fill_the_facts(self) -> None:
        """The commands come in the resolution's order with the facts filled in."""
        assert knowledge.fix_commands("USER_NOT_LICENSED", tenant="acme", upn="ana@acme.example")[0] == (
            "pomona licence assign --tenant acme --user ana@acme.example"
        )
        assert knowledge.fix_commands("ENROLLED_WITH_OTHER_MDM") == ()

    @pytest.mark.parametrize("lang", knowledge.LANGS)
    def test_every_command_in_the_knowledge_base_exists(self, lang: str) -> None:
        """Each `pomona ...` a resolution shows is a real command with real options, in both languages."""
        wrong = [(code, c, why) for code, c in step_commands(lang) if (why := resolve(c)) is not None]
        assert not wrong, wrong

    def test_pending_commands_are_still_pending(self) -> None:
        """Once a pending command exists, it is checked like the others (drop it from PENDING)."""
        for name in PENDING:
            *groups, last = name.split()
            cmd: click.Command | None = main
            for g in groups:
                assert isinstance(cmd, click.Group)
                cmd = cmd.get_command(click.Context(cmd), g)
            assert isinstance(cmd, click.Group) and cmd.get_command(click.Context(cmd), last) is None, name

    def test_the_resolver_finds_a_wrong_command(self) -> None:
        """(The check itself: a missing command, a group alone and a missing option are all caught.)"""
        assert resolve("pomona licence grant --tenant T") is not None
        assert resolve("pomona licence") is not None
        assert resolve("pomona licence assign --tenant T --seat 3") is not None
        assert resolve("pomona licence assign --tenant T --user U") is None
