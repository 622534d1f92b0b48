"""Running the documentation's shell blocks literally: finding them, a fresh clone to run them in, and a
terminal that keeps its environment from one block to the next (importable: tests/ is on pythonpath).

Used by tests/e2e/test_doc_blocks.py (every block is covered), test_getting_started.py and
test_readme_real_server.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHELL_LANGS = frozenset({"sh", "bash", "shell", "console", "zsh"})
_FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file: its file (relative to the repository), its index among that
    file's shell blocks (0-based), its language tag and its text."""

    file: str
    index: int
    lang: str
    text: str

    @property
    def first_line(self) -> str:
        return next((ln.strip() for ln in self.text.splitlines() if ln.strip()), "")

    def __str__(self) -> str:
        return f"{self.file} shell block #{self.index} ({self.first_line!r})"


def fences(path: Path) -> list[tuple[str, str]]:
    """(language tag, text) of every fenced block of a Markdown file, in order."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(path.read_text("utf-8"))]


def shell_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """The file's ```sh (bash, shell, console, zsh) blocks."""
    rel = path.relative_to(root).as_posix()
    shells = [text for lang, text in fences(path) if lang in SHELL_LANGS]
    return [Block(rel, i, "sh", text) for i, text in enumerate(shells)]


def block_starting(path: Path, first_line: str) -> Block:
    """The file's one shell block whose first line starts with ``first_line``."""
    found = [b for b in shell_blocks(path) if b.first_line.startswith(first_line)]
    assert len(found) == 1, f"{path.name}: {len(found)} shell blocks start with {first_line!r}"
    return found[0]


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a new admin's shell: no POMONA_* variable (but ``extra``), this checkout's
    sources first on the path, English messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POMONA_")}
    env.update(POMONA_LANG="en", PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def fresh_clone(folder: Path) -> Path:
    """A folder shaped like a fresh clone in which `./scripts/demo` has installed Pomona once: scripts/,
    pyproject.toml and README.md copied, and a `.venv` of its own (its pyvenv.cfg, `bin/python` and
    `bin/pomona`) over the test run's site-packages, stamped as installed so the scripts do not reinstall.
    With ``python_env()``, `.venv/bin/pomona` runs this checkout's sources."""
    venv = Path(sys.prefix)
    if not (venv / "pyvenv.cfg").is_file():
        from helpers import missing

        missing("the tests do not run in a virtual environment (./scripts/test makes .venv)")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "scripts", folder / "scripts")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, folder / name)
    ours = folder / ".venv"
    (ours / "bin").mkdir(parents=True)
    shutil.copy2(venv / "pyvenv.cfg", ours / "pyvenv.cfg")
    for lib in ("lib", "lib64"):
        if (venv / lib).exists():
            (ours / lib).symlink_to((venv / lib).resolve(), target_is_directory=True)
    python = ours / "bin" / "python"
    python.symlink_to(Path(sys.executable).resolve())
    pomona = ours / "bin" / "pomona"
    pomona.write_text(f"#!{python}\nimport sys\nfrom pomona.cli.main import main\nsys.exit(main())\n")
    pomona.chmod(0o755)
    old = time.time() - 3600
    os.utime(folder / "pyproject.toml", (old, old))
    (ours / ".stamp-install").touch()
    return folder


class Terminal:
    """A bash session that runs blocks one after the other, as a person pastes them: variables exported
    by one block stay for the next. Every command that fails is recorded (an ERR trap), so a block's
    unexpected failure is named even when a later command of the block succeeds."""

    def __init__(self, cwd: Path, env: dict[str, str], name: str = "terminal") -> None:
        self.cwd = cwd
        self.out, self.err = cwd / f"{name}.out", cwd / f"{name}.err"
        self._runs = 0
        self._process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=self.out.open("wb"),
            stderr=self.err.open("wb"),
            start_new_session=True,
        )
        self._send("trap 'echo \"__FAILED__ $BASH_COMMAND\" >&2' ERR\n")

    def _send(self, text: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(text.encode("utf-8"))
        self._process.stdin.flush()

    def run(self, block: str, timeout: float = 180) -> tuple[str, str, list[str]]:
        """Run ``block``: (its stdout, its stderr, the commands that failed)."""
        self._runs += 1
        script = self.cwd / f".block-{self._runs}.sh"
        script.write_text(block, "utf-8")
        start_out, start_err = self.out.stat().st_size, self.err.stat().st_size
        done = f"__DONE__ {self._runs}"
        self._send(f"source {script}\necho '{done}'; echo '{done}' >&2\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.out.read_bytes()[start_out:].decode("utf-8", "replace")
            err = self.err.read_bytes()[start_err:].decode("utf-8", "replace")
            if done in out and done in err:
                failed = [
                    ln.removeprefix("__FAILED__ ") for ln in err.splitlines() if ln.startswith("__FAILED__")
                ]
                return out.replace(done, "").strip(), err.replace(done, "").strip(), failed
            if self._process.poll() is not None:
                raise AssertionError(f"the terminal exited ({self._process.returncode}):\n{out}\n{err}")
            time.sleep(0.1)
        raise AssertionError(f"the block did not finish in {timeout}s:\n{block}")

    def close(self) -> None:
        stop_group(self._process)


class Background:
    """A block that keeps running (a server), under bash in its own process group."""

    def __init__(self, block: str, cwd: Path, env: dict[str, str], name: str) -> None:
        self.out, self.err = cwd / f"{name}.out", cwd / f"{name}.err"
        self.process = subprocess.Popen(
            ["bash", "-e", "-c", block],
            cwd=cwd,
            env=env,
            stdout=self.out.open("wb"),
            stderr=self.err.open("wb"),
            start_new_session=True,
        )

    def output(self) -> str:
        return self.out.read_text("utf-8", "replace") + self.err.read_text("utf-8", "replace")

    def wait_for(self, ready: object, timeout: float = 120, what: str = "ready") -> None:
        """Wait until ``ready()`` is true; fail with the output if the block stops first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"stopped (exit {self.process.returncode}) before {what}:\n{self.output()}"
                )
            try:
                if ready():  # type: ignore[operator]
                    return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"not {what} after {timeout}s:\n{self.output()}")

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C, as a person stops it; the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_group(self.process)
        return int(self.process.returncode)

    def stop(self) -> None:
        stop_group(self.process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the process and everything it started (its own process group)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        except ProcessLookupError:
            pass
