"""The public URL is a fact of the installation: recorded by `serve` or set by an admin, read by every
process (profiles, links, health and diagnose's CNAME targets), whatever that process's environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag_helpers import World
from helpers import cli, same_data_dir, setup_tenant  # noqa: F401 - same_data_dir is autouse here
from pomona.app import Settings, build
from pomona.services.diagnose import to_json
from pomona.services.installation import UrlSource, record_public_url, served_public_url
from pomona.storage.memory import MemoryDatabase


class TestRecorded:
    def test_set_public_url_is_read_by_another_process(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path
    ) -> None:
        """After `server set-public-url`, a process with another POMONA_PUBLIC_URL still uses the recorded one."""
        code, out = cli(monkeypatch, db_url, "server", "set-public-url", "https://mdm.acme.example/")
        assert code == 0, out
        monkeypatch.setenv("POMONA_PUBLIC_URL", "http://127.0.0.1:8080")
        code, out = cli(monkeypatch, db_url, "server", "show", "--json")
        assert json.loads(out) == {"public_url": "https://mdm.acme.example", "source": "set"}
        p = build(Settings(data_dir=tmp_path, database_url=db_url, public_url="http://127.0.0.1:8080"))
        try:
            s = setup_tenant(p)
            assert s.enroll_url.startswith("https://mdm.acme.example/")
            assert p.diagnose.settings.enrollment_target == "mdm.acme.example"
            assert p.health.settings.enrollment_target == "mdm.acme.example"
        finally:
            p.close()

    @pytest.mark.parametrize(
        "bad", ["mdm.acme.example", "ftp://mdm.acme.example", "https://", "https://x/?a=1"]
    )
    def test_a_bad_url_is_refused(self, monkeypatch: pytest.MonkeyPatch, db_url: str, bad: str) -> None:
        """A URL without https:// and a host (or with a query) is refused with exit 2 and a reason code."""
        code, out = cli(monkeypatch, db_url, "server", "set-public-url", bad)
        assert code == 2 and "INVALID_INPUT" in out, out

    def test_serve_records_what_it_serves(self) -> None:
        """serve records its listening address unless an admin set one; a given URL is recorded as set."""
        db = MemoryDatabase()
        assert served_public_url(db, given=None, listening="http://127.0.0.1:8080").source is UrlSource.SERVE
        assert (
            served_public_url(db, given=None, listening="http://127.0.0.1:9000").url
            == "http://127.0.0.1:9000"
        )
        record_public_url(db, "https://mdm.acme.example", UrlSource.SET)
        assert (
            served_public_url(db, given=None, listening="http://127.0.0.1:9000").url
            == "https://mdm.acme.example"
        )
        got = served_public_url(db, given="https://mdm2.acme.example", listening="http://127.0.0.1:9000")
        assert (got.url, got.source) == ("https://mdm2.acme.example", UrlSource.SET)


class TestDnsOnAnAddress:
    def test_no_cname_advice_for_an_ip_address(self, db_url: str, tmp_path: Path, zone: object) -> None:
        """A server whose public URL is an IP address gets no CNAME finding: DNS cannot point at it."""
        p = build(
            Settings(
                data_dir=tmp_path,
                database_url=db_url,
                public_url="http://127.0.0.1:8080",
                dns_server=f"127.0.0.1:{zone.port}",  # type: ignore[attr-defined]
            )
        )
        try:
            s = setup_tenant(p)
            r = to_json(p.diagnose.diagnose(s.name, upn=s.upn, message="DNS_ENROLLMENT_CNAME_MISSING"), "en")
            assert r["answer"]["code"] == "UNKNOWN"  # type: ignore[index]
            dns = next(f for f in r["findings"] if f["code"] == "DNS_ENROLLMENT_CNAME_MISSING")  # type: ignore[attr-defined]
            assert dns["verdict"] == "unknown" and "set-public-url" in dns["observed"]
            assert not [f for f in p.health.run(s.name)["findings"] if f["code"].startswith("DNS_")]
        finally:
            p.close()

    def test_a_name_gets_its_cname_checked(self, w: World) -> None:
        """With a public name, the missing CNAME is proven and names that name as the target."""
        del w.zone.cnames[f"enterpriseenrollment.{w.s.name}.example"]
        r = to_json(
            w.p.diagnose.diagnose(w.s.name, upn=w.s.upn, message="DNS_ENROLLMENT_CNAME_MISSING"), "en"
        )
        assert (r["answer"]["code"], r["answer"]["verdict"]) == ("DNS_ENROLLMENT_CNAME_MISSING", "proven")  # type: ignore[index]
        assert r["findings"][0]["evidence"][0]["expected"] == "mdm.pomona.test"  # type: ignore[index]
