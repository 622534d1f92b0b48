"""``pomona simulate``: enroll a fleet of virtual iPhones/iPads against a server.

A load test and a deployment check in one: every device downloads the profile, gets its identity over
SCEP, checks in and runs the command loop, exactly as a real device would. The exit code is 0 only when
every device enrolled and ran its command rounds without a failure.

``--serial S`` with one device uses S as is; with several devices S is a prefix and each device gets
S followed by its zero-padded index (``--serial F2LX --devices 100`` gives F2LX00 ... F2LX99).

``--ade`` runs one device through Automated Device Enrollment instead (pomona.testing.ade_device): it asks
the ABM emulator (``--abm-url``) for its activation record, signs its MachineInfo with the test device CA
kept in ``--device-ca DIR`` (made there on first use), signs in through the web view or answers the Basic
challenge with ``--user``/``--password`` (``--totp-secret`` for MFA), installs the profile, enrolls and,
when the profile holds it at Setup Assistant, waits ``--wait-release`` seconds for DeviceConfigured. The
server learns of the profile's URL from the activation record, so no ``--enroll-url``; it must trust the
test CA: ``POMONA_ADE_TEST_DEVICE_CA=DIR/ca.pem``. Exit 0 when enrolled (and released, if held), else 1
with the failed step's reason code.

Start-up speed matters for a CLI: rich and the protocol stack are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from pomona.i18n import detect_lang

if TYPE_CHECKING:
    from pomona.testing.ade_device import AdeResult
    from pomona.testing.fleet import DeviceResult, FleetSummary

__all__ = ["MESSAGES", "simulate", "translate"]

# Moved to the shared catalogue later; keys are message ids, values per language.
MESSAGES: dict[str, dict[str, str]] = {
    "help.command": {
        "en": "Enroll virtual iPhones/iPads against a server (load test and deployment check).",
        "zh-CN": "让虚拟 iPhone/iPad 向服务器注册（负载测试与部署检查）。",
    },
    "help.enroll_url": {
        "en": "Enrollment URL, e.g. https://mdm.example.com/enroll/<token>.",
        "zh-CN": "注册网址，例如 https://mdm.example.com/enroll/<令牌>。",
    },
    "help.devices": {"en": "Number of virtual devices.", "zh-CN": "虚拟设备数量。"},
    "help.concurrency": {"en": "Devices running at the same time.", "zh-CN": "同时运行的设备数。"},
    "help.rounds": {
        "en": "Command-loop connections per device after enrollment.",
        "zh-CN": "每台设备注册后进行的命令轮询次数。",
    },
    "help.product": {
        "en": "Product name (repeat to mix models, assigned in turn), e.g. iPhone15,2 or iPad13,18.",
        "zh-CN": "产品型号（可重复以混合机型，轮流分配），例如 iPhone15,2 或 iPad13,18。",
    },
    "help.os_version": {
        "en": "iOS/iPadOS version the devices report.",
        "zh-CN": "设备上报的 iOS/iPadOS 版本。",
    },
    "help.serial": {
        "en": "Serial number for one device; with several devices, a prefix followed by the device index.",
        "zh-CN": "单台设备的序列号；多台设备时作为前缀，后接设备序号。",
    },
    "help.key_pool": {
        "en": "PEM file of pre-generated test keys (default: the user cache).",
        "zh-CN": "预生成测试密钥的 PEM 文件（默认：用户缓存目录）。",
    },
    "help.insecure": {
        "en": "Do not verify the server's TLS certificate.",
        "zh-CN": "不验证服务器的 TLS 证书。",
    },
    "help.json": {"en": "Print only the JSON summary on stdout.", "zh-CN": "只在标准输出打印 JSON 摘要。"},
    "help.timeout": {"en": "HTTP timeout in seconds.", "zh-CN": "HTTP 超时时间（秒）。"},
    "progress.keys": {"en": "Generating test keys", "zh-CN": "正在生成测试密钥"},
    "progress.devices": {"en": "Enrolling devices", "zh-CN": "正在注册设备"},
    "summary.title": {"en": "Simulation summary", "zh-CN": "模拟结果摘要"},
    "summary.requested": {"en": "Devices requested", "zh-CN": "请求的设备数"},
    "summary.enrolled": {"en": "Devices enrolled", "zh-CN": "注册成功的设备数"},
    "summary.failed": {"en": "Failures", "zh-CN": "失败数"},
    "summary.requests": {"en": "HTTP requests", "zh-CN": "HTTP 请求数"},
    "summary.elapsed": {"en": "Elapsed (s)", "zh-CN": "耗时（秒）"},
    "summary.rps": {"en": "Requests per second", "zh-CN": "每秒请求数"},
    "summary.p50": {"en": "Enrollment time p50 (s)", "zh-CN": "注册耗时 p50（秒）"},
    "summary.p95": {"en": "Enrollment time p95 (s)", "zh-CN": "注册耗时 p95（秒）"},
    "summary.commands": {"en": "Commands answered", "zh-CN": "已应答的命令数"},
    "summary.reason": {"en": "Reason", "zh-CN": "原因"},
    "summary.count": {"en": "Devices", "zh-CN": "设备数"},
    "summary.all_ok": {
        "en": "All {n} devices enrolled.",
        "zh-CN": "全部 {n} 台设备均已注册。",
    },
    "summary.some_failed": {
        "en": "{failed} of {n} devices failed.",
        "zh-CN": "{n} 台设备中有 {failed} 台失败。",
    },
    "error.bad_args": {
        "en": "--devices must be at least 1 and --concurrency at least 1.",
        "zh-CN": "--devices 和 --concurrency 都必须至少为 1。",
    },
    "error.key_pool": {
        "en": "Cannot use the key pool file {path}: {error}",
        "zh-CN": "无法使用密钥池文件 {path}：{error}",
    },
    "help.ade": {
        "en": "Run one device through Automated Device Enrollment (Setup Assistant) instead.",
        "zh-CN": "改为让一台设备走自动设备注册（设置助理）流程。",
    },
    "help.abm_url": {
        "en": "With --ade: URL of the ABM emulator (pomona emulate abm) that hands out the activation record.",
        "zh-CN": "与 --ade 一起使用：提供激活记录的 ABM 模拟器（pomona emulate abm）的网址。",
    },
    "help.device_ca": {
        "en": "With --ade: folder of the test device CA (made there if missing); the server must trust "
        "its ca.pem through POMONA_ADE_TEST_DEVICE_CA.",
        "zh-CN": "与 --ade 一起使用：测试设备 CA 所在文件夹（不存在时在此创建）；服务器须通过 "
        "POMONA_ADE_TEST_DEVICE_CA 信任其中的 ca.pem。",
    },
    "help.abm_ca": {
        "en": "With --ade: a CA bundle to trust for the ABM emulator when it runs TLS (the file the server "
        "is given as its ABM CA).",
        "zh-CN": "与 --ade 一起使用：ABM 模拟器启用 TLS 时要信任的 CA 证书包（即提供给服务器作为其 ABM CA 的文件）。",
    },
    "help.user": {
        "en": "With --ade: the user who signs in during Setup Assistant (UPN).",
        "zh-CN": "与 --ade 一起使用：在设置助理中登录的用户（UPN）。",
    },
    "help.password": {"en": "With --ade: the user's password.", "zh-CN": "与 --ade 一起使用：该用户的密码。"},
    "help.totp_secret": {
        "en": "With --ade: the user's TOTP secret (base32), for the MFA step.",
        "zh-CN": "与 --ade 一起使用：该用户的 TOTP 密钥（base32），用于多重身份验证步骤。",
    },
    "help.wait_release": {
        "en": "With --ade: seconds to wait for DeviceConfigured when the profile holds the device at "
        "Setup Assistant.",
        "zh-CN": "与 --ade 一起使用：配置文件让设备停在设置助理时，等待 DeviceConfigured 的秒数。",
    },
    "error.enroll_url": {
        "en": "--enroll-url is required (or --ade with --abm-url).",
        "zh-CN": "必须提供 --enroll-url（或使用 --ade 并提供 --abm-url）。",
    },
    "error.ade_args": {
        "en": "--ade needs --abm-url, --serial and --device-ca.",
        "zh-CN": "--ade 需要 --abm-url、--serial 和 --device-ca。",
    },
    "error.ade_user": {
        "en": "--password and --totp-secret need --user, and --user needs --password.",
        "zh-CN": "--password 和 --totp-secret 需要 --user，--user 也需要 --password。",
    },
    "error.device_ca": {
        "en": "Cannot use the test device CA in {path}: {error}",
        "zh-CN": "无法使用 {path} 中的测试设备 CA：{error}",
    },
    "ade.new_ca": {
        "en": "Made a test device CA in {path}; the server must trust it: POMONA_ADE_TEST_DEVICE_CA={path}",
        "zh-CN": "已在 {path} 创建测试设备 CA；服务器必须信任它：POMONA_ADE_TEST_DEVICE_CA={path}",
    },
    "ade.title": {"en": "Setup Assistant ({serial})", "zh-CN": "设置助理（{serial}）"},
    "ade.step": {"en": "Step", "zh-CN": "步骤"},
    "ade.ok": {"en": "OK", "zh-CN": "成功"},
    "ade.detail": {"en": "Detail", "zh-CN": "详情"},
    "ade.enrolled": {"en": "Device {serial} enrolled.", "zh-CN": "设备 {serial} 已注册。"},
    "ade.released": {
        "en": "Device {serial} enrolled and released from Setup Assistant.",
        "zh-CN": "设备 {serial} 已注册，并已从设置助理放行。",
    },
    "ade.failed": {
        "en": "Device {serial} stopped at step {step}: {reason}",
        "zh-CN": "设备 {serial} 停在步骤 {step}：{reason}",
    },
}


def translate(message_id: str, **values: object) -> str:
    """The text of ``message_id`` in the user's language (pomona.i18n: ``POMONA_LANG``, else ``LANG``)."""
    entry = MESSAGES[message_id]
    text = entry.get(detect_lang()) or entry["en"]
    return text.format(**values) if values else text


