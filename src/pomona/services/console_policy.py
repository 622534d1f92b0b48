"""The console's enrollment restrictions page (issue 13, page 5): device type and device limit
restrictions read, created, edited, re-prioritised, assigned to groups and deleted through the use cases
the CLI runs (`pomona restriction create|edit|delete|list`, :class:`~pomona.services.policy.PolicyService`),
and the policy dry run beside them (`pomona policy explain`).

Every change goes through :meth:`ConsoleService.change_scope` first (the ``policy`` action): another
tenant's is NOT_FOUND, and a role without the action (helpdesk) is refused, the refusal recorded. A
restriction is named by its id; one that is not the tenant's is NOT_FOUND, as one that does not exist.
What may be changed is the policy service's to say (the Default of a kind: its settings, never its
priority, its groups or its existence). Every change leaves an audit entry with who, what and from where;
the policy use cases leave their own events.
"""

from __future__ import annotations

from dataclasses import dataclass

from pomona.domain.errors import InvalidInputError, NotFoundError
from pomona.domain.models import Tenant
from pomona.domain.policy import Decision, Restriction, RestrictionKind
from pomona.i18n import msg
from pomona.ports import AdminAccount
from pomona.services.console import ConsoleService
from pomona.services.policy import PolicyService

#: How many of the tenant's groups the group picker offers at once (a search narrows them).
GROUP_CHOICES = 100


@dataclass(frozen=True)
class RestrictionsView:
    """A tenant's restrictions in the order they are considered (each kind by priority, its Default
    last), with the names of the groups they are assigned to."""

    tenant: Tenant
    restrictions: list[Restriction]
    group_names: dict[str, str]
    choices: list[str]  # the group picker's first GROUP_CHOICES group names

    def groups(self, r: Restriction) -> list[str]:
        """The names of the groups ``r`` is assigned to."""
        return sorted(self.group_names.get(g, g) for g in r.group_ids)


@dataclass(frozen=True)
class RestrictionDetail:
    """One restriction with its assigned groups by name, and the groups the picker offers (those whose
    name contains the search, at most GROUP_CHOICES of ``matching``)."""

    tenant: Tenant
    restriction: Restriction
    groups: list[str]
    choices: list[str]
    matching: int


