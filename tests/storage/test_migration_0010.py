"""Migration 0010: the ABM tables, created and dropped again on both databases."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from pomona.storage.migrate import alembic_config, current, upgrade
from pomona.storage.sql import SqlDatabase

ABM_TABLES = {"abm_keypairs", "abm_tokens", "abm_devices", "abm_device_history"}


class TestMigration0010:
    def test_up_down_up(self, empty_db_url: str) -> None:
        """0009 -> 0010 adds the four ABM tables (and the history index); down removes them; up again."""
        d = SqlDatabase(empty_db_url)
        try:
            upgrade(d.engine, "0009")
            assert not ABM_TABLES & set(inspect(d.engine).get_table_names())
            upgrade(d.engine, "0010")
            insp = inspect(d.engine)
            assert ABM_TABLES <= set(insp.get_table_names())
            assert {i["name"] for i in insp.get_indexes("abm_device_history")} == {
                "ix_abm_device_history_tenant_id_serial_number"
            }
            pk = insp.get_pk_constraint("abm_devices")["constrained_columns"]
            assert set(pk) == {"tenant_id", "serial_number"}
            command.downgrade(alembic_config(d.engine), "0009")
            assert not ABM_TABLES & set(inspect(d.engine).get_table_names())
            upgrade(d.engine)
            assert current(d.engine) is not None and ABM_TABLES <= set(inspect(d.engine).get_table_names())
        finally:
            d.dispose()
