"""Takedowns: an audit record per request, the blocklist later runs honour, and what a search API
said about each image it returned (licence, author, its own id).

Revision ID: 0017_takedown
Revises: 0016_consent
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_takedown"
down_revision = "0016_consent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "takedowns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_key", sa.String(64), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text),
        sa.Column("triggered_by", sa.Text),
        sa.Column("run_id", sa.String(250)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("images", sa.JSON),
        sa.Column("removed", sa.JSON),
        sa.Column("counts", sa.JSON),
        sa.UniqueConstraint("request_key", name="uq_takedowns_request_key"),
    )
    op.create_table(
        "blocklist",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("phash", sa.String(16)),
        sa.Column("takedown_id", sa.Integer, sa.ForeignKey("takedowns.id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "value", name="uq_blocklist_kind_value"),
    )
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("source_record", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("source_record")
    op.drop_table("blocklist")
    op.drop_table("takedowns")
