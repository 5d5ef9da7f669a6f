"""Work split by the size of the run: the run's shard count, the publish stage's keep decision in a
table (so no task holds a run's keepers in memory), and an index to find a run's candidates of an
image (which shard publishes it, which shards may score it).

Revision ID: 0021_claims
Revises: 0020_host_budget
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0021_claims"
down_revision = "0020_host_budget"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("shards", sa.Integer))
    op.create_index("ix_candidates_run_sha256", "candidates", ["run_id", "sha256"])
    op.create_table(
        "keepers",
        sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("images.sha256"), primary_key=True),
        sa.Column("candidate_id", sa.Integer, nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
    )
    op.create_index("ix_keepers_run_bucket", "keepers", ["run_id", "bucket"])


def downgrade() -> None:
    op.drop_index("ix_keepers_run_bucket", "keepers")
    op.drop_table("keepers")
    op.drop_index("ix_candidates_run_sha256", "candidates")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("shards")
