"""Alembic migrations of the platform database (governance tables), applied when a store opens.

A database made before migrations existed (tables created by the first release, no version row)
is recognised and stamped at revision 0001 before upgrading, so an upgrade never needs a wipe.
"""

from __future__ import annotations

from pathlib import Path

VERSION_TABLE = "gov_alembic_version"
HERE = Path(__file__).parent


def config(connection, keys, schema: str | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes.update(connection=connection, keys=keys, schema=schema)
    return cfg


def upgrade(engine, keys, schema: str | None = None, revision: str = "head") -> None:
    """Bring the governance tables to `revision`, serialized against other processes. `keys`
    is the audit keys or a callable returning them (called only if records must be re-signed)."""
    import sqlalchemy as sa
    from alembic import command

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242000)"))
        if schema and engine.dialect.name == "postgresql":
            conn.execute(sa.text(f'SET LOCAL search_path TO "{schema}"'))
        inspector = sa.inspect(conn)
        names = set(inspector.get_table_names(schema=schema))
        cfg = config(conn, keys, schema)
        if "gov_audit" in names and VERSION_TABLE not in names:
            command.stamp(cfg, "0001")
        command.upgrade(cfg, revision)
