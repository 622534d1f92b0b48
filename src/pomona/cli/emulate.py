"""``pomona emulate``: stand-ins for Apple services, for labs, demos and tests.

``pomona emulate apns --host 127.0.0.1 --port 2197 --state-dir DIR`` runs the APNs emulator
(:mod:`pomona.testing.apns_emulator`): HTTP/2 over TLS with required client certificates, answering as
Apple does. The state directory keeps its CA (``ca.pem``: what Pomona must trust, as ``verify``) and, on
first start, a push certificate issued by it (``push-cert.pem``, ``push-key.pem``) to upload to a tenant.

``pomona emulate abm --port 8090 [--devices N] [--serial-prefix X] [--state-dir D] [--tls]`` runs the
Apple Business Manager emulator (:mod:`pomona.testing.abm_emulator`); Pomona reaches it through
``POMONA_ABM_URL`` (and ``POMONA_ABM_CA`` with ``--tls``). Beside it, ``pomona emulate abm token``
downloads a server token for a certificate, ``add-device`` assigns a device and ``fault`` makes it fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

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


# --- Apple Business Manager ------------------------------------------------------------------------
@emulate.group("abm", invoke_without_command=True, help=t("emulate.help.abm"))
@click.option("--host", default="127.0.0.1", show_default=True, help=t("emulate.help.host"))
@click.option("--port", type=int, default=8090, show_default=True, help=t("emulate.help.port"))
@click.option("--devices", type=int, default=0, show_default=True, help=t("emulate.help.abm_devices"))
@click.option("--serial-prefix", default="P0MN", show_default=True, help=t("emulate.help.abm_prefix"))
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=t("emulate.help.abm_state_dir"),
)
@click.option("--tls", is_flag=True, help=t("emulate.help.abm_tls"))
@click.option("--json", "as_json", is_flag=True, help=t("emulate.help.json"))
@click.pass_context
def abm(
    ctx: click.Context,
    host: str,
    port: int,
    devices: int,
    serial_prefix: str,
    state_dir: Path | None,
    tls: bool,
    as_json: bool,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    import threading

    from pomona.testing.abm_emulator import AbmEmulator

    emu = AbmEmulator(devices=devices, serial_prefix=serial_prefix, state_dir=state_dir)
    if tls and state_dir is None:
        from pomona.domain.errors import InvalidInputError

        raise InvalidInputError("--tls needs --state-dir (where the emulator keeps its CA)")
    server = emu.serve_in_thread(host, port, tls_dir=state_dir if tls else None)
    ca = None if server.ca_path is None else str(server.ca_path)
    device_ca = None
    if state_dir is not None:
        # Apple also issues the identities devices sign their MachineInfo with: the emulator's stand-in
        # for that device CA, for `pomona simulate --ade --device-ca` and a test-mode server.
        from pomona.testing.device_ca import CA_FILE, TestDeviceCa

        TestDeviceCa.load_or_create(state_dir / "device-ca")
        device_ca = str(state_dir / "device-ca" / CA_FILE)
    if as_json:
        details = {"url": server.url, "devices": len(emu.s.devices), "ca": ca, "device_ca": device_ca}
        click.echo(json.dumps(details), nl=True)
    else:
        click.echo(t("emulate.abm.ready", url=server.url, devices=len(emu.s.devices)))
        click.echo(t("emulate.abm.hint", url=server.url))
        if ca is not None:
            click.echo(t("emulate.abm.ca", path=ca))
        if device_ca is not None:
            click.echo(t("emulate.abm.device_ca", path=device_ca))
        click.echo(t("emulate.apns.stop"))
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.close()
    emu.save()


def _control(abm_url: str, method: str, path: str, body: dict[str, object]) -> bytes:
    import httpx

    from pomona.domain.errors import UpstreamError
    from pomona.settings import Settings

    ca = Settings.from_env().abm_ca
    try:
        r = httpx.request(
            method, abm_url.rstrip("/") + path, json=body, timeout=30, verify=str(ca) if ca else True
        )
    except httpx.HTTPError as exc:
        raise UpstreamError(f"cannot reach the ABM emulator at {abm_url}: {exc}") from None
    if r.status_code != 200:
        raise UpstreamError(f"the ABM emulator answered {r.status_code}: {r.text[:200]}")
    return r.content


def _common(fn: Any) -> Any:
    """The shared --json and error handling (one line and an exit code, never a traceback)."""
    from pomona.cli.main import common

    return common(fn)


def _emit(data: object, text: str) -> None:
    from pomona.cli.output import emit

    emit(data, text)


_URL = click.option("--abm-url", required=True, help=t("emulate.help.abm_url"))


@abm.command("token", help=t("emulate.help.abm_token"))
@_URL
@click.option(
    "--cert", "cert_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--days", type=int, default=365, show_default=True, help=t("emulate.help.abm_days"))
@click.option(
    "--cipher",
    type=click.Choice(["aes256_cbc", "aes128_cbc", "tripledes_3key"]),
    default="aes256_cbc",
    show_default=True,
)
@_common
def abm_token(abm_url: str, cert_path: Path, out_path: Path, days: int, cipher: str) -> None:
    p7m = _control(
        abm_url,
        "POST",
        "/_emulator/token",
        {"cert_pem": cert_path.read_text(), "days": days, "cipher": cipher},
    )
    out_path.write_bytes(p7m)
    _emit({"out": str(out_path), "days": days, "cipher": cipher}, t("emulate.abm.token", out=out_path))


@abm.command("add-device", help=t("emulate.help.abm_add_device"))
@_URL
@click.option("--serial", required=True)
@click.option("--product", default="iPhone15,2", show_default=True)
@click.option("--os-version", default="17.4", show_default=True)
@_common
def abm_add_device(abm_url: str, serial: str, product: str, os_version: str) -> None:
    _control(
        abm_url,
        "POST",
        "/_emulator/devices",
        {"serial": serial, "product": product, "os_version": os_version},
    )
    _emit(
        {"serial": serial, "product": product, "os_version": os_version},
        t("emulate.abm.added", serial=serial),
    )


@abm.command("fault", help=t("emulate.help.abm_fault"))
@_URL
@click.option(
    "--fault",
    "name",
    type=click.Choice(
        [
            "terms-not-accepted",
            "token-expired",
            "token-revoked",
            "cursor-expired",
            "throttled",
            "profile-not-found",
            "profile-rejected",
            "assignment-fails",
            "profile-removed",
            "assigned-elsewhere",
            "device-cannot-reach-apple",
            "clear",
        ]
    ),
    required=True,
)
@click.option("--serial", default=None)
@_common
def abm_fault(abm_url: str, name: str, serial: str | None) -> None:
    _control(abm_url, "POST", "/_emulator/fault", {"fault": name, "serial": serial})
    _emit({"fault": name, "serial": serial}, t("emulate.abm.fault", fault=name))
