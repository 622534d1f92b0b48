"""Apple Business Manager through the real CLI and the ABM emulator over HTTP: key pair, token upload,
sync (full, then the cursor), and a scenario for each sync failure the emulator can be told to make."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import cli
from pomona.testing.abm_emulator import AbmEmulator, AbmEmulatorServer

TENANT = "acme"


@pytest.fixture
def abm(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AbmEmulator, AbmEmulatorServer]]:
    """An ABM emulator with 25 devices, served over HTTP; Pomona reaches it through POMONA_ABM_URL."""
    emu = AbmEmulator(devices=25, serial_prefix="ACME")
    server = emu.serve_in_thread()
    monkeypatch.setenv("POMONA_ABM_URL", server.url)
    yield emu, server
    server.close()


def run(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str) -> tuple[int, object]:
    """`pomona ARGS --json`: (exit code, the JSON it printed)."""
    code, out = cli(monkeypatch, db_url, *args, "--json")
    return code, json.loads(out.strip().splitlines()[-1] if code else out)


def has_event(monkeypatch: pytest.MonkeyPatch, db_url: str, reason: str) -> bool:
    """Whether the tenant's event log holds a failure with this reason code."""
    code, out = cli(monkeypatch, db_url, "events", "--tenant", TENANT, "--code", reason, "--json")
    return code == 0 and any(e["reason"] == reason for e in json.loads(out))


def enrolled_token(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, emu: AbmEmulator, *, days: int = 365
) -> Path:
    """A tenant with its ABM key pair, and a token the emulator issued to its certificate (not uploaded)."""
    assert cli(monkeypatch, db_url, "tenant", "create", TENANT, "--domain", "acme.example")[0] == 0
    cert = tmp_path / "abm-cert.pem"
    code, _ = run(monkeypatch, db_url, "abm", "keypair", "--tenant", TENANT, "--out", str(cert))
    assert code == 0
    from datetime import timedelta

    p7m = tmp_path / "token.p7m"
    p7m.write_bytes(emu.issue_token(cert.read_bytes(), expires_in=timedelta(days=days)))
    return p7m


def uploaded(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, emu: AbmEmulator) -> None:
    p7m = enrolled_token(monkeypatch, db_url, tmp_path, emu)
    code, out = run(monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m))
    assert code == 0, out


