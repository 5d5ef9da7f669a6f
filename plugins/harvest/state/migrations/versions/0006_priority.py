"""Download order and timing: a priority the text pre-filter sets, and how long each download took.

Revision ID: 0006_priority
Revises: 0005_sources
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_priority"
down_revision = "0005_sources"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("elapsed_ms", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("elapsed_ms")
        batch.drop_column("priority")
