"""The first release's governance tables: one global SHA-256 audit chain, requests, approvals,
champions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes.get("schema")
    op.create_table(
        "gov_audit",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("outcome", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("environment", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False),
        schema=schema,
    )
    op.create_table(
        "gov_requests",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("environment", sa.String(40), primary_key=True),
        sa.Column("tenant", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("required", sa.Integer, nullable=False),
        sa.Column("roles", sa.Text, nullable=False),
        sa.Column("launched_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        schema=schema,
    )
    op.create_table(
        "gov_approvals",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("environment", sa.String(40), primary_key=True),
        sa.Column("actor", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(40), nullable=False),
        sa.Column("ts", sa.String(40), nullable=False),
        schema=schema,
    )
    op.create_table(
        "gov_champions",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("previous", sa.Integer, nullable=True),
        sa.Column("updated_at", sa.String(40), nullable=False),
        schema=schema,
    )
