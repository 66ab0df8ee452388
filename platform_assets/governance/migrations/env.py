"""Alembic environment: runs on the connection `migrations.upgrade` hands over."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table="gov_alembic_version",
    version_table_schema=context.config.attributes.get("schema"),
    transactional_ddl=True,
)
context.run_migrations()