_t = translate


@click.command("simulate", help=_t("help.command"))
@click.option("--enroll-url", default=None, help=_t("help.enroll_url"))
@click.option("--devices", type=int, default=1, show_default=True, help=_t("help.devices"))
@click.option("--concurrency", type=int, default=1, show_default=True, help=_t("help.concurrency"))
@click.option("--rounds", type=click.IntRange(min=0), default=1, show_default=True, help=_t("help.rounds"))
@click.option(
    "--product",
    "products",
    multiple=True,
    default=("iPhone15,2",),
    show_default=True,
    help=_t("help.product"),
)
@click.option("--os-version", default="17.4", show_default=True, help=_t("help.os_version"))
@click.option("--serial", default=None, help=_t("help.serial"))
@click.option(
    "--key-pool",
    "key_pool_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=_t("help.key_pool"),
)
@click.option("--insecure", is_flag=True, help=_t("help.insecure"))
@click.option("--timeout", type=float, default=30.0, show_default=True, help=_t("help.timeout"))
@click.option("--json", "as_json", is_flag=True, help=_t("help.json"))
@click.option("--ade", is_flag=True, help=_t("help.ade"))
@click.option("--abm-url", default=None, help=_t("help.abm_url"))
@click.option(
    "--abm-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help=_t("help.abm_ca"),
)
@click.option(
    "--device-ca",
    "device_ca_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=_t("help.device_ca"),
)
@click.option("--user", "upn", default=None, help=_t("help.user"))
@click.option("--password", default=None, help=_t("help.password"))
@click.option("--totp-secret", default=None, help=_t("help.totp_secret"))
@click.option(
    "--wait-release",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help=_t("help.wait_release"),
)
def simulate(
    enroll_url: str | None,
    devices: int,
    concurrency: int,
    rounds: int,
    products: tuple[str, ...],
    os_version: str,
    serial: str | None,
    key_pool_path: Path | None,
    insecure: bool,
    timeout: float,
    as_json: bool,
    ade: bool,
    abm_url: str | None,
    abm_ca: Path | None,
    device_ca_dir: Path | None,
    upn: str | None,
    password: str | None,
    totp_secret: str | None,
    wait_release: float,
) -> None:
    """Enroll ``devices`` virtual devices against ``enroll_url`` and print a summary (``--ade``: one
    device through Automated Device Enrollment)."""
    if ade:
        if abm_url is None or serial is None or device_ca_dir is None:
            raise click.UsageError(_t("error.ade_args"))
        if (password is not None or totp_secret is not None or upn is not None) and (
            upn is None or password is None
        ):
            raise click.UsageError(_t("error.ade_user"))
        result = _simulate_ade(
            abm_url,
            serial,
            device_ca_dir,
            upn=upn,
            password=password,
            totp_secret=totp_secret,
            product=products[0],
            os_version=os_version,
            wait_release=wait_release,
            insecure=insecure,
            timeout=timeout,
            abm_ca=abm_ca,
        )
        if as_json:
            click.echo(result.to_json())
        else:
            _print_ade(result)
        click.get_current_context().exit(0 if result.ok else 1)
    if enroll_url is None:
        raise click.UsageError(_t("error.enroll_url"))
    if devices < 1 or concurrency < 1:
        raise click.UsageError(_t("error.bad_args"))

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pomona.testing.fleet import run_fleet
    from pomona.testing.keypool import KeyPool

    err = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        keys_task = bar.add_task(_t("progress.keys"), total=None, visible=False)

        def on_key(done: int, total: int) -> None:
            bar.update(keys_task, completed=done, total=total, visible=True)

        try:
            pool = KeyPool.load_or_create(key_pool_path, devices, on_key)
        except OSError as exc:
            raise click.ClickException(
                _t("error.key_pool", path=key_pool_path or "~/.cache", error=exc)
            ) from exc
        bar.update(keys_task, visible=False)

        devices_task = bar.add_task(_t("progress.devices"), total=devices)

        def on_device(_: DeviceResult) -> None:
            bar.advance(devices_task)

        summary = run_fleet(
            enroll_url,
            devices,
            concurrency,
            rounds=rounds,
            products=products,
            os_version=os_version,
            serial=serial,
            key_pool=pool,
            verify_tls=not insecure,
            timeout=timeout,
            progress=on_device,
        )

    if as_json:
        click.echo(summary.to_json())
    else:
        _print_summary(summary)
    click.get_current_context().exit(0 if summary.ok else 1)


