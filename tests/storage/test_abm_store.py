"""The ABM store (ports.AbmStore): the same suite on memory, SQLite and PostgreSQL, and the sealing of the
ABM key and the tokens' credentials at rest on SQL."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from pomona.domain.errors import ConflictError
from pomona.domain.models import Tenant
from pomona.ports import AbmTokenInfo, AbmUpsert, Database
from pomona.protocol.dep import AbmDevice, ServerToken
from pomona.storage import schema as s
from pomona.storage.sql import SqlDatabase

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CREDS = ServerToken("CK_1", "CS_secret", "AT_1", "AS_secret", NOW + timedelta(days=300))


def tenant(db: Database) -> str:
    tid = str(uuid.uuid4())
    with db.unit_of_work() as uow:
        uow.tenants.add(Tenant(tid, f"t-{tid[:8]}", "acme.example", NOW, b"ca"), b"ca-key")
    return tid


def token(db: Database, tid: str, name: str = "abm-1") -> AbmTokenInfo:
    info = AbmTokenInfo(str(uuid.uuid4()), tid, name, "CK_1", CREDS.access_token_expiry, NOW)
    with db.unit_of_work() as uow:
        uow.abm.add_token(info, CREDS)
    return info


def dev(serial: str, **kw: object) -> AbmDevice:
    base = AbmDevice(
        serial,
        model="iPhone 14 Pro",
        device_family="iPhone",
        os="iOS",
        color="BLACK",
        device_assigned_date=NOW - timedelta(days=2),
        device_assigned_by="admin@acme.example",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def upsert(db: Database, tid: str, tok: str, devices: list[AbmDevice], at: datetime = NOW) -> AbmUpsert:
    with db.unit_of_work() as uow:
        return uow.abm.upsert_devices(tid, tok, devices, at)


class TestKeysAndTokens:
    def test_keypair_round_trip_and_replace(self, db: Database) -> None:
        """The key pair reads back as written; a second one replaces the first."""
        tid = tenant(db)
        with db.unit_of_work() as uow:
            assert uow.abm.keypair(tid) is None
            uow.abm.set_keypair(tid, b"cert1", b"key1", NOW)
            uow.abm.set_keypair(tid, b"cert2", b"key2", NOW)
        with db.unit_of_work(readonly=True) as uow:
            assert uow.abm.keypair(tid) == (b"cert2", b"key2")

    def test_tokens_listed_by_name_with_credentials_apart(self, db: Database) -> None:
        """Tokens list without secrets, by name; credentials read back whole; a name is unique per tenant."""
        tid = tenant(db)
        b = token(db, tid, "b")
        a = token(db, tid, "a")
        with db.unit_of_work(readonly=True) as uow:
            assert [t.name for t in uow.abm.tokens(tid)] == ["a", "b"]
            assert uow.abm.credentials(a.id) == CREDS
            assert uow.abm.tokens(tenant(db)) == []
        with pytest.raises(ConflictError):
            token(db, tid, "a")
        with db.unit_of_work() as uow:
            assert uow.abm.remove_token(tid, b.id) is True
            assert uow.abm.remove_token(tid, b.id) is False
            assert [t.name for t in uow.abm.tokens(tid)] == ["a"]

    def test_sync_state(self, db: Database) -> None:
        """A sync keeps its cursor and clears the last error; a failure keeps its reason, and an expired
        cursor is forgotten (the next sync is a full fetch)."""
        tid = tenant(db)
        t = token(db, tid)
        with db.unit_of_work() as uow:
            uow.abm.sync_failed(t.id, "DEP_TERMS_NOT_ACCEPTED", NOW)
        with db.unit_of_work() as uow:
            uow.abm.sync_done(t.id, "C1", NOW, full=True)
        with db.unit_of_work(readonly=True) as uow:
            (got,) = uow.abm.tokens(tid)
        assert (got.cursor, got.last_error, got.last_full_sync_at) == ("C1", None, NOW)
        with db.unit_of_work() as uow:
            uow.abm.sync_failed(t.id, "DEP_CURSOR_EXPIRED", NOW + timedelta(minutes=5))
        with db.unit_of_work(readonly=True) as uow:
            (got,) = uow.abm.tokens(tid)
        assert (got.cursor, got.last_error) == (None, "DEP_CURSOR_EXPIRED")


class TestDevices:
    def test_upsert_counts_and_keeps_every_field(self, db: Database) -> None:
        """New devices are added with Apple's fields; the same page again changes nothing."""
        tid = tenant(db)
        page = [dev(f"S{i:03d}") for i in range(5)]
        assert upsert(db, tid, "tok", page) == AbmUpsert(added=5)
        assert upsert(db, tid, "tok", page, NOW + timedelta(minutes=5)) == AbmUpsert(unchanged=5)
        with db.unit_of_work(readonly=True) as uow:
            (r,) = uow.abm.devices(tid, serial="S003")
            assert uow.abm.device_count(tid) == 5
            assert uow.abm.listed_serials(tid, "tok") == {f"S{i:03d}" for i in range(5)}
        assert r.device == page[3] and r.deleted is False and r.first_seen_at == NOW

    def test_changes_and_deletions_make_a_timeline(self, db: Database) -> None:
        """An assignment is a change, a deletion keeps the device (marked) and what was known of it, and
        each step is in the device's history, oldest first."""
        tid = tenant(db)
        upsert(db, tid, "tok", [dev("S1"), dev("S2")])
        later = NOW + timedelta(hours=1)
        assigned = dev(
            "S1",
            profile_status="assigned",
            profile_uuid="P1",
            profile_assign_time=later,
            op_type="modified",
            op_date=later,
        )
        assert upsert(db, tid, "tok", [assigned], later) == AbmUpsert(modified=1)
        gone = AbmDevice("S1", op_type="deleted", op_date=later + timedelta(hours=1))
        assert upsert(db, tid, "tok", [gone], later + timedelta(hours=1)) == AbmUpsert(deleted=1)
        with db.unit_of_work(readonly=True) as uow:
            (r,) = uow.abm.devices(tid, serial="S1")
            history = uow.abm.history(tid, "S1")
            assert uow.abm.device_count(tid) == 1 and uow.abm.device_count(tid, deleted=True) == 1
            assert uow.abm.listed_serials(tid, "tok") == {"S2"}
        assert r.deleted and (r.device.model, r.device.profile_uuid) == ("iPhone 14 Pro", "P1")
        assert [(h.op_type, h.profile_status) for h in history] == [
            ("added", "empty"),
            ("modified", "assigned"),
            ("deleted", "assigned"),
        ]
        assert upsert(db, tid, "tok", [dev("S1", op_type="added", op_date=later)]) == AbmUpsert(added=1)

    def test_full_fetch_after_sync_writes_nothing_new(self, db: Database) -> None:
        """A full fetch (no op_type) of devices a sync already recorded leaves them and their history alone."""
        tid = tenant(db)
        upsert(db, tid, "tok", [dev("S1", op_type="added", op_date=NOW)])
        assert upsert(db, tid, "tok", [dev("S1")]) == AbmUpsert(unchanged=1)
        with db.unit_of_work(readonly=True) as uow:
            assert len(uow.abm.history(tid, "S1")) == 1