class TestTokens:
    def test_keypair_upload_list_remove(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """The key pair is made once; a token ABM encrypted to it is accepted, listed, named and removed."""
        emu, _ = abm
        p7m = enrolled_token(monkeypatch, db_url, tmp_path, emu)
        code, again = run(monkeypatch, db_url, "abm", "keypair", "--tenant", TENANT)
        assert code == 0 and again["made"] is False  # type: ignore[index]
        code, out = run(
            monkeypatch,
            db_url,
            "abm",
            "token",
            "upload",
            "--tenant",
            TENANT,
            "--file",
            str(p7m),
            "--name",
            "main",
        )
        assert code == 0 and out["name"] == "main" and out["state"] == "ok"  # type: ignore[index]
        code, listed = run(monkeypatch, db_url, "abm", "token", "list", "--tenant", TENANT)
        assert code == 0 and [t["name"] for t in listed] == ["main"]  # type: ignore[union-attr]
        assert "consumer_secret" not in json.dumps(listed) and "access_secret" not in json.dumps(listed)
        code, _ = run(monkeypatch, db_url, "abm", "token", "remove", "--tenant", TENANT, "--name", "main")
        assert code == 0
        assert run(monkeypatch, db_url, "abm", "token", "list", "--tenant", TENANT)[1] == []

    @pytest.mark.parametrize("cipher", ["aes128_cbc", "tripledes_3key"])
    def test_other_ciphers_open(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
        cipher: str,
    ) -> None:
        """AES-128 (cryptography) and 3DES (our CMS module) tokens open as AES-256 ones do."""
        emu, _ = abm
        enrolled_token(monkeypatch, db_url, tmp_path, emu)
        p7m = tmp_path / "other.p7m"
        p7m.write_bytes(emu.issue_token((tmp_path / "abm-cert.pem").read_bytes(), cipher=cipher))  # type: ignore[arg-type]
        code, out = run(monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m))
        assert code == 0, out

    def test_token_for_another_key_is_invalid(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """DEP_TOKEN_INVALID: a token encrypted to another certificate does not open; an event says so."""
        emu, _ = abm
        enrolled_token(monkeypatch, db_url, tmp_path, emu)
        from pomona.pki.abm import make_keypair

        other_cert, _ = make_keypair("someone else")
        p7m = tmp_path / "foreign.p7m"
        p7m.write_bytes(emu.issue_token(other_cert))
        code, out = run(monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m))
        assert (code, out["reason"]) == (2, "DEP_TOKEN_INVALID")  # type: ignore[index]
        assert has_event(monkeypatch, db_url, "DEP_TOKEN_INVALID")

    def test_expired_token_is_refused(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """DEP_TOKEN_EXPIRED: a token past its access_token_expiry is not kept."""
        emu, _ = abm
        p7m = enrolled_token(monkeypatch, db_url, tmp_path, emu, days=-1)
        code, out = run(monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m))
        assert out["reason"] == "DEP_TOKEN_EXPIRED" and code != 0  # type: ignore[index]
        assert run(monkeypatch, db_url, "abm", "token", "list", "--tenant", TENANT)[1] == []

    def test_expiring_token_is_flagged(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """A token that expires within 30 days is accepted and listed as expiring, with DEP_TOKEN_EXPIRED."""
        emu, _ = abm
        p7m = enrolled_token(monkeypatch, db_url, tmp_path, emu, days=20)
        code, out = run(monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m))
        assert code == 0
        assert (out["state"], out["reason"]) == ("expiring", "DEP_TOKEN_EXPIRED")  # type: ignore[index]