def _print_summary(summary: FleetSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    table = Table(title=_t("summary.title"), show_header=False)
    table.add_column()
    table.add_column(justify="right")
    table.add_row(_t("summary.requested"), str(summary.requested))
    table.add_row(_t("summary.enrolled"), str(summary.enrolled))
    table.add_row(_t("summary.failed"), str(summary.failed))
    table.add_row(_t("summary.requests"), str(summary.requests))
    table.add_row(_t("summary.elapsed"), f"{summary.elapsed_s:.2f}")
    table.add_row(_t("summary.rps"), f"{summary.requests_per_second:.1f}")
    table.add_row(_t("summary.p50"), fmt(summary.enroll_p50_s))
    table.add_row(_t("summary.p95"), fmt(summary.enroll_p95_s))
    table.add_row(_t("summary.commands"), str(summary.commands_answered))
    out.print(table)
    if summary.failed_by_reason:
        reasons = Table(show_header=True)
        reasons.add_column(_t("summary.reason"))
        reasons.add_column(_t("summary.count"), justify="right")
        for reason, count in sorted(summary.failed_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            reasons.add_row(reason, str(count))
        out.print(reasons)
        out.print(_t("summary.some_failed", failed=summary.failed, n=summary.requested))
    else:
        out.print(_t("summary.all_ok", n=summary.requested))


def _simulate_ade(
    abm_url: str,
    serial: str,
    device_ca_dir: Path,
    *,
    upn: str | None,
    password: str | None,
    totp_secret: str | None,
    product: str,
    os_version: str,
    wait_release: float,
    insecure: bool,
    timeout: float,
    abm_ca: Path | None = None,
) -> AdeResult:
    import ssl

    import httpx

    from pomona.testing.ade_device import run_setup_assistant
    from pomona.testing.device_ca import CA_FILE, TestDeviceCa
    from pomona.testing.virtual_device import VirtualDevice

    try:
        device_ca, new = TestDeviceCa.load_or_create(device_ca_dir)
    except (OSError, ValueError) as exc:
        raise click.ClickException(_t("error.device_ca", path=device_ca_dir, error=exc)) from exc
    if new:
        click.echo(_t("ade.new_ca", path=device_ca_dir / CA_FILE), err=True)
    abm_verify: bool | ssl.SSLContext = (
        False if insecure else ssl.create_default_context(cafile=abm_ca) if abm_ca else True
    )
    with (
        httpx.Client(verify=not insecure, timeout=timeout) as client,
        httpx.Client(verify=abm_verify, timeout=timeout) as abm_client,
    ):
        device = VirtualDevice(product=product, os_version=os_version, serial=serial, client=client)
        return run_setup_assistant(
            device,
            abm_url,
            device_ca,
            abm_client=abm_client,
            upn=upn,
            password=password,
            totp_secret=totp_secret,
            wait_release=wait_release,
        )


def _print_ade(result: AdeResult) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(title=_t("ade.title", serial=result.serial))
    table.add_column(_t("ade.step"))
    table.add_column(_t("ade.ok"))
    table.add_column(_t("summary.reason"))
    table.add_column(_t("ade.detail"), overflow="fold")
    for step in result.steps:
        detail = ", ".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
            for k, v in step.detail.items()
            if v not in (None, "", [], {})
        )
        table.add_row(step.name, "✓" if step.ok else "✗", step.reason or "", detail)
    out.print(table)
    failed = result.failed
    if failed is not None:
        out.print(_t("ade.failed", serial=result.serial, step=failed.name, reason=failed.reason))
    elif result.released:
        out.print(_t("ade.released", serial=result.serial))
    else:
        out.print(_t("ade.enrolled", serial=result.serial))
