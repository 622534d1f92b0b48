"""The commands docs/security.md shows are run literally, as an operator would type them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import setup_tenant
from pomona.app import Settings, build

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def shell_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "docs" / "security.md").read_text("utf-8"))


class TestSecurityDoc:
    def test_the_rotation_procedure_runs(self, tmp_path: Path) -> None:
        """Each shell block of docs/security.md runs as written on a stopped server's data folder: the key
        changes and the server starts with the new one."""
        blocks = shell_blocks()
        assert blocks == ["pomona server rotate-key\n"]
        data = tmp_path / "data"
        p = build(Settings(data_dir=data))
        setup_tenant(p, push=False)
        secret = p.portal.session_secret()
        p.close()
        before = (data / "server.key").read_bytes()
        env = {**os.environ, "POMONA_DATA_DIR": str(data)}
        env.pop("POMONA_DATABASE_URL", None)
        env.pop("POMONA_SECRET_KEY", None)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
        for block in blocks:
            done = subprocess.run(
                ["bash", "-e", "-c", block], env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
        assert (data / "server.key").read_bytes() != before
        p = build(Settings(data_dir=data))
        try:
            assert p.portal.session_secret() == secret
        finally:
            p.close()
