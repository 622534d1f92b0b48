"""Table definitions (SQLAlchemy Core). Alembic migrations under ``migrations/`` create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(36)
TS = DateTime(timezone=True)

settings = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("domain", String(255), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("ca_cert_pem", LargeBinary, nullable=False),
    Column("ca_key_pem", LargeBinary, nullable=False),
    Column("push_cert_pem", LargeBinary),
    Column("push_key_pem", LargeBinary),
    Column("push_topic", String(255)),
    Column("push_not_after", TS),
    Column("mdm_authority", String(50)),
    Column("licence_seats", Integer, nullable=False, server_default="0"),
    # Bumped by every change to restrictions or their assignments: processes cache restrictions by it.
    Column("policy_version", Integer, nullable=False, server_default="0"),
    # APNs certificate lifecycle (issue 4): who owns it in Apple's portal, when it last changed, the
    # pending key of a CSR (encrypted with the server key) and a tenant-wide refusal by APNs.
    Column("push_apple_id", String(320)),
    Column("push_cert_updated_at", TS),
    Column("push_pending_key", LargeBinary),
    Column("push_cert_invalid_at", TS),
    Column("push_cert_invalid_reason", String(64)),
    # A P-256 CA's RSA SCEP RA (issue 14): made once, read by every process; the key sealed at rest.
    Column("scep_ra_cert_pem", LargeBinary),
    Column("scep_ra_key_pem", LargeBinary),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE")),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS),
    Column("revoked_at", TS),
    Column("last_used_at", TS),  # an admin API request's, written at most once a minute (migration 0016)
)

users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("upn", String(320), nullable=False),
    Column("email", String(320), nullable=False),
    Column("display_name", String(255), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("password_hash", String(255)),
    Column("created_at", TS, nullable=False),
    Column("licensed", Boolean, nullable=False, server_default="0"),
    Column("mfa_required", Boolean, nullable=False, server_default="0"),
    Column("totp_secret", String(64)),
    Column("is_dem", Boolean, nullable=False, server_default="0"),
    UniqueConstraint("tenant_id", "upn", name="uq_users_tenant_upn"),
    Index("ix_users_tenant_licensed", "tenant_id", "licensed"),
)

groups = Table(
    "groups",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_groups_tenant_name"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", ID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_group_members_user", "user_id"),
)

restrictions = Table(
    "restrictions",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("type", String(16), nullable=False),  # platform | limit
    Column("priority", Integer, nullable=False),  # 1 is the highest; the Default has 0 and ranks last
    Column("is_default", Boolean, nullable=False, server_default="0"),
    Column("ios_allowed", Boolean, nullable=False, server_default="1"),
    Column("ipados_allowed", Boolean, nullable=False, server_default="1"),
    Column("ios_personal_allowed", Boolean, nullable=False, server_default="1"),
    Column("ipados_personal_allowed", Boolean, nullable=False, server_default="1"),
    Column("ios_min_os", String(16)),
    Column("ios_max_os", String(16)),
    Column("ipados_min_os", String(16)),
    Column("ipados_max_os", String(16)),
    Column("device_limit", Integer, nullable=False, server_default="15"),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    UniqueConstraint("tenant_id", "type", "priority", name="uq_restrictions_tenant_type_priority"),
)

restriction_groups = Table(
    "restriction_groups",
    metadata,
    Column("restriction_id", ID, ForeignKey("restrictions.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

corporate_identifiers = Table(
    "corporate_identifiers",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(8), nullable=False),  # serial | imei
    Column("value", String(64), nullable=False),
    Column("description", String(255)),
    Column("state", String(16), nullable=False, server_default="not_contacted"),
    Column("last_contact_at", TS),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("tenant_id", "kind", "value", name="uq_corporate_identifiers_tenant_kind_value"),
)

blocked_devices = Table(
    "blocked_devices",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(8), nullable=False),  # serial | udid
    Column("value", String(64), nullable=False),
    Column("note", String(255)),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("tenant_id", "kind", "value", name="uq_blocked_devices_tenant_kind_value"),
)

enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", ID, ForeignKey("users.id", ondelete="CASCADE")),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("expires_at", TS, nullable=False),
    Column("uses_allowed", Integer, nullable=False),
    Column("uses_count", Integer, nullable=False, default=0),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created_at", TS, nullable=False),
    Column("ade_serial", String(64)),  # an ADE challenge (migration 0014)
)

certs = Table(
    "device_certs",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("serial", String(64), nullable=False),
    Column("token_id", ID, ForeignKey("enrollment_tokens.id", ondelete="SET NULL")),
    Column("user_id", ID, ForeignKey("users.id", ondelete="SET NULL")),
    Column("not_after", TS, nullable=False),
    Column("issued_at", TS, nullable=False),
    Column("enrollment_id", ID),
    Column("ade_serial", String(64)),  # issued for an ADE challenge (migration 0014)
)

devices = Table(
    "devices",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("udid", String(64), nullable=False),
    Column("serial", String(64)),
    Column("product_name", String(64)),
    Column("model", String(64)),
    Column("model_name", String(64)),
    Column("device_name", String(255)),
    Column("os_version", String(32)),
    Column("build_version", String(32)),
    Column("imei", String(32)),
    Column("meid", String(32)),
    Column("capacity_gb", Float),
    Column("battery_level", Float),
    Column("last_seen_at", TS),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("tenant_id", "udid", name="uq_devices_tenant_udid"),
    Index("ix_devices_tenant_serial", "tenant_id", "serial"),
)

enrollments = Table(
    "enrollments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", ID, ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("udid", String(64), nullable=False),
    Column("user_id", ID, ForeignKey("users.id", ondelete="SET NULL")),
    Column("status", String(16), nullable=False),
    Column("type", String(16), nullable=False),
    Column("cert_fingerprint", String(64), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("started_at", TS, nullable=False),
    Column("push_token", LargeBinary),
    Column("push_magic", String(64)),
    Column("unlock_token", LargeBinary),
    Column("awaiting_configuration", Boolean, nullable=False, default=False),
    Column("token_updated_at", TS),
    Column("ended_at", TS),
    # Push reachability (issue 4). A 410 or a permanent rejection stops pushes until a new TokenUpdate.
    Column("push_token_invalid_at", TS),
    Column("push_token_invalid_reason", String(64)),
    Column("last_push_at", TS),
    Column("last_push_status", String(64)),
    Column("first_unanswered_push_at", TS),
    # Set when the tenant's push certificate was replaced by one with another topic.
    Column("reenroll_required_at", TS),
    Index("ix_enrollments_fingerprint", "cert_fingerprint"),
    Index("ix_enrollments_tenant_udid_status", "tenant_id", "udid", "status"),
    Index("ix_enrollments_device", "device_id"),
    Index("ix_enrollments_user_status", "user_id", "status"),
    Index("ix_enrollments_tenant_status", "tenant_id", "status"),
    # Devices orphaned by a topic change are counted by health and diagnose on every run.
    Index("ix_enrollments_tenant_reenroll", "tenant_id", "reenroll_required_at"),
)

commands = Table(
    "commands",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("command_uuid", String(64), nullable=False),
    Column("enrollment_id", ID, ForeignKey("enrollments.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", ID, nullable=False),
    Column("request_type", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(24), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("sent_at", TS),
    Column("result_at", TS),
    Column("result", LargeBinary),
    Column("error_chain", Text),
    UniqueConstraint("tenant_id", "command_uuid", name="uq_commands_tenant_uuid"),
    Index("ix_commands_enrollment_status", "enrollment_id", "status", "id"),
    Index("ix_commands_device", "device_id", "id"),
    # History retention finds a tenant's commands answered before a time (migration 0018).
    Index("ix_commands_tenant_result_at", "tenant_id", "result_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant_id", ID, nullable=False),
    Column("at", TS, nullable=False),
    Column("step", String(16), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("reason", String(64)),
    Column("user_id", ID),
    Column("upn", String(320)),
    Column("serial", String(64)),
    Column("udid", String(64)),
    Column("enrollment_id", ID),
    Column("request_id", String(64)),
    Column("detail", Text),
    Index("ix_events_tenant_at", "tenant_id", "at"),
    Index("ix_events_tenant_reason_at", "tenant_id", "reason", "at"),
    # Diagnosis reads one user's or one device's recent events: (who, time) indexes answer that directly.
    Index("ix_events_tenant_serial_at", "tenant_id", "serial", "at"),
    Index("ix_events_tenant_udid_at", "tenant_id", "udid", "at"),
    Index("ix_events_tenant_upn_at", "tenant_id", "upn", "at"),
    # The incident summary counts the attempts at the enrollment steps in its window (migration 0017).
    Index("ix_events_tenant_step_at", "tenant_id", "step", "at"),
)

# --- troubleshooting (diagnose, health, reports) -------------------------------------------------
health_findings = Table(
    "health_findings",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("code", String(64), nullable=False),
    Column("subject", String(255), nullable=False),  # "tenant", "domain:example.com", "device:<udid>", ...
    Column("severity", String(16), nullable=False),  # critical | warning | info
    Column("facts", Text),
    Column("first_seen", TS, nullable=False),
    Column("last_seen", TS, nullable=False),
    Column("resolved_at", TS),
    Column("notified_at", TS),
    Index("ix_health_findings_tenant_open", "tenant_id", "resolved_at", "code"),
)

# Failure counts per day, maintained as failure events are appended, so that reports over months of a
# large event log read hundreds of rows, not millions.
failure_rollup = Table(
    "failure_rollup",
    metadata,
    Column("tenant_id", ID, primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD (UTC)
    Column("reason", String(64), primary_key=True),
    Column("platform", String(16), primary_key=True),  # ios | ipados | unknown
    Column("enrollment_type", String(16), primary_key=True),
    Column("step", String(16), primary_key=True),
    Column("count", Integer, nullable=False),
)

# One pending push per enrollment (coalesced). A row stays while the enrollment has pending commands and
# is re-pushed with backoff; claimed_until is the lease that lets another process take over after a crash.
push_queue = Table(
    "push_queue",
    metadata,
    Column("enrollment_id", ID, ForeignKey("enrollments.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("due_at", TS, nullable=False),
    Column("kind", String(16), nullable=False, server_default="command"),  # command | canary
    Column("attempts", Integer, nullable=False, server_default="0"),  # accepted pushes (re-push backoff)
    Column("failures", Integer, nullable=False, server_default="0"),  # transient failures in a row
    Column("last_error", String(64)),
    Column("first_pushed_at", TS),
    Column("claimed_until", TS),
    Column("claimed_by", String(64)),
    Column("created_at", TS, nullable=False),
    Index("ix_push_queue_due_at", "due_at"),
    Index("ix_push_queue_tenant", "tenant_id"),
)

portal_sessions = Table(
    "portal_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # sha256 of the cookie's random id
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", ID, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("revoked_at", TS),
    Column("revoked_why", String(16)),  # signout | password | user
    Column("stamp", String(64), nullable=False),  # digest of the password hash at sign-in
    Index("ix_portal_sessions_tenant_id_user_id", "tenant_id", "user_id"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("secret", LargeBinary, nullable=False),  # encrypted with the server key
    Column("created_at", TS, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("at", TS, nullable=False),
    Column("url", String(2000), nullable=False),
    Column("codes", String(255), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # delivered | failed
    Column("http_status", Integer),
    Column("error", Text),
    Index("ix_webhook_deliveries_tenant_at", "tenant_id", "at"),
)

# --- the console (issue 13) -----------------------------------------------------------------------
admin_accounts = Table(
    "admin_accounts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),  # lower-case
    Column("role", String(16), nullable=False),  # operator | admin | helpdesk
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE")),  # None: the operator
    Column("password_hash", String(255), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("totp_secret", String(64)),
    Column("last_sign_in_at", TS),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),  # sha256 of the cookie's random id
    Column("admin_id", ID, ForeignKey("admin_accounts.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("revoked_at", TS),
    Column("revoked_why", String(16)),  # signout | password | user
    Column("stamp", String(64), nullable=False),
    Index("ix_console_sessions_admin_id", "admin_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("actor", String(320), nullable=False),
    Column("action", String(64), nullable=False),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE")),
    Column("target", String(255)),
    Column("source", String(64)),
    Column("detail", Text, nullable=False, server_default="{}"),  # JSON
    Index("ix_audit_log_tenant_id", "tenant_id", "id"),
)

# The console's device list pages by (sort column, id) within a tenant (storage/console_sql.py).
Index("ix_devices_tenant_name_id", devices.c.tenant_id, devices.c.device_name, devices.c.id)
Index("ix_devices_tenant_serial_id", devices.c.tenant_id, devices.c.serial, devices.c.id)
Index("ix_devices_tenant_last_seen_id", devices.c.tenant_id, devices.c.last_seen_at, devices.c.id)
# --- Apple Business Manager (issue 12) ------------------------------------------------------------
abm_keypairs = Table(
    "abm_keypairs",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("cert_pem", LargeBinary, nullable=False),  # what the admin uploads to ABM
    Column("key_pem", LargeBinary, nullable=False),  # sealed (context abm-key:<tenant id>)
    Column("created_at", TS, nullable=False),
)

abm_tokens = Table(
    "abm_tokens",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("consumer_key", String(200), nullable=False),
    Column("secret", LargeBinary, nullable=False),  # the token's JSON, sealed (context abm-token:<id>)
    Column("access_token_expiry", TS, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("cursor", String(1000)),
    Column("last_sync_at", TS),
    Column("last_full_sync_at", TS),
    Column("last_error", String(64)),
    Column("last_error_at", TS),
    UniqueConstraint("tenant_id", "name", name="uq_abm_tokens_tenant_id_name"),
)

abm_devices = Table(
    "abm_devices",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("serial_number", String(64), primary_key=True),
    Column("token_id", ID, nullable=False),
    Column("model", String(200), nullable=False, default=""),
    Column("description", String(500), nullable=False, default=""),
    Column("color", String(100), nullable=False, default=""),
    Column("asset_tag", String(200), nullable=False, default=""),
    Column("device_family", String(32), nullable=False, default=""),
    Column("os", String(32), nullable=False, default=""),
    Column("profile_status", String(16), nullable=False, default="empty"),
    Column("profile_uuid", String(64), nullable=False, default=""),
    Column("profile_assign_time", TS),
    Column("profile_push_time", TS),
    Column("device_assigned_date", TS),
    Column("device_assigned_by", String(320), nullable=False, default=""),
    Column("op_type", String(16), nullable=False, default=""),
    Column("op_date", TS),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("first_seen_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("order_number", String(64), nullable=False, server_default=""),  # when ABM gives one
    # An ADE profile's page walks the devices ABM lists with its UUID under a token, and the Apple
    # settings page counts them, from the index alone (migration 0017).
    Index(
        "ix_abm_devices_tenant_token_profile",
        *("tenant_id", "token_id", "profile_uuid", "serial_number", "profile_status", "deleted"),
    ),
)

abm_device_history = Table(
    "abm_device_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("serial_number", String(64), nullable=False),
    Column("token_id", ID, nullable=False),
    Column("at", TS, nullable=False),
    Column("op_type", String(16), nullable=False),
    Column("op_date", TS),
    Column("profile_status", String(16), nullable=False),
    Column("profile_uuid", String(64), nullable=False),
    Column("profile_assign_time", TS),
    Column("profile_push_time", TS),
    Column("device_assigned_by", String(320), nullable=False),
    Column("reason", String(64)),  # an assignment's failure: Apple's answer or a reason code
    Index("ix_abm_device_history_tenant_id_serial_number", "tenant_id", "serial_number"),
)

# ADE enrollment profiles (issue 12): what the admin defined, Apple's UUID of it per token, and what
# Pomona wants assigned to each device with the reconciliation's state (attempts, next try).
abm_profiles = Table(
    "abm_profiles",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("token_id", ID),  # None: every token of the tenant
    Column("name", String(200), nullable=False),
    Column("settings", Text, nullable=False),  # JSON: the AdeProfile's fields
    Column("is_default", Boolean, nullable=False, default=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_abm_profiles_tenant_id_name"),
)

abm_profile_definitions = Table(
    "abm_profile_definitions",
    metadata,
    Column("profile_id", ID, ForeignKey("abm_profiles.id", ondelete="CASCADE"), primary_key=True),
    Column("token_id", ID, ForeignKey("abm_tokens.id", ondelete="CASCADE"), primary_key=True),
    Column("profile_uuid", String(64), nullable=False),
    Column("defined_at", TS, nullable=False),
)

abm_assignments = Table(
    "abm_assignments",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("serial_number", String(64), primary_key=True),
    Column("profile_id", ID, ForeignKey("abm_profiles.id", ondelete="CASCADE"), nullable=False),
    Column("explicit", Boolean, nullable=False, default=True),  # False: adopted from the default
    Column("attempts", Integer, nullable=False, default=0),  # tries since the device last matched
    Column("next_try_at", TS),
    Column("last_try_at", TS),
    Column("last_error", String(64)),
    Column("rule_id", ID),  # not explicit: the assignment rule it came from (NULL: the default)
    # An ADE profile's page walks the assignments wanting it, by serial; the Apple settings page counts
    # them and their refusals per profile, from the index alone (migration 0017).
    Index("ix_abm_assignments_tenant_profile", "tenant_id", "profile_id", "serial_number", "last_error"),
)

abm_assignment_rules = Table(
    "abm_assignment_rules",
    metadata,
    Column("id", ID, primary_key=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("profile_id", ID, ForeignKey("abm_profiles.id", ondelete="CASCADE"), nullable=False),
    Column("field", String(32), nullable=False),  # model | device_family | order_number
    Column("value", String(200), nullable=False),  # a case-insensitive glob
    Column("priority", Integer, nullable=False),  # lowest first
    Column("created_at", TS, nullable=False),
    Index("ix_abm_assignment_rules_tenant_id", "tenant_id"),
)

# --- state shared between processes (issue 14) -----------------------------------------------------
# Times here are epoch seconds (Float): the upserts compare them in SQL the same way on both databases.

leases = Table(
    "leases",
    metadata,
    Column("name", String(100), primary_key=True),  # the singleton job's name
    Column("holder", String(200), nullable=False),  # host:pid:random of the process that holds it
    Column("expires_at", Float, nullable=False),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(64), primary_key=True),  # sha256 of the limiter's key
    Column("hits", Integer, nullable=False),
    Column("window_start", Float, nullable=False),
    Index("ix_rate_limits_window_start", "window_start"),
)

totp_steps = Table(
    "totp_steps",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("step", BigInteger, nullable=False),  # the last accepted TOTP time step
)
