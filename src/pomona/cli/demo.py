"""`pomona demo`: a working Pomona on SQLite with a demo tenant and virtual devices, in one command."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import click

from pomona.i18n import t

DEMO_TENANT = "demo"
DEMO_DOMAIN = "demo.pomona.example"
DEMO_USER = "ana@demo.pomona.example"


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("pomona-data"),
    show_default=True,
    envvar="POMONA_DATA_DIR",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--devices", default=5, show_default=True, help="Virtual devices to enroll.")
@click.option(
    "--exit-after-setup", is_flag=True, help="Stop once the devices have enrolled (for scripts and CI)."
)
def demo(data_dir: Path, host: str, port: int, devices: int, exit_after_setup: bool) -> None:
    """Run Pomona on SQLite with a demo tenant, a stand-in push certificate and virtual devices."""
    import uvicorn

    from pomona.app import Settings, build, create_app
    from pomona.testing.fleet import run_fleet
    from pomona.testing.pushcert import make_standin_push_cert

    base = f"http://{host}:{port}"
    p = build(Settings.from_env(data_dir=data_dir, public_url=base))
    with p.db.unit_of_work(readonly=True) as uow:
        existing = uow.tenants.by_name(DEMO_TENANT)
    if existing is None:
        p.admin.create_tenant(DEMO_TENANT, DEMO_DOMAIN)
        p.admin.set_authority(DEMO_TENANT, "pomona")
        cert, key = make_standin_push_cert()
        p.admin.upload_push_cert(DEMO_TENANT, cert, key)
        p.admin.create_user(DEMO_TENANT, DEMO_USER, display_name="Ana Demo", password="pomona-demo")
        p.policy.set_seats(DEMO_TENANT, 25)
        p.policy.licence(DEMO_TENANT, DEMO_USER, assign=True)
        p.policy.set_user_flags(DEMO_TENANT, DEMO_USER, is_dem=True)  # the demo fleet exceeds 15 devices
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

    with Progress(transient=True) as bar:
        task = bar.add_task(t("cli.progress.enrolling"), total=devices)
        summary = run_fleet(
            enroll_url,
            devices,
            min(devices, 4) or 1,
            products=("iPhone15,2", "iPad13,18"),
            progress=lambda _r: bar.advance(task),
        )
    click.echo(t("cli.demo.ready"))
    click.echo(t("cli.demo.api", url=base))
    click.echo(t("cli.demo.token", token=admin_token))
    click.echo(t("cli.demo.tenant", tenant=DEMO_TENANT))
    click.echo(t("cli.demo.enroll", url=enroll_url))
    click.echo(t("cli.demo.devices", count=summary.enrolled))
    if summary.failed_by_reason:
        click.echo(str(summary.failed_by_reason))
    click.echo(t("cli.demo.try", token=admin_token, url=base, tenant=DEMO_TENANT))
    if exit_after_setup:
        server.should_exit = True
        thread.join(10)
        return
    click.echo(t("cli.demo.stop"))
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(10)
