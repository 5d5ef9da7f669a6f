"""Nightly re-crawls: the validators of each fetched page, and whether a page or image was unchanged.

Revision ID: 0007_conditional
Revises: 0006_priority
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_conditional"
down_revision = "0006_priority"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pages") as batch:
        batch.add_column(sa.Column("etag", sa.Text))
        batch.add_column(sa.Column("last_modified", sa.Text))
        batch.add_column(sa.Column("revalidation", sa.String(16)))
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("revalidation", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("revalidation")
    with op.batch_alter_table("pages") as batch:
        batch.drop_column("revalidation")
        batch.drop_column("last_modified")
        batch.drop_column("etag")
