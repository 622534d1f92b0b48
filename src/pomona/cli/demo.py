"""`pomona demo`: a working Pomona on SQLite with a demo tenant and virtual devices, in one command."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import click

from pomona.domain.errors import ForbiddenError
from pomona.i18n import t

DEMO_TENANT = "demo"
DEMO_DOMAIN = "demo.pomona.example"
DEMO_USER = "ana@demo.pomona.example"
CREDENTIALS_FILE = "demo-credentials.json"
"""Beside the demo's data: its portal password (random per data folder) and its admin token, reused by
every run instead of minting a new token each time. Readable by its owner only."""


def load_credentials(path: Path) -> dict[str, str]:
    """The demo's stored credentials, or none (a missing or unreadable file: new ones are made)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def save_credentials(path: Path, creds: dict[str, str]) -> None:
    """Write the credentials file, owner-only (0600) from its creation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(creds, f)
    os.chmod(path, 0o600)


def reusable_token(p: Any, secret: str | None) -> str | None:
    """The stored admin token, if it still authenticates (not revoked, not expired)."""
    if not secret:
        return None
    try:
        p.admin.authenticate_api_token(secret, record_use=False)
    except ForbiddenError:
        return None
    return secret


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Default: POMONA_DATA_DIR, else pomona-data (the CLI's default too; the banner says what to export).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--devices", default=5, show_default=True, help="Virtual devices to enroll.")
@click.option(
    "--exit-after-setup", is_flag=True, help="Stop once the devices have enrolled (for scripts and CI)."
)
def demo(data_dir: Path | None, host: str, port: int, devices: int, exit_after_setup: bool) -> None:
    """Run Pomona on SQLite with a demo tenant, the APNs emulator and virtual devices that answer pushes."""
    from pomona.settings import Settings

    base = f"http://{host}:{port}"
    settings = Settings.from_env(data_dir=data_dir, public_url=base)
    if settings.on_sqlite:  # a server, as `pomona serve`: before this process's first SQLite connection
        from pomona.heap import give_sqlite_a_page_slab

        give_sqlite_a_page_slab()

    import uvicorn

    from pomona.app import build, create_app
    from pomona.services.installation import served_public_url
    from pomona.testing.apns_emulator import ApnsEmulator

    # The APNs emulator plays Apple in this process; its CA persists beside the data so that the demo
    # tenant's push certificate (issued by it) stays valid across runs.
    emulator_cm = ApnsEmulator.start(settings.data_dir / "apns-emulator")
    emu = emulator_cm.__enter__()
    p = build(settings.model_copy(update={"apns_url": emu.url, "apns_ca": emu.ca_path}), public_url=base)
    served_public_url(p.db, given=None, listening=base)  # what the CLI then reads, unless an admin set one
    creds_path = settings.data_dir / CREDENTIALS_FILE
    creds = load_credentials(creds_path)
    password = creds.get("portal_password") or secrets.token_urlsafe(12)
    with p.db.unit_of_work(readonly=True) as uow:
        existing = uow.tenants.by_name(DEMO_TENANT)
    if existing is None:
        p.admin.create_tenant(DEMO_TENANT, DEMO_DOMAIN)
        p.admin.set_authority(DEMO_TENANT, "pomona")
        cert, key = emu.issue_push_cert()
        p.apns.upload(DEMO_TENANT, cert, key, apple_id="demo@pomona.example", canary=False)
        p.admin.create_user(DEMO_TENANT, DEMO_USER, display_name="Ana Demo", password=password)
        p.policy.set_seats(DEMO_TENANT, 25)
        p.policy.licence(DEMO_TENANT, DEMO_USER, assign=True)
        p.policy.set_user_flags(DEMO_TENANT, DEMO_USER, is_dem=True)  # the demo fleet exceeds 15 devices
    elif existing.push_topic:  # renew from this emulator (same topic): the enrolled devices stay reachable
        cert, key = emu.issue_push_cert(existing.push_topic)
        p.apns.upload(DEMO_TENANT, cert, key, canary=False)
    if existing is not None and password != creds.get("portal_password"):
        p.admin.set_password(DEMO_TENANT, DEMO_USER, password)  # a folder from before the random password
    admin_token = reusable_token(p, creds.get("admin_token"))
    if admin_token is None:
        admin_token = p.admin.create_api_token(DEMO_TENANT, "demo").secret
    save_credentials(creds_path, {"portal_password": password, "admin_token": admin_token})
    enroll = p.admin.create_enrollment_token(DEMO_TENANT, DEMO_USER, uses=max(devices, 1) + 5)
    enroll_url = p.enrollment.urls.enroll(enroll.secret)

    # log_config=None: uvicorn's loggers go through pomona.logs, as under `pomona serve` (uvicorn's own
    # configuration would also cut its loggers off from the root logger for the rest of the process).
    app = create_app(pomona=p)
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )
    server = uvicorn.Server(config)
    thread = _start_server(server)
    if not server.started:
        raise click.ClickException(f"the server did not start on {base}")

    from rich.progress import Progress

    fleet = _enroll_fleet(emu, enroll_url, devices, Progress)
    click.echo(t("cli.demo.ready"))
    click.echo(t("cli.demo.api", url=base))
    click.echo(t("cli.demo.token", token=admin_token))
    click.echo(t("cli.demo.tenant", tenant=DEMO_TENANT))
    click.echo(t("cli.demo.enroll", url=enroll_url))
    click.echo(t("cli.demo.portal", url=f"{base}/portal/{DEMO_TENANT}/signin"))
    click.echo(t("cli.demo.password", upn=DEMO_USER, password=password, path=creds_path))
    click.echo(t("cli.demo.devices", count=len(fleet)))
    click.echo(t("cli.demo.try", token=admin_token, url=base, tenant=DEMO_TENANT))
    click.echo(t("push.demo.emulator", url=emu.url))
    folder = settings.data_dir.resolve()
    click.echo(t("cli.demo.folder", path=folder))
    click.echo(t("cli.demo.cli", export=f"export POMONA_DATA_DIR={shlex.quote(str(folder))}"))
    click.echo(t("cli.demo.cli_try", tenant=DEMO_TENANT, upn=DEMO_USER))
    try:
        if exit_after_setup:
            return
        click.echo(t("cli.demo.stop"))
        try:
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            pass
    finally:
        _stop_server(server, thread)
        emulator_cm.__exit__(None, None, None)


def _start_server(server: Any, wait: float = 15.0) -> threading.Thread:
    """Run the uvicorn ``server`` in a daemon thread and wait up to ``wait`` seconds until it has started
    (``server.started`` says whether it did)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + wait
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return thread


