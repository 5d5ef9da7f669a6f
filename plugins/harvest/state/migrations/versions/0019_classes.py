"""Record which WebDataset shard holds each publication, so a publish writes new shards for what is
new and rewrites only the shards that hold a withdrawn object, instead of rebuilding every shard.

Revision ID: 0019_classes
Revises: 0018_found_by
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0019_classes"
down_revision = "0018_found_by"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.add_column(sa.Column("shard", sa.Text))
        batch.create_index("ix_publications_destination_shard", ["destination", "shard"])


def downgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.drop_index("ix_publications_destination_shard")
        batch.drop_column("shard")
