"""`pomona demo`'s banner names its data folder, the portal and the sign-in, and what to export so that the
CLI sees the demo tenant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import free_port
from pomona.cli.demo import DEMO_USER
from pomona.cli.main import main
from pomona.i18n import set_process_lang

ROOT = Path(__file__).resolve().parents[2]


def run_demo(data_dir: Path, port: int, lang: str = "en") -> str:
    previous = set_process_lang(lang)  # what the CLI reads from POMONA_LANG when it starts
    try:
        return _run_demo(data_dir, port)
    finally:
        set_process_lang(previous)


def _run_demo(data_dir: Path, port: int) -> str:
    args = ["demo", "--data-dir", str(data_dir), "--devices", "0", "--exit-after-setup", "--port", str(port)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res.output


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POMONA_")}
    env["POMONA_LANG"] = "en"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


class TestDemoFolder:
    def test_the_banner_export_lets_the_cli_find_the_demo(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Run in another folder with only the banner's export line, tenant list and diagnose find the demo."""
        monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
        port = free_port()
        data = tmp_path / "demo data"
        out = run_demo(data, port)
        exports = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("export POMONA_DATA_DIR=")]
        assert len(exports) == 1, out
        assert f"Data folder: {data.resolve()}" in out
        assert f"http://127.0.0.1:{port}/portal/demo/signin" in out
        assert f"Portal sign-in: {DEMO_USER} / " in out
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        script = f"{exports[0]}\npomona tenant list\npomona diagnose --tenant demo --user {DEMO_USER}\n"
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=elsewhere,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "No tenants yet" not in done.stdout
        assert "demo.pomona.example" in done.stdout
        assert DEMO_USER in done.stdout
        assert not (elsewhere / "pomona-data").exists()

    def test_the_banner_in_chinese(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With POMONA_LANG=zh-CN the banner names the folder, the export, the portal and the sign-in."""
        monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
        port = free_port()
        out = run_demo(tmp_path, port, "zh-CN")
        assert f"数据文件夹：{tmp_path.resolve()}" in out
        assert f"export POMONA_DATA_DIR={tmp_path.resolve()}" in out
        assert f"用户门户：  http://127.0.0.1:{port}/portal/demo/signin" in out
        assert f"门户登录：{DEMO_USER} / " in out