def _stop_server(server: Any, thread: threading.Thread, graceful: float = 30.0) -> None:
    """Stop the server thread before this (main) thread returns: the interpreter's exit shuts the
    threads' executors down, and a server still running then fails its next background step ("cannot
    schedule new futures after interpreter shutdown"). A graceful stop (open requests answered, the push
    worker's batch finished) gets ``graceful`` seconds, then uvicorn is told to stop at once."""
    server.should_exit = True
    thread.join(graceful)
    if thread.is_alive():
        server.force_exit = True
        thread.join(5)


def _enroll_fleet(emu: Any, enroll_url: str, count: int, progress: Any) -> list[Any]:
    """Enroll ``count`` virtual devices and register each with the APNs emulator: a push makes it poll
    (in one of the emulator's delivery threads)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from pomona.testing.virtual_device import VirtualDevice

    client = httpx.Client(timeout=30)
    products = ("iPhone15,2", "iPad13,18")
    devices = [VirtualDevice(enroll_url, product=products[i % 2], client=client) for i in range(count)]
    enrolled: list[Any] = []
    with progress(transient=True) as bar:
        task = bar.add_task(t("cli.progress.enrolling"), total=count)

        def one(d: Any) -> None:
            try:
                d.enroll()
            except Exception:  # noqa: BLE001 - the demo shows how many enrolled
                return
            finally:
                bar.advance(task)
            if d.push_token:
                emu.register(d.push_token, d.poll)
                enrolled.append(d)

        with ThreadPoolExecutor(min(count, 4) or 1) as ex:
            list(ex.map(one, devices))
    return enrolled