@dataclass
class RestrictionPagesService:
    console: ConsoleService
    policy: PolicyService

    # --- reading ----------------------------------------------------------------------------------
    def restrictions(self, account: AdminAccount, tenant_ref: str) -> RestrictionsView:
        t = self.console.scope(account, tenant_ref)
        rs, names = self.policy.list_restrictions(t.id)
        order = sorted(rs, key=lambda r: (r.kind is not RestrictionKind.PLATFORM, r.is_default, r.priority))
        choices, _ = self.policy.find_groups(t.id, limit=GROUP_CHOICES)
        return RestrictionsView(t, order, names, choices)

    def restriction(
        self, account: AdminAccount, tenant_ref: str, restriction_id: str, group_search: str = ""
    ) -> RestrictionDetail:
        t = self.console.scope(account, tenant_ref)
        r, names = self._find(t, restriction_id)
        choices, matching = self.policy.find_groups(t.id, group_search, limit=GROUP_CHOICES)
        assigned = sorted((names.get(g, g) for g in r.group_ids), key=str.casefold)
        return RestrictionDetail(t, r, assigned, [c for c in choices if c not in assigned], matching)

    def dry_run(
        self,
        account: AdminAccount,
        tenant_ref: str,
        upn: str,
        *,
        platform: str | None = None,
        os_version: str | None = None,
    ) -> Decision:
        """The policy dry run (helpdesk too): ConsoleService.dry_run."""
        return self.console.dry_run(account, tenant_ref, upn, platform=platform, os_version=os_version)

    # --- changes ----------------------------------------------------------------------------------
    def create(
        self,
        account: AdminAccount,
        tenant_ref: str,
        kind: str,
        source: str,
        *,
        priority: int,
        name: str = "",
        group: str = "",
        settings: dict[str, object],
    ) -> Restriction:
        """A new restriction of ``kind`` (`pomona restriction create`), assigned to ``group`` when one is
        named, audited."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        groups = [group.strip()] if group.strip() else []
        r = self.policy.create_restriction(
            t.id, type_=kind, priority=priority, groups=groups, name=name.strip() or None, **settings
        )
        detail = {"type": r.kind.value, "priority": r.priority, "groups": groups, **_shown(settings)}
        self.console.audit(account.email, "restriction.create", t.id, r.name, source, detail)
        return r

    def edit(
        self,
        account: AdminAccount,
        tenant_ref: str,
        restriction_id: str,
        source: str,
        *,
        new_priority: int | None = None,
        settings: dict[str, object],
    ) -> Restriction:
        """Change a restriction's settings, and its priority when ``new_priority`` differs (`pomona
        restriction edit`), audited. The Default's settings change; its priority does not."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        r, _ = self._find(t, restriction_id)
        moved = new_priority if new_priority is not None and new_priority != r.priority else None
        done = self.policy.edit_restriction(
            t.id,
            type_=r.kind,
            default=r.is_default,
            priority=None if r.is_default else r.priority,
            new_priority=moved,
            groups=None,
            **settings,
        )
        detail: dict[str, object] = {"type": r.kind.value, **_shown(settings)}
        if moved is not None:
            detail.update({"from": r.priority, "to": moved})
        self.console.audit(account.email, "restriction.edit", t.id, r.name, source, detail)
        return done

    def set_priority(
        self, account: AdminAccount, tenant_ref: str, restriction_id: str, priority: int, source: str
    ) -> Restriction:
        """Give one of the tenant's restrictions (by id) another priority (`pomona restriction edit
        --priority P --new-priority N`), audited. Another tenant's restriction is NOT_FOUND."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        r, _ = self._find(t, restriction_id)
        done = self.policy.edit_restriction(
            t.id, type_=r.kind, default=r.is_default, priority=r.priority, new_priority=priority
        )
        self.console.audit(
            account.email,
            "restriction.priority",
            t.id,
            r.name,
            source,
            {"type": r.kind.value, "from": r.priority, "to": priority},
        )
        return done

    def assign(
        self,
        account: AdminAccount,
        tenant_ref: str,
        restriction_id: str,
        group: str,
        source: str,
        *,
        remove: bool,
    ) -> Restriction:
        """Assign the restriction to the tenant's group named ``group``, or (``remove``) no longer
        (`pomona restriction edit --group`), audited. The Default applies to everyone: never assigned."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        r, _ = self._find(t, restriction_id)
        name = group.strip()
        if not name:
            raise InvalidInputError(msg("error.restriction.group_missing"), field="group")
        if remove:
            done = self.policy.unassign_restriction(t.id, type_=r.kind, priority=r.priority, groups=[name])
        else:
            done = self.policy.edit_restriction(
                t.id, type_=r.kind, default=r.is_default, priority=r.priority, groups=[name]
            )
        action = "restriction.unassign" if remove else "restriction.assign"
        self.console.audit(account.email, action, t.id, r.name, source, {"type": r.kind.value, "group": name})
        return done

    def delete(self, account: AdminAccount, tenant_ref: str, restriction_id: str, source: str) -> Restriction:
        """Delete a restriction (`pomona restriction delete`), audited; the Default cannot be."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        r, _ = self._find(t, restriction_id)
        self.policy.delete_restriction(t.id, r.kind, r.priority)
        detail = {"type": r.kind.value, "priority": r.priority}
        self.console.audit(account.email, "restriction.delete", t.id, r.name, source, detail)
        return r

    # --- helpers ----------------------------------------------------------------------------------
    def _find(self, t: Tenant, restriction_id: str) -> tuple[Restriction, dict[str, str]]:
        rs, names = self.policy.list_restrictions(t.id)
        r = next((x for x in rs if x.id == restriction_id), None)
        if r is None:
            raise NotFoundError(msg("error.restriction.not_found"), restriction=restriction_id)
        return r, names


def _shown(settings: dict[str, object]) -> dict[str, object]:
    """The settings an audit entry records: those given."""
    return {k: v for k, v in settings.items() if v is not None}


__all__ = ["GROUP_CHOICES", "RestrictionDetail", "RestrictionPagesService", "RestrictionsView"]
