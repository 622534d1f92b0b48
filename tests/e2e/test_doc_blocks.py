"""Every command sequence README.md and docs/*.md show is run, literally, by a test.

Each ```sh (bash, shell, console, zsh) block of README.md and docs/*.md must be in REGISTRY, keyed by its
file and its index among that file's shell blocks, with its first line (so that a moved or edited block
is noticed) and who runs it:

- ``"tests/e2e/FILE.py::Class::test"``: a test that extracts the block from the doc and runs it (the test
  must exist, and its module must name the doc's file);
- ``"ci:.ci/run:COMMAND"``: COMMAND, a line of the block, is what CI runs (`.ci/run` must contain it);
- the cheap ones run here, in TestCheapBlocks.

A block not in the registry fails the suite, naming the file, the index and its first line, unless
the registry has no entry for its file at all and a test module reads that file's shell blocks itself
(it names the file and extracts ```sh blocks, as test_push_certificate_doc.py does): a doc another
branch adds with its own test passes here until it is registered. Entries for files that do not exist
are ignored, so a registry can name them ahead. An untagged block that looks like commands must be
tagged: ```sh (and registered) or ```text (a synopsis).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from doc_blocks import ROOT, Background, Block, Terminal, fences, fresh_clone, python_env, shell_blocks
from helpers import LiveServer, free_port, setup_tenant, start_server
from pomona.app import Settings, build

HERE = "tests/e2e/test_doc_blocks.py"
README_REAL = (
    "tests/e2e/test_readme_real_server.py::TestReadmeRealServer::test_the_block_ends_with_a_device_enrolled"
)
GETTING_STARTED = (
    "tests/e2e/test_getting_started.py::TestGettingStarted::test_the_walkthrough_runs_as_written"
)
ADE_LAB = "tests/e2e/test_ade_lab_doc.py::TestAdeLabDoc::test_the_lab_runs_as_written"
PUSH_DOC = "tests/e2e/test_push_certificate_doc.py::TestPushCertificateDoc::test_the_whole_path_runs"

# (file, index among its shell blocks) -> (its first line, who runs it)
REGISTRY: dict[tuple[str, int], tuple[str, tuple[str, ...]]] = {
    ("README.md", 0): (
        "./scripts/demo    # creates .venv, installs Pomona, runs the demo server on SQLite with virtual devices",
        (f"{HERE}::TestCheapBlocks::test_readme_quick_start_demo", "ci:.ci/run:./scripts/test"),
    ),
    ("README.md", 1): (".venv/bin/pomona tenant create acme --domain acme.example", (README_REAL,)),
    ("README.md", 2): (
        ".venv/bin/pomona simulate --enroll-url URL --devices 100 --concurrency 8 --json",
        (f"{HERE}::TestCheapBlocks::test_readme_load_test",),
    ),
    ("docs/push-certificate.md", 0): (
        "pomona apns csr --tenant acme --email it-admin@acme.example --out acme-push.csr",
        (PUSH_DOC,),
    ),
    ("docs/push-certificate.md", 1): (
        "pomona apns csr --tenant acme --email it-admin@acme.example \\",
        (PUSH_DOC,),
    ),
    ("docs/push-certificate.md", 2): (
        "pomona apns upload --tenant acme --cert acme-push.pem --apple-id it-admin@acme.example",
        (PUSH_DOC,),
    ),
    ("docs/push-certificate.md", 3): (
        "pomona apns upload --tenant acme --cert acme-push.pem --apple-id it-admin@acme.example",
        (PUSH_DOC,),
    ),
    ("docs/push-certificate.md", 4): (
        "pomona apns upload --tenant acme --cert acme-push.pem --apple-id it-admin@acme.example \\",
        (PUSH_DOC,),
    ),
    ("docs/security.md", 0): (
        "pomona server rotate-key",
        ("tests/e2e/test_security_doc.py::TestSecurityDoc::test_the_rotation_procedure_runs",),
    ),
    ("docs/ade.md", 0): (
        "pomona emulate abm --port 8444 --devices 1000 --serial-prefix ACME --state-dir abm-lab --tls",
        (ADE_LAB,),
    ),
    ("docs/ade.md", 1): (
        "export POMONA_ABM_URL=https://127.0.0.1:8444 POMONA_ABM_CA=abm-lab/ca.pem",
        (ADE_LAB,),
    ),
    ("docs/ade.md", 2): (
        "export POMONA_ABM_URL=https://127.0.0.1:8444 POMONA_ABM_CA=abm-lab/ca.pem",
        (ADE_LAB,),
    ),
    ("docs/ade.md", 3): (
        "pomona simulate --ade --abm-url $POMONA_ABM_URL --abm-ca abm-lab/ca.pem --serial ACME00000000 "
        "--device-ca abm-lab/device-ca --insecure",
        (ADE_LAB,),
    ),
    ("docs/scaling.md", 0): (
        "PYTHONPATH=src .venv/bin/python bench/capacity.py --model docs/scaling-figures.json",
        ("tests/unit/test_scaling_doc.py::test_the_doc_command_prints_its_tables",),
    ),
    ("docs/getting-started.md", 0): ("./scripts/demo", (GETTING_STARTED,)),
    ("docs/getting-started.md", 1): (
        ".venv/bin/pomona emulate apns --port 2197 --state-dir lab/apns",
        (GETTING_STARTED,),
    ),
    ("docs/getting-started.md", 2): ("export POMONA_DATA_DIR=$PWD/lab/data", (GETTING_STARTED,)),
    ("docs/getting-started.md", 3): ("export POMONA_DATA_DIR=$PWD/lab/data", (GETTING_STARTED,)),
    ("docs/getting-started.md", 4): (
        '.venv/bin/pomona simulate --enroll-url "$(cat ana-link.txt)" --devices 1',
        (GETTING_STARTED,),
    ),
    ("docs/getting-started.md", 5): (
        ".venv/bin/pomona user create --tenant acme --upn bo@acme.example --no-licence",
        (GETTING_STARTED,),
    ),
    ("docs/getting-started.md", 6): (
        '.venv/bin/pomona simulate --enroll-url "$(cat bo-link.txt)" --devices 1',
        (GETTING_STARTED,),
    ),
    ("docs/getting-started.md", 7): (
        ".venv/bin/pomona licence assign --tenant acme --user bo@acme.example",
        (GETTING_STARTED,),
    ),
}
# The first words of a command line in our docs: an untagged block starting so must say what it is.
LOOKS_LIKE_COMMANDS = re.compile(r"^(\$ |pomona |\.venv/|\./scripts/|curl |export |sudo |systemctl |python)")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def all_blocks(root: Path = ROOT) -> list[Block]:
    return [b for f in doc_files(root) for b in shell_blocks(f, root)]


def readers(file: str, root: Path = ROOT) -> list[str]:
    """The test modules (but this one) that read ``file``'s shell blocks themselves: they name the file and
    extract its ```sh blocks (a ```sh pattern, or doc_blocks.shell_blocks)."""
    name = Path(file).name
    found = []
    for module in sorted((root / "tests").rglob("test_*.py")):
        text = module.read_text("utf-8")
        if module.name != Path(HERE).name and name in text and ("```sh" in text or "shell_blocks(" in text):
            found.append(module.relative_to(root).as_posix())
    return found


def uncovered(
    blocks: list[Block],
    registry: dict[tuple[str, int], tuple[str, tuple[str, ...]]],
    root: Path = ROOT,
) -> list[str]:
    """What is wrong with the coverage of ``blocks``: one line per block, naming it."""
    problems = []
    registered = {file for file, _ in registry}
    for b in blocks:
        entry = registry.get((b.file, b.index))
        if entry is None and b.file not in registered and readers(b.file, root):
            continue  # read by its own test; registering it here makes the check exact
        if entry is None:
            problems.append(
                f"{b} is run by no test: run it literally in a test and add "
                f"({b.file!r}, {b.index}): ({b.first_line!r}, ('tests/...::Test::test',)) to REGISTRY in {HERE}"
            )
        elif entry[0] != b.first_line:
            problems.append(f"{b}: REGISTRY expects it to start with {entry[0]!r} (was it moved or edited?)")
    return problems


def runner_problem(runner: str) -> str | None:
    """None when ``runner`` exists as the registry says, else why not."""
    if runner.startswith("ci:"):
        _, path, command = runner.split(":", 2)
        lines = [ln.strip() for ln in (ROOT / path).read_text("utf-8").splitlines()]
        return (
            None
            if any(ln.endswith(command) for ln in lines if not ln.startswith("#"))
            else f"{path} does not run {command!r}"
        )
    path, *names = runner.split("::")
    module = ROOT / path
    if not module.is_file():
        return f"{path} does not exist"
    tree = ast.parse(module.read_text("utf-8"))
    scope: list[ast.stmt] = tree.body
    for name in names:
        found = [n for n in scope if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == name]
        if not found:
            return f"{runner}: no {name!r} in {path}"
        scope = found[0].body
    return None


class TestDocBlocks:
    def test_every_shell_block_is_run_by_a_test(self) -> None:
        """Each shell block of README.md and docs/*.md is in the registry, with the first line it has."""
        problems = uncovered(all_blocks(), REGISTRY)
        assert not problems, "\n".join(problems)

    def test_every_runner_exists(self) -> None:
        """Each test the registry names exists and reads the doc it runs; each CI command is in .ci/run."""
        problems = []
        for (file, index), (_, runners) in REGISTRY.items():
            if not (ROOT / file).is_file():
                continue  # a doc another branch adds
            for runner in runners:
                if (why := runner_problem(runner)) is not None:
                    problems.append(f"{file} block #{index}: {why}")
                elif not runner.startswith("ci:") and not runner.startswith(HERE):
                    text = (ROOT / runner.split("::")[0]).read_text("utf-8")
                    if Path(file).name not in text:
                        problems.append(f"{file} block #{index}: {runner.split('::')[0]} never names {file}")
        assert not problems, "\n".join(problems)

    def test_untagged_commands_are_tagged(self) -> None:
        """An untagged block that starts like a command line is either ```sh (and run) or ```text."""
        bad = [
            f"{f.relative_to(ROOT)}: an untagged block starts with {text.splitlines()[0]!r}: tag it ```sh or ```text"
            for f in doc_files()
            for lang, text in fences(f)
            if not lang and text.strip() and LOOKS_LIKE_COMMANDS.match(text.lstrip())
        ]
        assert not bad, "\n".join(bad)

    def test_the_check_names_what_is_missing(self, tmp_path: Path) -> None:
        """(The check itself: an unregistered block, an edited one and a missing test are each named.)"""
        (tmp_path / "docs").mkdir()
        (tmp_path / "README.md").write_text("# x\n\n```sh\necho one\n```\n\n```bash\necho two\n```\n")
        (tmp_path / "docs" / "new.md").write_text(
            "text\n```console\npomona thing\n```\n```text\nnot run\n```\n"
        )
        blocks = all_blocks(tmp_path)
        assert [(b.file, b.index, b.first_line) for b in blocks] == [
            ("README.md", 0, "echo one"),
            ("README.md", 1, "echo two"),
            ("docs/new.md", 0, "pomona thing"),
        ]
        registry: dict[tuple[str, int], tuple[str, tuple[str, ...]]] = {
            ("README.md", 0): ("echo one", ()),
            ("README.md", 1): ("echo 2", ()),
        }
        problems = uncovered(blocks, registry, tmp_path)
        assert len(problems) == 2
        assert "REGISTRY expects it to start with 'echo 2'" in problems[0]
        assert "docs/new.md shell block #0 ('pomona thing') is run by no test" in problems[1]
        # a test module of its own that reads docs/new.md's shell blocks covers it until it is registered
        (tmp_path / "tests").mkdir()
        (tmp_path / "tests" / "test_new_doc.py").write_text('DOC = "docs/new.md"; BLOCK = "```sh"\n')
        assert len(uncovered(blocks, registry, tmp_path)) == 1
        registry[("docs/new.md", 1)] = ("pomona other", ())  # once registered, every block must be
        assert len(uncovered(blocks, registry, tmp_path)) == 2
        assert runner_problem("tests/e2e/test_doc_blocks.py::TestDocBlocks::nope") is not None
        assert runner_problem("tests/e2e/nope.py::T::t") is not None
        assert runner_problem("ci:.ci/run:./scripts/nope") is not None
        assert runner_problem("ci:.ci/run:./scripts/test") is None


@pytest.fixture
def fleet_server(tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    """A live server with a tenant whose user (a device enrollment manager) has a link for 100 devices."""
    port = free_port()
    p = build(Settings(data_dir=tmp_path / "data", public_url=f"http://127.0.0.1:{port}"))
    try:
        setup = setup_tenant(p, "acme", uses=100)
        p.policy.set_user_flags("acme", setup.upn, is_dem=True)
    finally:
        p.close()
    server = start_server(tmp_path / "data", port=port)
    try:
        yield server, setup.enroll_url
    finally:
        server.stop()


class TestCheapBlocks:
    def test_readme_quick_start_demo(self, tmp_path: Path) -> None:
        """The quick start's `./scripts/demo` in a fresh clone (installed once) prints its banner and serves;
        Ctrl-C stops it. (Its port is given with --port: 8080 may be taken. `./scripts/test` is CI's.)"""
        readme = shell_blocks(ROOT / "README.md")[0]
        [demo] = [
            ln.split("#", 1)[0].strip() for ln in readme.text.splitlines() if ln.startswith("./scripts/demo")
        ]
        clone = fresh_clone(tmp_path / "pomona")
        port = free_port()
        run = Background(f"{demo} --port {port}\n", clone, python_env(), "demo")
        try:
            run.wait_for(lambda: "export POMONA_DATA_DIR=" in run.output(), what="the banner")
            assert httpx.get(f"http://127.0.0.1:{port}/portal/demo/signin", timeout=5).status_code == 200
            assert run.interrupt() in (0, 130, -2), run.output()
        finally:
            run.stop()
        assert "Traceback" not in run.output(), run.output()
        assert (clone / "pomona-data" / "demo").is_dir()  # the folder the README names

    def test_readme_load_test(self, tmp_path: Path, fleet_server: tuple[LiveServer, str]) -> None:
        """The README's load test enrolls 100 virtual devices through one link (URL: that link) and prints JSON."""
        _, link = fleet_server
        block = shell_blocks(ROOT / "README.md")[2].text
        assert block.count("URL") == 1
        terminal = Terminal(fresh_clone(tmp_path / "pomona"), python_env(), "load")
        try:
            out, err, failed = terminal.run(block.replace("URL", link), timeout=600)
        finally:
            terminal.close()
        assert not failed, out + err
        summary = json.loads(out)
        assert summary["enrolled"] == 100 and not summary["failed"], summary
