"""Keep each image's whole score vector, so new labels, top_k or thresholds need no model run.

Revision ID: 0003_classify
Revises: 0002_crawl
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_classify"
down_revision = "0002_crawl"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("scores", sa.LargeBinary))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("scores")
