"""``pomona emulate``: stand-ins for Apple services, for labs, demos and tests.

``pomona emulate apns --host 127.0.0.1 --port 2197 --state-dir DIR`` runs the APNs emulator
(:mod:`pomona.testing.apns_emulator`): HTTP/2 over TLS with required client certificates, answering as
Apple does. The state directory keeps its CA (``ca.pem``: what Pomona must trust, as ``verify``) and, on
first start, a push certificate issued by it (``push-cert.pem``, ``push-key.pem``) to upload to a tenant.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import click

from pomona.i18n import t

__all__ = ["emulate"]


@click.group(help=t("emulate.help.group"))
def emulate() -> None:
    pass


@emulate.command("apns", help=t("emulate.help.apns"))
@click.option("--host", default="127.0.0.1", show_default=True, help=t("emulate.help.host"))
@click.option("--port", type=int, default=2197, show_default=True, help=t("emulate.help.port"))
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("apns-emulator"),
    show_default=True,
    help=t("emulate.help.state_dir"),
)
@click.option("--fail-rate", type=float, default=0.0, show_default=True, help=t("emulate.help.fail_rate"))
@click.option(
    "--fail-status",
    type=click.Choice(["429", "500", "503"]),
    default="503",
    show_default=True,
    help=t("emulate.help.fail_status"),
)
@click.option("--goaway-every", type=int, default=0, show_default=True, help=t("emulate.help.goaway_every"))
@click.option("--json", "as_json", is_flag=True, help=t("emulate.help.json"))
def apns(
    host: str,
    port: int,
    state_dir: Path,
    fail_rate: float,
    fail_status: str,
    goaway_every: int,
    as_json: bool,
) -> None:
    from pomona.testing.apns_emulator import ApnsEmulator

    emu = ApnsEmulator(state_dir, host=host, port=port)
    emu.configure(fail_rate=fail_rate, fail_status=int(fail_status), goaway_every=goaway_every)
    cert_path, key_path = state_dir / "push-cert.pem", state_dir / "push-key.pem"
    if not (cert_path.exists() and key_path.exists()):
        cert_pem, key_pem = emu.issue_push_cert()
        cert_path.write_bytes(cert_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem)
    from cryptography import x509

    from pomona.protocol.apns import push_topic_of

    topic = push_topic_of(x509.load_pem_x509_certificate(cert_path.read_bytes()))

    def ready() -> None:
        info = {
            "url": emu.url,
            "ca": str(emu.ca_path),
            "push_cert": str(cert_path),
            "push_key": str(key_path),
            "topic": topic,
        }
        if as_json:
            click.echo(json.dumps(info))
        else:
            click.echo(t("emulate.apns.ready", url=emu.url))
            click.echo(t("emulate.apns.ca", path=emu.ca_path))
            click.echo(t("emulate.apns.push_cert", cert=cert_path, key=key_path, topic=topic))
            click.echo(t("emulate.apns.control", url=emu.url))
            click.echo(t("emulate.apns.stop"))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, emu.stop)
        await emu.serve(ready)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        stats = emu.stats()
        emu.close()
        if not as_json:
            click.echo(
                t(
                    "emulate.apns.stats",
                    received=stats.received,
                    accepted=stats.accepted,
                    rejected=sum(stats.rejected.values()),
                    delivered=stats.delivered,
                )
            )
