"""URL-list sources: the label a list gives each image, for quotas.

Revision ID: 0005_sources
Revises: 0004_dataset
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_sources"
down_revision = "0004_dataset"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("label_hint", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("label_hint")
