"""CLI: the APNs push certificate's lifecycle (csr, upload, status, re-enrollment list) and webhooks."""

from __future__ import annotations

from pathlib import Path

import click

from pomona.cli.main import _json, _out, _pomona, common, main
from pomona.cli.output import Column, echo_wrapped, emit_list, table
from pomona.domain.errors import InvalidInputError
from pomona.i18n import t
from pomona.services.readable import facts_text

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@main.group()
def apns() -> None:
    """The APNs push certificate: request, upload, renew."""


@apns.command("csr")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--email", default=None, help="The Apple ID's e-mail, put in the request.")
@click.option(
    "--vendor-cert", "vendor_cert", type=_FILE, default=None, help="MDM vendor certificate chain (PEM)."
)
@click.option("--vendor-key", "vendor_key", type=_FILE, default=None, help="MDM vendor private key (PEM).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@common
def apns_csr(
    tenant_name: str,
    email: str | None,
    vendor_cert: Path | None,
    vendor_key: Path | None,
    out_path: Path | None,
) -> None:
    """Make the push key (kept encrypted for the later upload) and its CSR, or the vendor-signed request
    Apple's Push Certificates Portal accepts when --vendor-cert and --vendor-key are given."""
    p = _pomona()
    r = p.apns.csr(
        tenant_name,
        email=email,
        vendor_chain_pem=None if vendor_cert is None else vendor_cert.read_bytes(),
        vendor_key_pem=None if vendor_key is None else vendor_key.read_bytes(),
    )
    text = r.vendor_signed if r.vendor_signed is not None else r.csr_pem
    if out_path is not None:
        out_path.write_text(text)
    data = {"tenant": tenant_name, "vendor_signed": r.vendor_signed is not None, "out": str(out_path or "")}
    if _json():
        data["request"] = text
        _out(data, "")
        return
    if out_path is None:
        click.echo(text)
    msg = "apns.cli.csr_signed" if r.vendor_signed is not None else "apns.cli.csr_plain"
    click.echo(t(msg, tenant=tenant_name, out=str(out_path or "-")), err=True)


@apns.command("upload")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--cert", "cert_path", type=_FILE, required=True, help="The certificate (PEM) or a .p12.")
@click.option(
    "--key", "key_path", type=_FILE, default=None, help="Its key (PEM); default: the pending CSR's."
)
@click.option("--password", default=None, help="The .p12 password.")
@click.option("--apple-id", default=None, help="The Apple ID that owns the certificate in Apple's portal.")
@click.option(
    "--replace", is_flag=True, help="Accept a certificate with ANOTHER topic (devices must re-enroll)."
)
@click.option("--i-understand-devices-must-re-enroll", "understood", is_flag=True)
@click.option("--no-canary", is_flag=True, help="Do not push enrolled devices to check the certificate.")
@common
def apns_upload(
    tenant_name: str,
    cert_path: Path,
    key_path: Path | None,
    password: str | None,
    apple_id: str | None,
    replace: bool,
    understood: bool,
    no_canary: bool,
) -> None:
    """Upload the tenant's MDM push certificate (renewals keep the topic; see --replace)."""
    if replace and not understood:
        raise InvalidInputError("--replace needs --i-understand-devices-must-re-enroll", field="replace")
    p = _pomona()
    r = p.apns.upload(
        tenant_name,
        cert_path.read_bytes(),
        None if key_path is None else key_path.read_bytes(),
        password=None if password is None else password.encode(),
        apple_id=apple_id,
        replace=replace,
        confirm="devices-must-re-enroll" if understood else None,
        canary=not no_canary,
    )
    lines = [t("apns.cli.uploaded", tenant=tenant_name, topic=r.topic, not_after=r.not_after)]
    if r.renewed:
        lines.append(t("apns.cli.renewed"))
    if r.replaced:
        lines.append(t("apns.cli.replaced", count=r.reenroll_required))
    c = r.canary
    if c:
        if c.get("devices", 0) == 0:
            lines.append(t("apns.cli.canary_none"))
        else:
            lines.append(
                t(
                    "apns.cli.canary",
                    devices=c["devices"],
                    accepted=c.get("accepted", 0),
                    checked_in=c.get("checked_in", 0),
                    recent=c.get("recently_seen", 0),
                )
            )
    _out(r.to_json(), "\n".join(lines))


@apns.command("status")
@click.option("--tenant", "tenant_name", required=True)
@common
def apns_status(tenant_name: str) -> None:
    """The certificate, its expiry findings, and devices that must re-enroll."""
    p = _pomona()
    st = p.apns.status(tenant_name)
    st["findings"] = p.apns.findings(tenant_name, p.clock.now())
    if _json():
        _out(st, "")
        return
    click.echo(
        t("apns.cli.status", topic=st["topic"], not_after=st["not_after"], apple_id=st["apple_id"] or "-")
    )
    for f in st["findings"]:
        rest = facts_text(f["facts"])
        echo_wrapped(f"{f['code']} ({f['severity']})" + (f": {rest}" if rest else ""), indent=4, first="  -")


@apns.command("reenroll")
@click.option("--tenant", "tenant_name", required=True)
@common
def apns_reenroll(tenant_name: str) -> None:
    """Enrollments cut off by a replaced certificate (they must re-enroll): their count and a table, or a
    JSON array of them with --json."""
    p = _pomona()
    r = p.apns.reenroll_required(tenant_name)
    if not _json():
        click.echo(t("apns.cli.reenroll", count=r["count"]))
        if not r["enrollments"]:
            return
    emit_list(
        r["enrollments"],
        [Column("serial"), Column("udid"), Column("topic")],
        empty="",
    )


@main.group()
def webhook() -> None:
    """Webhook notices (certificate expiry and other findings)."""


@webhook.command("set")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--url", required=True)
@click.option(
    "--secret", required=True, help="HMAC-SHA256 key; the X-Pomona-Signature header signs the body."
)
@common
def webhook_set(tenant_name: str, url: str, secret: str) -> None:
    """Send the tenant's findings to this URL."""
    p = _pomona()
    p.notifier.configure(tenant_name, url, secret)
    _out({"tenant": tenant_name, "url": url}, t("push.cli.webhook_set", tenant=tenant_name, url=url))


@webhook.command("show")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--limit", default=20, show_default=True, help="How many of the latest deliveries.")
@common
def webhook_show(tenant_name: str, limit: int) -> None:
    """The tenant's webhook URL (never its secret) and its latest deliveries, newest first."""
    r = _pomona().notifier.show(tenant_name, limit=limit)
    if _json():
        _out(r, "")
        return
    if r["url"] is None:
        click.echo(t("push.cli.webhook_none", tenant=tenant_name))
        return
    click.echo(t("push.cli.webhook_show", tenant=tenant_name, url=r["url"]))
    if r["deliveries"]:
        table(
            [
                Column("time", "at", time=True),
                Column("status"),
                Column("http", "http_status"),
                Column("codes"),
                Column("error"),
            ],
            r["deliveries"],
        )


@webhook.command("test")
@click.option("--tenant", "tenant_name", required=True)
@common
def webhook_test(tenant_name: str) -> None:
    """Send the tenant's current certificate findings now (or a test notice when there are none), once.

    Exit 0 when the receiver accepted it; 1 (WEBHOOK_DELIVERY_FAILED, with the HTTP status or the network
    error, or the refusal of a non-public address) when it did not; 2 when the tenant has no webhook
    (NOT_FOUND)."""
    from pomona.domain.errors import NotFoundError, WebhookDeliveryError

    p = _pomona()
    now = p.clock.now()
    findings = p.apns.findings(tenant_name, now) or [{"code": "TEST", "severity": "info", "facts": {}}]
    tid = p.admin.get_tenant(tenant_name).id
    r = p.notifier.notify(tid, findings, attempts=1)  # by hand: one try, the answer at once
    if r["status"] == "no_webhook":
        raise NotFoundError(
            f"tenant {tenant_name} has no webhook: set one with "
            f"`pomona webhook set --tenant {tenant_name} --url URL --secret SECRET`",
            tenant=tenant_name,
        )
    if r["status"] != "delivered":
        why = f"HTTP {r['http_status']}" if r.get("http_status") is not None else str(r.get("error"))
        raise WebhookDeliveryError(
            f"the webhook did not accept the test notice: {why}",
            tenant=tenant_name,
            receiver_status=r.get("http_status"),
        )
    _out(r, t("push.cli.webhook_result", status=r["status"]))