class TestSealedAtRest:
    def test_key_and_credentials_are_sealed(self, db_url: str) -> None:
        """With a server key, the ABM key and the token's credentials are stored sealed, and read back."""
        from pomona.pki.sealing import KeyringSealer

        db = SqlDatabase(db_url, sealer=KeyringSealer([b"k" * 32]))
        try:
            tid = tenant(db)  # type: ignore[arg-type]
            t = token(db, tid)  # type: ignore[arg-type]
            with db.unit_of_work() as uow:
                uow.abm.set_keypair(tid, b"cert", b"-----BEGIN PRIVATE KEY-----", NOW)
            with db.unit_of_work(readonly=True) as uow:
                raw_key = uow.conn.execute(select(s.abm_keypairs.c.key_pem)).scalar_one()
                raw_secret = uow.conn.execute(select(s.abm_tokens.c.secret)).scalar_one()
                assert uow.abm.keypair(tid) == (b"cert", b"-----BEGIN PRIVATE KEY-----")
                assert uow.abm.credentials(t.id) == CREDS
            assert bytes(raw_key)[:1] == b"\x02" and b"PRIVATE" not in bytes(raw_key)
            assert bytes(raw_secret)[:1] == b"\x02" and b"CS_secret" not in bytes(raw_secret)
        finally:
            db.dispose()


