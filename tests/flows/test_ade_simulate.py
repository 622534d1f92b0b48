"""End to end: an ADE virtual device runs Setup Assistant against the real server's ADE endpoint, with the
ABM emulator over HTTP as Apple: userless (held at Setup Assistant, then released), legacy (the Basic
challenge), modern (the web view's sign-in and TOTP), and DEP_MFA_WITH_LEGACY_AUTH; and `pomona simulate
--ade` as a process against `pomona serve`.

The ADE endpoint is `POST /ade/{tenant}/enroll` and `GET/POST /ade/{tenant}/web` (services/ade.py,
http/ade.py). The server trusts the test device CA through POMONA_ADE_TEST_DEVICE_CA (the PEM file of
the test device CA certificate, ``TestDeviceCa.save(DIR)`` -> ``DIR/ca.pem``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from helpers import TenantSetup, cli, free_port, same_data_dir, setup_tenant  # noqa: F401 - same_data_dir is autouse here
from pomona.app import Pomona, create_app
from pomona.services.portal import new_totp_secret
from pomona.testing.abm_emulator import AbmEmulator, AbmEmulatorServer
from pomona.testing.ade_device import AdeResult, run_setup_assistant
from pomona.testing.device_ca import TestDeviceCa
from pomona.testing.virtual_device import VirtualDevice

TENANT = "acme"
PUBLIC = "https://mdm.acme.example"
SERIAL = "ACME00000001"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def device_ca() -> TestDeviceCa:
    return TestDeviceCa.generate()


@dataclass
class World:
    p: Pomona
    s: TenantSetup
    emu: AbmEmulator
    server: AbmEmulatorServer
    app: TestClient
    db_url: str
    device_ca: TestDeviceCa


def ok(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str) -> Any:
    code, out = cli(monkeypatch, db_url, *args, "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.fixture
def world(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, device_ca: TestDeviceCa
) -> Iterator[World]:
    """The emulator (SERIAL listed) over HTTP, a server trusting the test device CA, the tenant with its
    push certificate and licensed user (with a password), its ABM token uploaded and synced."""
    from pomona.app import build
    from pomona.settings import Settings

    emu = AbmEmulator()
    emu.add_device(SERIAL)
    server = emu.serve_in_thread()
    ca_pem = device_ca.save(tmp_path / "device-ca")
    monkeypatch.setenv("POMONA_ABM_URL", server.url)
    monkeypatch.setenv("POMONA_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("POMONA_ABM_ASSIGN_BACKOFF", "0")
    monkeypatch.setenv("POMONA_ADE_TEST_DEVICE_CA", str(ca_pem))
    monkeypatch.setenv("POMONA_DATABASE_URL", db_url)
    p = build(Settings.from_env())
    s = setup_tenant(p, TENANT)
    p.admin.set_password(TENANT, s.upn, PASSWORD)
    cert = tmp_path / "abm-cert.pem"
    ok(monkeypatch, db_url, "abm", "keypair", "--tenant", TENANT, "--out", str(cert))
    p7m = tmp_path / "token.p7m"
    p7m.write_bytes(emu.issue_token(cert.read_bytes(), expires_in=timedelta(days=365)))
    ok(
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
    ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
    with TestClient(create_app(pomona=p, eager=False), base_url=PUBLIC) as app:  # type: ignore[arg-type]
        yield World(p, s, emu, server, app, db_url, device_ca)
    p.close()
    server.close()


def profile(monkeypatch: pytest.MonkeyPatch, w: World, auth: str, *extra: str) -> None:
    """`pomona abm profile create --auth AUTH --default`: defined at ABM and assigned to SERIAL."""
    out = ok(
        monkeypatch,
        w.db_url,
        "abm",
        "profile",
        "create",
        "--tenant",
        TENANT,
        "--name",
        f"{auth}-profile",
        "--auth",
        auth,
        "--default",
        *extra,
    )
    assert out["assigned"] == 1, out


def setup_assistant(w: World, **kw: Any) -> AdeResult:
    """Run Setup Assistant for SERIAL against the server's app."""
    with httpx.Client(timeout=10) as abm:
        device = VirtualDevice(serial=SERIAL, client=w.app)  # type: ignore[arg-type]
        return run_setup_assistant(
            device,
            w.server.url,
            w.device_ca,
            abm_client=abm,
            poll_interval=0.05,
            clock=w.p.clock.now,
            **kw,
        )


def names(result: AdeResult) -> list[str]:
    return [s.name for s in result.steps]


