"""The shell blocks of docs/operations.md, run literally against a real `pomona serve`, as an operator
would type them (the public URL in POMONA_PUBLIC_URL, the data folder in POMONA_DATA_DIR)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import LiveServer, TenantSetup
from pomona.testing.virtual_device import VirtualDevice

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def shell_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "docs" / "operations.md").read_text("utf-8"))


@pytest.fixture
def served(live_sqlite: tuple[LiveServer, TenantSetup]) -> tuple[LiveServer, TenantSetup]:
    """The e2e suite's live server (SQLite) with its tenant."""
    return live_sqlite


def run(block: str, server: LiveServer, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POMONA_")}
    env["POMONA_DATA_DIR"] = str(server.data_dir)
    env["POMONA_PUBLIC_URL"] = server.url
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


class TestOperationsDoc:
    def test_the_doc_has_the_blocks_this_test_knows(self) -> None:
        """The two shell blocks (metrics with a token, doctor) are the ones run below."""
        blocks = shell_blocks()
        assert len(blocks) == 2
        assert "pomona token create --server" in blocks[0] and "pomona doctor" in blocks[1]

    def test_metrics_with_a_server_token(
        self, served: tuple[LiveServer, TenantSetup], tmp_path: Path
    ) -> None:
        """The metrics block creates a server-wide token and reads the enrollment counter with it, after
        a virtual device enrolled."""
        server, setup = served
        with VirtualDevice(setup.enroll_url) as device:
            device.enroll()
        done = run(shell_blocks()[0], server, tmp_path)
        assert done.returncode == 0, done.stderr
        (line,) = done.stdout.splitlines()
        name, value = line.split()
        assert name == "pomona_enrollments_completed_total" and float(value) >= 1

    def test_doctor_for_people_and_scripts(
        self, served: tuple[LiveServer, TenantSetup], tmp_path: Path
    ) -> None:
        """The doctor block runs as written on a healthy local server (exit 0), writes doctor.json, and
        jq lists only the checks that are not ok (the skipped DNS of a loopback URL)."""
        server, _ = served
        done = run(shell_blocks()[1], server, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads((tmp_path / "doctor.json").read_text())
        assert report["ok"] is True
        checks = {c["check"]: c["status"] for c in report["checks"]}
        assert checks["public_url"] == checks["clock"] == checks["database"] == "ok"
        assert "Public URL" in done.stdout  # the table, then jq's lines
        lines = [x for x in done.stdout.splitlines() if x and x[0] not in "┏┃┡│└"]
        assert "dns acme skipped" in lines and all(x.startswith("dns ") for x in lines)