class TestProfilesAndAssignments:
    def test_profiles_with_definitions_and_one_default(self, db: Database) -> None:
        """Profiles read back by name with their settings and Apple's UUID per token; a replaced
        definition, a dropped one, and clear_default leaving only the kept default of the scope."""
        from pomona.ports import AbmProfileRecord

        tid = tenant(db)
        t1, t2 = token(db, tid, "a"), token(db, tid, "b")
        b = AbmProfileRecord(
            "p-b", tid, "b", {"auth": "legacy", "skip_setup_items": ["Siri"]}, NOW, NOW, None, True
        )
        a = AbmProfileRecord("p-a", tid, "a", {"auth": "modern"}, NOW, NOW, t1.id, True)
        c = AbmProfileRecord("p-c", tid, "c", {}, NOW, NOW, None, True)
        with db.unit_of_work() as uow:
            for p in (b, a, c):
                uow.abm.save_profile(p)
            uow.abm.set_definition("p-b", t1.id, "U1", NOW)
            uow.abm.set_definition("p-b", t2.id, "U2", NOW)
            uow.abm.set_definition("p-b", t1.id, "U3", NOW)
            uow.abm.clear_default(tid, None, keep="p-c")
        with db.unit_of_work(readonly=True) as uow:
            got = uow.abm.profiles(tid)
        assert [(p.name, p.is_default, p.token_id) for p in got] == [
            ("a", True, t1.id),
            ("b", False, None),
            ("c", True, None),
        ]
        assert got[1].settings == b.settings and dict(got[1].definitions) == {t1.id: "U3", t2.id: "U2"}
        with db.unit_of_work() as uow:
            uow.abm.drop_definitions("p-b", t1.id)
            uow.abm.save_profile(replace(b, settings={"auth": "none"}, is_default=False))
        with db.unit_of_work(readonly=True) as uow:
            again = {p.name: p for p in uow.abm.profiles(tid)}
        assert dict(again["b"].definitions) == {t2.id: "U2"} and again["b"].settings == {"auth": "none"}
        assert len(again) == 3

    def test_history_until(self, db: Database) -> None:
        """A device's timeline before a time: the newest ``limit`` entries older than ``until``, oldest
        first, of that serial only (the console's device timeline pages back with it)."""
        from pomona.ports import AbmHistoryEntry

        tid = tenant(db)
        t = token(db, tid)

        def entry(minutes: int) -> AbmHistoryEntry:
            at = NOW + timedelta(minutes=minutes)
            return AbmHistoryEntry(at, "modified", at, "assigned", "U", None, None, "", t.id)

        with db.unit_of_work() as uow:
            uow.abm.add_history(tid, [("S1", entry(m)) for m in (1, 2, 3, 4)] + [("S2", entry(0))])
        with db.unit_of_work(readonly=True) as uow:
            got = uow.abm_view.history(tid, "S1", limit=2, newest=True, until=NOW + timedelta(minutes=4))
            assert [h.at for h in got] == [NOW + timedelta(minutes=m) for m in (2, 3)]
            assert len(uow.abm_view.history(tid, "S1", newest=True)) == 4
            assert uow.abm_view.history(tid, "S1", until=NOW + timedelta(minutes=1)) == []

    def test_assignments_round_trip_and_history_entries(self, db: Database) -> None:
        """An assignment is added and replaced by serial with its attempts and next try; an assignment's
        timeline entry reads back with its reason; profile_states lists the token's devices, not deleted."""
        from pomona.ports import AbmAssignment, AbmHistoryEntry, AbmProfileRecord

        tid = tenant(db)
        t = token(db, tid)
        upsert(db, tid, t.id, [dev("S1", profile_uuid="U", profile_status="assigned"), dev("S2")])
        upsert(db, tid, t.id, [dev("S2", op_type="deleted", op_date=NOW)])
        with db.unit_of_work() as uow:
            uow.abm.save_profile(AbmProfileRecord("p", tid, "p", {}, NOW, NOW))
            uow.abm.save_assignments(tid, [AbmAssignment(tid, "S1", "p"), AbmAssignment(tid, "S2", "p")])
            uow.abm.save_assignments(
                tid, [AbmAssignment(tid, "S1", "p", False, 2, NOW + timedelta(minutes=5), NOW, "FAILED")]
            )
            entry = AbmHistoryEntry(NOW, "assign-failed", None, "", "U", None, None, "", t.id, "FAILED")
            uow.abm.add_history(tid, [("S1", entry)])
        with db.unit_of_work(readonly=True) as uow:
            assert uow.abm.assignments(tid) == {
                "S1": AbmAssignment(tid, "S1", "p", False, 2, NOW + timedelta(minutes=5), NOW, "FAILED"),
                "S2": AbmAssignment(tid, "S2", "p"),
            }
            assert uow.abm.assignments(tenant(db)) == {}
            assert uow.abm.assignment(tid, "S1") == uow.abm.assignments(tid)["S1"]
            assert uow.abm.assignment(tid, "S9") is None
            whole = uow.abm.history(tid, "S1")
            assert uow.abm.history(tid, "S1", limit=1, newest=True) == whole[-1:]
            assert uow.abm.history(tid, "S1", limit=1) == whole[:1] and len(whole) >= 2
            assert uow.abm.profile_states(tid, t.id) == [("S1", "U", "assigned")]
            last = uow.abm.history(tid, "S1")[-1]
        assert (last.op_type, last.reason, last.profile_uuid) == ("assign-failed", "FAILED", "U")

    def test_rules_and_device_facts(self, db: Database) -> None:
        """Assignment rules read back by priority then age, are removed only within their tenant, and go
        with their profile; device_facts gives each listed device's model, family and order number; an
        assignment keeps the rule it came from."""
        from pomona.ports import AbmAssignment, AbmAssignmentRule, AbmProfileRecord

        tid, other = tenant(db), tenant(db)
        t = token(db, tid)
        upsert(
            db,
            tid,
            t.id,
            [dev("S1", order_number="ORD-1"), dev("S2", model="iPad mini", device_family="iPad"), dev("S3")],
        )
        upsert(db, tid, t.id, [dev("S3", op_type="deleted", op_date=NOW)])
        late = AbmAssignmentRule("r-late", tid, "p", "model", "iPad*", 10, NOW + timedelta(seconds=1))
        first = AbmAssignmentRule("r-first", tid, "p", "order_number", "ORD-1", 5, NOW)
        early = AbmAssignmentRule("r-early", tid, "p", "device_family", "iPhone", 10, NOW)
        with db.unit_of_work() as uow:
            uow.abm.save_profile(AbmProfileRecord("p", tid, "p", {}, NOW, NOW))
            for r in (late, first, early):
                uow.abm.add_rule(r)
            uow.abm.save_assignments(tid, [AbmAssignment(tid, "S1", "p", False, rule_id="r-first")])
        with db.unit_of_work() as uow:
            assert uow.abm.rules(tid) == [first, early, late] and uow.abm.rules(other) == []
            assert uow.abm.remove_rule(other, "r-late") is False
            assert uow.abm.remove_rule(tid, "r-late") is True
            assert uow.abm.assignments(tid)["S1"].rule_id == "r-first"
            facts = uow.abm.device_facts(tid, t.id)
        assert facts == {
            "S1": {"model": "iPhone 14 Pro", "device_family": "iPhone", "order_number": "ORD-1"},
            "S2": {"model": "iPad mini", "device_family": "iPad", "order_number": ""},
        }
        with db.unit_of_work(readonly=True) as uow:
            assert [r.id for r in uow.abm.rules(tid)] == ["r-first", "r-early"]
            (s1,) = uow.abm.devices(tid, serial="S1")
        assert s1.device.order_number == "ORD-1"

    def test_flagged_is_the_latest_entry_until_a_later_one(self, db: Database) -> None:
        """`flagged` names the devices whose latest timeline entry has the reason (all, or one serial);
        a later entry (ABM listing the device again) clears it."""
        from pomona.ports import AbmHistoryEntry

        tid = tenant(db)
        t = token(db, tid)
        upsert(db, tid, t.id, [dev("S1"), dev("S2")])
        upsert(db, tid, t.id, [dev("S1", op_type="deleted", op_date=NOW)])
        gone = AbmHistoryEntry(
            NOW, "elsewhere", None, "", "", None, None, "", t.id, "DEP_DEVICE_ASSIGNED_ELSEWHERE"
        )
        with db.unit_of_work() as uow:
            uow.abm.add_history(tid, [("S1", gone), ("S2", gone)])
        upsert(db, tid, t.id, [dev("S2", profile_status="assigned", profile_uuid="U")], NOW + timedelta(1))
        with db.unit_of_work(readonly=True) as uow:
            assert uow.abm.flagged(tid, "DEP_DEVICE_ASSIGNED_ELSEWHERE") == [("S1", NOW)]
            assert uow.abm.flagged(tid, "DEP_DEVICE_ASSIGNED_ELSEWHERE", serial="S1") == [("S1", NOW)]
            assert uow.abm.flagged(tid, "DEP_DEVICE_ASSIGNED_ELSEWHERE", serial="S2") == []
            assert uow.abm.flagged(tenant(db), "DEP_DEVICE_ASSIGNED_ELSEWHERE") == []


