"""docs/ade.md's lab, run literally: the ABM emulator over TLS with 1,000 devices, a tenant connected to it
(key pair, token, sync, default profile), the server in test mode, and a virtual device through Setup
Assistant, held and released; then the helpdesk's view of it.

Substituted, and only these: the ports 8444 (the emulator) and 8443 (the server) become free ports. The
tenant `acme` with its push certificate is made beforehand, as the doc assumes. The three terminals are
bash sessions; a block's exports stay for the next block of its terminal, as when a person pastes them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx

from doc_blocks import ROOT, Background, Terminal, python_env, shell_blocks
from helpers import free_port, setup_tenant
from pomona.app import Settings, build

DOC = ROOT / "docs" / "ade.md"
EMULATOR, CONNECT, SERVE, UNBOX = range(4)


class TestAdeLabDoc:
    def test_the_lab_runs_as_written(self, tmp_path: Path) -> None:
        """Every shell block of docs/ade.md runs as written: 1,000 devices synced and given the default
        profile, then ACME00000000 enrolls by ADE, is held at Setup Assistant and released."""
        blocks = [b.text for b in shell_blocks(DOC)]
        assert len(blocks) == 4, [b.splitlines()[0] for b in blocks]
        data, work = tmp_path / "data", tmp_path / "lab"
        work.mkdir()
        p = build(Settings(data_dir=data))
        try:
            setup_tenant(p, "acme")  # "a tenant acme that has its push certificate"
        finally:
            p.close()
        abm_port, port = free_port(), free_port()

        def local(block: str) -> str:
            return block.replace("8444", str(abm_port)).replace("8443", str(port))

        env = python_env(
            POMONA_DATA_DIR=str(data),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        running: list[Background] = []
        admin = Terminal(work, env, "terminal-2")
        try:
            emulator = Background(local(blocks[EMULATOR]), work, env, "terminal-1")
            running.append(emulator)
            emulator.wait_for(
                lambda: (work / "abm-lab/device-ca/ca.pem").exists() and str(abm_port) in emulator.output(),
                what="the emulator's banner",
            )
            out, err, failed = admin.run(local(blocks[CONNECT]))
            assert not failed and "Traceback" not in out + err, out + err
            assert "1000" in out, out  # the sync and the default profile's assignment

            server = Background(local(blocks[SERVE]), work, env, "terminal-3")
            running.append(server)
            server.wait_for(
                lambda: (
                    httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=1).status_code == 200
                ),
                what="serving",
            )

            out, err, failed = admin.run(local(blocks[UNBOX]))
            assert not failed and "Traceback" not in out + err, out + err
            assert "ACME00000000 enrolled and released from Setup Assistant" in out, out
            assert "pushed" in out and "tokenupdate" in out, out  # ABM's state and the server's events
        finally:
            admin.close()
            for process in running:
                process.stop()
        for process in running:
            assert "Traceback" not in process.output(), process.output()
        # The device, as the API sees it: enrolled by ADE, no longer held.
        p = build(Settings(data_dir=data))
        try:
            view = p.commands.device("acme", "ACME00000000")
            assert view.enrollment is not None and view.enrollment.type.value == "ade"
            assert not view.enrollment.awaiting_configuration
            assert json.dumps([c.request_type for c in view.commands]).count("DeviceConfigured") >= 1
        finally:
            p.close()
