"""Candidates remember what the page said about them: srcset/picture variants, caption, nearby text
and the fields a site profile extracted.

Revision ID: 0002_crawl
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_crawl"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("variants", sa.JSON))
        batch.add_column(sa.Column("caption", sa.Text))
        batch.add_column(sa.Column("nearby_text", sa.Text))
        batch.add_column(sa.Column("page_fields", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("page_fields")
        batch.drop_column("nearby_text")
        batch.drop_column("caption")
        batch.drop_column("variants")