class TestAbmListing:
    @pytest.mark.parametrize("sums", [True, False], ids=["sums", "group-by"])
    def test_profile_counts(self, db: Database, sums: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        """Per profile: the devices Pomona wants it on, those ABM shows with its UUID under their token
        (assigned or pushed, not deleted), and the wanted ones whose last assignment failed; another
        tenant's rows never count. SQL counts with sums, or with GROUP BY past its number of profiles."""
        from pomona.ports import AbmAssignment, AbmProfileRecord, AdeProfileCount
        from pomona.storage.console_sql import SqlAbmListing

        if not sums:
            monkeypatch.setattr(SqlAbmListing, "MAX_SUMS", 0)

        tid, other = tenant(db), tenant(db)
        t1, t2 = token(db, tid, "a"), token(db, tid, "b")
        upsert(
            db,
            tid,
            t1.id,
            [
                dev("S1", profile_uuid="U1", profile_status="assigned"),
                dev("S2", profile_uuid="U1", profile_status="pushed"),
                dev("S3", profile_uuid="U1", profile_status="empty"),  # not held
                dev("S4", profile_uuid="U2", profile_status="assigned"),  # t2's UUID under t1: not held
            ],
        )
        upsert(db, tid, t2.id, [dev("S5", profile_uuid="U2", profile_status="assigned")])
        upsert(db, tid, t1.id, [dev("S2", op_type="deleted", op_date=NOW)])  # deleted: not held
        ot = token(db, other, "a")
        upsert(db, other, ot.id, [dev("X1", profile_uuid="U1", profile_status="assigned")])
        with db.unit_of_work() as uow:
            for pid, t in (("p", tid), ("q", tid), ("r", tid), ("o", other)):
                uow.abm.save_profile(AbmProfileRecord(pid, t, pid, {}, NOW, NOW))
            uow.abm.set_definition("p", t1.id, "U1", NOW)
            uow.abm.set_definition("q", t2.id, "U2", NOW)
            uow.abm.set_definition("o", ot.id, "U1", NOW)
            uow.abm.save_assignments(
                tid,
                [
                    AbmAssignment(tid, "S1", "p"),
                    AbmAssignment(tid, "S3", "p", False, 1, None, NOW, "FAILED"),
                    AbmAssignment(tid, "S5", "q"),
                ],
            )
            uow.abm.save_assignments(other, [AbmAssignment(other, "X1", "o")])
        empty = tenant(db)
        with db.unit_of_work(readonly=True) as uow:
            got = uow.abm_listing.profile_counts(tid)
            assert uow.abm_listing.profile_counts(empty) == {}
        assert got == {"p": AdeProfileCount(2, 1, 1), "q": AdeProfileCount(1, 1, 0)}