class TestSync:
    def test_full_fetch_then_cursor(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """The first sync fetches every device; the next follows the cursor and sees only the changes,
        including a removal, kept as history."""
        emu, _ = abm
        uploaded(monkeypatch, db_url, tmp_path, emu)
        code, reports = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert code == 0
        (r,) = reports  # type: ignore[misc]
        assert (r["full"], r["added"], r["fetched"]) == (True, 25, 25)
        emu.add_device("ACMENEW00001", product="iPad14,1")
        emu.handle("POST", "http://x/_emulator/fault", {}, b'{"fault": "clear"}')
        first = emu.s.order[0]
        emu._remove(first)
        code, reports = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        (r,) = reports  # type: ignore[misc]
        assert (r["full"], r["added"], r["deleted"], r["modified"]) == (False, 1, 1, 0)
        assert ("POST", "/devices/sync") in emu.calls
        code, dev = run(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--serial", first)
        assert code == 0 and dev["deleted"] is True  # type: ignore[index]
        assert [h["op_type"] for h in dev["history"]] == ["added", "deleted"]  # type: ignore[index]
        code, new = run(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--serial", "ACMENEW00001")
        assert (new["device_family"], new["os"], new["model"]) == ("iPad", "iPadOS", "iPad mini")  # type: ignore[index]
        code, listed = run(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--limit", "1000")
        assert len(listed) == 26  # type: ignore[arg-type]

    def test_devices_table_for_people(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """Without --json the devices are a table and the sync a summary line."""
        emu, _ = abm
        uploaded(monkeypatch, db_url, tmp_path, emu)
        code, out = cli(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert code == 0 and "25" in out
        code, out = cli(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT)
        assert code == 0 and "ACME00000000" in out

    def test_terms_not_accepted(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """DEP_TERMS_NOT_ACCEPTED: T_C_NOT_SIGNED fails the sync, is kept on the token and left as an event."""
        emu, server = abm
        uploaded(monkeypatch, db_url, tmp_path, emu)
        code, _ = cli(
            monkeypatch,
            db_url,
            "emulate",
            "abm",
            "fault",
            "--abm-url",
            server.url,
            "--fault",
            "terms-not-accepted",
        )
        assert code == 0
        code, out = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert (code, out["reason"]) == (1, "DEP_TERMS_NOT_ACCEPTED")  # type: ignore[index]
        (tok,) = run(monkeypatch, db_url, "abm", "token", "list", "--tenant", TENANT)[1]  # type: ignore[misc]
        assert tok["last_error"] == "DEP_TERMS_NOT_ACCEPTED"
        assert has_event(monkeypatch, db_url, "DEP_TERMS_NOT_ACCEPTED")
        cli(monkeypatch, db_url, "emulate", "abm", "fault", "--abm-url", server.url, "--fault", "clear")
        assert run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)[0] == 0
        (tok,) = run(monkeypatch, db_url, "abm", "token", "list", "--tenant", TENANT)[1]  # type: ignore[misc]
        assert tok["last_error"] is None

    def test_cursor_expired_falls_back_to_full_fetch(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """DEP_CURSOR_EXPIRED: an expired cursor is recorded and healed by a full fetch in the same sync."""
        emu, server = abm
        uploaded(monkeypatch, db_url, tmp_path, emu)
        assert run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)[0] == 0
        emu.set_fault("cursor-expired")
        code, reports = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert code == 0
        (r,) = reports  # type: ignore[misc]
        assert (r["cursor_expired"], r["full"], r["fetched"]) == (True, True, 25)
        assert has_event(monkeypatch, db_url, "DEP_CURSOR_EXPIRED")

    @pytest.mark.parametrize(
        ("fault", "reason"), [("token-expired", "DEP_TOKEN_EXPIRED"), ("token-revoked", "DEP_TOKEN_INVALID")]
    )
    def test_apple_refuses_the_token(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
        fault: str,
        reason: str,
    ) -> None:
        """ABM's /session refusing an expired or revoked token is DEP_TOKEN_EXPIRED / DEP_TOKEN_INVALID."""
        emu, _ = abm
        uploaded(monkeypatch, db_url, tmp_path, emu)
        emu.set_fault(fault)
        code, out = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert (code, out["reason"]) == (1, reason)  # type: ignore[index]
        assert has_event(monkeypatch, db_url, reason)


class TestEmulatorCommands:
    def test_token_add_device_and_fault_commands(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """`pomona emulate abm token|add-device|fault` drive a running emulator: the token it downloads
        uploads, the added device is synced, and a fault takes effect."""
        emu, server = abm
        assert cli(monkeypatch, db_url, "tenant", "create", TENANT, "--domain", "acme.example")[0] == 0
        cert, p7m = tmp_path / "cert.pem", tmp_path / "token.p7m"
        assert cli(monkeypatch, db_url, "abm", "keypair", "--tenant", TENANT, "--out", str(cert))[0] == 0
        code, _ = cli(
            monkeypatch,
            db_url,
            "emulate",
            "abm",
            "token",
            "--abm-url",
            server.url,
            "--cert",
            str(cert),
            "--out",
            str(p7m),
        )
        assert code == 0
        assert (
            run(monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m))[0] == 0
        )
        code, _ = cli(
            monkeypatch,
            db_url,
            "emulate",
            "abm",
            "add-device",
            "--abm-url",
            server.url,
            "--serial",
            "ADDED0000001",
            "--product",
            "iPad13,18",
        )
        assert code == 0 and emu.device("ADDED0000001") is not None
        code, reports = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert reports[0]["added"] == 26  # type: ignore[index]
        code, _ = cli(
            monkeypatch,
            db_url,
            "emulate",
            "abm",
            "fault",
            "--abm-url",
            server.url,
            "--fault",
            "assigned-elsewhere",
            "--serial",
            "ADDED0000001",
        )
        assert code == 0 and emu.device("ADDED0000001") is None
        code, reports = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert reports[0]["deleted"] == 1  # type: ignore[index]

    def test_fault_names_are_the_emulators(self) -> None:
        """The CLI's --fault choices are exactly the emulator's faults (the issue's spellings)."""
        from pomona.cli.emulate import abm_fault
        from pomona.testing.abm_emulator import FAULTS

        (opt,) = [p for p in abm_fault.params if p.name == "name"]
        assert tuple(opt.type.choices) == FAULTS  # type: ignore[attr-defined]

    def test_emulator_process_serves(self, tmp_path: Path) -> None:
        """`pomona emulate abm --port 0 --devices 3 --json` prints its URL and serves until stopped."""
        import signal
        import subprocess
        import sys

        import httpx

        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pomona",
                "emulate",
                "abm",
                "--port",
                "0",
                "--devices",
                "3",
                "--json",
                "--state-dir",
                str(tmp_path / "abm"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            assert info["devices"] == 3
            assert httpx.get(info["url"] + "/_emulator/state").json()["devices"] == 3
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        assert (tmp_path / "abm" / "abm-state.json").exists()


class TestHealth:
    def test_health_lists_expiring_tokens_and_failing_syncs(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """`pomona health` shows a token expiring within 30 days and the last sync's failure, with titles."""
        emu, _ = abm
        p7m = enrolled_token(monkeypatch, db_url, tmp_path, emu, days=20)
        assert (
            run(monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m))[0] == 0
        )
        emu.set_fault("terms-not-accepted")
        assert run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)[0] == 1
        code, out = cli(monkeypatch, db_url, "health", "--tenant", TENANT, "--json")
        found = {(f["code"], f["subject"]) for f in json.loads(out)["findings"]}
        assert {
            ("DEP_TOKEN_EXPIRED", "abm:abm-1:expiry:30d"),
            ("DEP_TERMS_NOT_ACCEPTED", "abm:abm-1:sync"),
        } <= found


class TestFullFetchDeletions:
    def test_full_fetch_marks_what_abm_no_longer_lists(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """`abm sync --full` after a device left ABM: it is kept, marked deleted, with a deleted step."""
        emu, _ = abm
        uploaded(monkeypatch, db_url, tmp_path, emu)
        assert run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)[0] == 0
        gone = emu.s.order[3]
        emu.s.devices.pop(gone)  # gone without a sync event: only a full fetch can tell
        code, reports = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT, "--full")
        (r,) = reports  # type: ignore[misc]
        assert (code, r["full"], r["deleted"], r["unchanged"]) == (0, True, 1, 24)
        code, dev = run(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--serial", gone)
        assert dev["deleted"] is True and dev["history"][-1]["op_type"] == "deleted"  # type: ignore[index]


class TestTls:
    def test_sync_over_https_trusts_pomona_abm_ca(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
    ) -> None:
        """The emulator over HTTPS: with POMONA_ABM_CA the sync works; without, it fails (exit 1), no traceback."""
        emu = AbmEmulator(devices=4, serial_prefix="TLS")
        server = emu.serve_in_thread(tls_dir=tmp_path / "abm-tls")
        try:
            assert server.url.startswith("https://") and server.ca_path is not None
            monkeypatch.setenv("POMONA_ABM_URL", server.url)
            uploaded(monkeypatch, db_url, tmp_path, emu)
            code, out = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
            assert (code, out["reason"]) == (1, "INTERNAL_ERROR") and "cannot reach ABM" in out["message"]  # type: ignore[index]
            monkeypatch.setenv("POMONA_ABM_CA", str(server.ca_path))
            code, reports = run(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
            assert code == 0, reports
            assert reports[0]["added"] == 4  # type: ignore[index]
        finally:
            server.close()


class TestProgressBar:
    def test_sync_with_progress_bar(
        self,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """On a terminal `abm sync` shows a rich progress bar on stderr while it syncs, and returns the reports."""
        from pomona.app import Settings, build
        from pomona.cli.abm_cmds import _sync_with_progress

        emu, server = abm
        p = build(Settings(data_dir=tmp_path, database_url=db_url, abm_url=server.url))
        try:
            p.admin.create_tenant(TENANT, "acme.example")
            cert, _ = p.abm.keypair(TENANT)
            p.abm.upload_token(TENANT, emu.issue_token(cert))
            (r,) = _sync_with_progress(p, TENANT, False, None)
            assert r.added == 25
        finally:
            p.close()
