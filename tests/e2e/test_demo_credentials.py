"""`pomona demo`: a random portal password per data folder, and one admin token reused by every run."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import free_port
from pomona.app import Settings, build
from pomona.cli.demo import CREDENTIALS_FILE
from pomona.cli.main import main


def run_demo(data_dir: Path) -> str:
    args = [
        "demo",
        "--data-dir",
        str(data_dir),
        "--devices",
        "0",
        "--exit-after-setup",
        "--port",
        str(free_port()),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res.output


class TestDemoCredentials:
    def test_password_is_random_and_token_reused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two runs on one folder print the same stored password and token; no fixed password, one token."""
        monkeypatch.delenv("POMONA_DATABASE_URL", raising=False)
        monkeypatch.setenv("POMONA_LANG", "en")
        first, second = run_demo(tmp_path), run_demo(tmp_path)
        creds = json.loads((tmp_path / CREDENTIALS_FILE).read_text())
        assert stat.S_IMODE((tmp_path / CREDENTIALS_FILE).stat().st_mode) == 0o600
        assert creds["portal_password"] != "pomona-demo" and len(creds["portal_password"]) >= 12
        for out in (first, second):
            assert creds["portal_password"] in out and creds["admin_token"] in out
        assert "pomona-demo" not in first
        p = build(Settings.from_env(data_dir=tmp_path))
        try:
            assert len(p.admin.list_api_tokens("demo")) == 1
            p.admin.authenticate_api_token(creds["admin_token"])
        finally:
            p.close()
        other = tmp_path / "other"
        run_demo(other)
        assert (
            json.loads((other / CREDENTIALS_FILE).read_text())["portal_password"] != creds["portal_password"]
        )
