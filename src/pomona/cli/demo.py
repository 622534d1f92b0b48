"""`pomona demo`: a working Pomona on SQLite with a demo tenant and virtual devices, in one command."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import click

from pomona.i18n import t

DEMO_TENANT = "demo"
DEMO_DOMAIN = "demo.pomona.example"
DEMO_USER = "ana@demo.pomona.example"


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Default: POMONA_DATA_DIR, else pomona-data.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--devices", default=5, show_default=True, help="Virtual devices to enroll.")
@click.option(
    "--exit-after-setup", is_flag=True, help="Stop once the devices have enrolled (for scripts and CI)."
)
def demo(data_dir: Path | None, host: str, port: int, devices: int, exit_after_setup: bool) -> None:
    """Run Pomona on SQLite with a demo tenant, the APNs emulator and virtual devices that answer pushes."""
    import uvicorn

    from pomona.app import build, create_app
    from pomona.services.installation import served_public_url
    from pomona.settings import Settings
    from pomona.testing.apns_emulator import ApnsEmulator

    base = f"http://{host}:{port}"
    settings = Settings.from_env(data_dir=data_dir, public_url=base)
    # The APNs emulator plays Apple in this process; its CA persists beside the data so that the demo
    # tenant's push certificate (issued by it) stays valid across runs.
    emulator_cm = ApnsEmulator.start(settings.data_dir / "apns-emulator")
    emu = emulator_cm.__enter__()
    p = build(settings.model_copy(update={"apns_url": emu.url, "apns_ca": emu.ca_path}), public_url=base)
    served_public_url(p.db, given=None, listening=base)  # what the CLI then reads, unless an admin set one
    with p.db.unit_of_work(readonly=True) as uow:
        existing = uow.tenants.by_name(DEMO_TENANT)
    if existing is None:
        p.admin.create_tenant(DEMO_TENANT, DEMO_DOMAIN)
        p.admin.set_authority(DEMO_TENANT, "pomona")
        cert, key = emu.issue_push_cert()
        p.apns.upload(DEMO_TENANT, cert, key, apple_id="demo@pomona.example", canary=False)
        p.admin.create_user(DEMO_TENANT, DEMO_USER, display_name="Ana Demo", password="pomona-demo")
        p.policy.set_seats(DEMO_TENANT, 25)
        p.policy.licence(DEMO_TENANT, DEMO_USER, assign=True)
        p.policy.set_user_flags(DEMO_TENANT, DEMO_USER, is_dem=True)  # the demo fleet exceeds 15 devices
    elif existing.push_topic:  # renew from this emulator (same topic): the enrolled devices stay reachable
        cert, key = emu.issue_push_cert(existing.push_topic)
        p.apns.upload(DEMO_TENANT, cert, key, canary=False)
    admin_token = p.admin.create_api_token(DEMO_TENANT, "demo").secret
    enroll = p.admin.create_enrollment_token(DEMO_TENANT, DEMO_USER, uses=max(devices, 1) + 5)
    enroll_url = p.enrollment.urls.enroll(enroll.secret)

    config = uvicorn.Config(create_app(pomona=p), host=host, port=port, log_level="warning", access_log=False)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise click.ClickException(f"the server did not start on {base}")

    from rich.progress import Progress

    fleet = _enroll_fleet(emu, enroll_url, devices, Progress)
    click.echo(t("cli.demo.ready"))
    click.echo(t("cli.demo.api", url=base))
    click.echo(t("cli.demo.token", token=admin_token))
    click.echo(t("cli.demo.tenant", tenant=DEMO_TENANT))
    click.echo(t("cli.demo.enroll", url=enroll_url))
    click.echo(t("cli.demo.devices", count=len(fleet)))
    click.echo(t("cli.demo.try", token=admin_token, url=base, tenant=DEMO_TENANT))
    click.echo(t("push.demo.emulator", url=emu.url))
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
        server.should_exit = True
        thread.join(10)
        emulator_cm.__exit__(None, None, None)


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