class TestAdeEndToEnd:
    def test_userless_held_and_released(self, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
        """A `none` profile with --await-configured: MachineInfo, profile, SCEP, check-in with
        AwaitingConfiguration, then the server releases it by itself (DeviceConfigured); ABM shows the
        profile pushed and the server logged the ADE stages."""
        profile(monkeypatch, world, "none", "--await-configured")
        result = setup_assistant(world, wait_release=20)
        assert result.ok and result.enrolled and result.released, result.to_dict()
        assert names(result) == [
            "activation",
            "machineinfo",
            "profile",
            "scep",
            "authenticate",
            "tokenupdate",
            "release",
        ]
        d = world.emu.device(SERIAL)
        assert d is not None and d.profile_status == "pushed"
        stages = {e.detail.get("stage") for e in world.p.commands.events(TENANT) if e.step == "ade"}
        assert {"machineinfo", "profile"} <= stages

    def test_legacy_basic_challenge(self, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
        """A `legacy` profile: without credentials the device stops at the 401 (CREDENTIALS_REQUIRED);
        with the user's it enrolls."""
        profile(monkeypatch, world, "legacy")
        refused = setup_assistant(world)
        assert refused.reason == "CREDENTIALS_REQUIRED" and names(refused)[-1] == "machineinfo"
        result = setup_assistant(world, upn=world.s.upn, password=PASSWORD)
        assert result.ok and result.enrolled, result.to_dict()

    def test_mfa_user_with_legacy_profile(self, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
        """An MFA-required user under a `legacy` profile is refused with DEP_MFA_WITH_LEGACY_AUTH."""
        profile(monkeypatch, world, "legacy")
        world.p.policy.set_user_flags(TENANT, world.s.upn, mfa_required=True)
        result = setup_assistant(world, upn=world.s.upn, password=PASSWORD)
        assert result.reason == "DEP_MFA_WITH_LEGACY_AUTH" and not result.enrolled

    def test_modern_web_sign_in_with_totp(self, monkeypatch: pytest.MonkeyPatch, world: World) -> None:
        """A `modern` profile: the web view signs the MFA user in (password, then TOTP) and the device
        enrolls bound to that user."""
        profile(monkeypatch, world, "modern")
        secret = new_totp_secret()
        world.p.policy.set_user_flags(TENANT, world.s.upn, mfa_required=True, totp_secret=secret)
        result = setup_assistant(world, upn=world.s.upn, password=PASSWORD, totp_secret=secret)
        assert result.ok and result.enrolled, result.to_dict()
        signin = result.steps[1]
        assert signin.name == "signin" and signin.detail["mfa"] is True


class TestSimulateCommandLive:
    def test_simulate_ade_against_pomona_serve(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """`pomona simulate --ade --json` as a process, against `pomona serve` over HTTPS and the
        emulator over HTTPS: a userless device enrolls, exit 0, every step ok in the JSON."""
        db_url = f"sqlite:///{tmp_path / 'pomona.db'}"  # one backend is enough for the process-level run
        from pomona.app import build
        from pomona.settings import Settings

        emu = AbmEmulator()
        emu.add_device(SERIAL)
        tls = tmp_path / "tls"  # the emulator's CA and a localhost certificate, used by both servers
        abm = emu.serve_in_thread(tls_dir=tls)
        port = free_port()
        public = f"https://localhost:{port}"
        ca_pem = TestDeviceCa.generate().save(tmp_path / "device-ca")
        env = {
            "POMONA_ABM_URL": abm.url,
            "POMONA_ABM_CA": str(tls / "ca.pem"),
            "POMONA_PUBLIC_URL": public,
            "POMONA_ADE_TEST_DEVICE_CA": str(ca_pem),
            "POMONA_DATABASE_URL": db_url,
            "POMONA_DATA_DIR": str(tmp_path),
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        p = build(Settings.from_env())
        try:
            setup_tenant(p, TENANT)
        finally:
            p.close()
        cert = tmp_path / "abm-cert.pem"
        ok(monkeypatch, db_url, "abm", "keypair", "--tenant", TENANT, "--out", str(cert))
        p7m = tmp_path / "token.p7m"
        p7m.write_bytes(emu.issue_token(cert.read_bytes()))
        ok(monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m))
        ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        created = ok(
            monkeypatch, db_url, "abm", "profile", "create", "--tenant", TENANT, "--name", "corp", "--auth",
            "none", "--default",
        )  # fmt: skip
        assert created["assigned"] == 1
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("POMONA_")} | env
        log = tmp_path / "serve.log"
        cmd = [sys.executable, "-m", "pomona", "serve", "--port", str(port), "--public-url", public]
        cmd += ["--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server.key")]
        server = subprocess.Popen(cmd, env=child_env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        try:
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                try:
                    httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            args = ["--ade", "--abm-url", abm.url, "--serial", SERIAL, "--device-ca", str(ca_pem.parent)]
            run = subprocess.run(
                [sys.executable, "-m", "pomona", "simulate", *args, "--insecure", "--json"],
                env=child_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert run.returncode == 0, (run.stdout, run.stderr, log.read_text())
            result = json.loads(run.stdout)
            assert result["ok"] and result["enrolled"] and result["reason"] is None
            assert [s["name"] for s in result["steps"]] == [
                "activation",
                "machineinfo",
                "profile",
                "scep",
                "authenticate",
                "tokenupdate",
            ]
        finally:
            server.terminate()
            server.wait(10)
            abm.close()
