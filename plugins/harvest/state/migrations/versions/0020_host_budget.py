"""One politeness budget per host for every task and worker (harvest.web.host_budget): the host's
adaptive spacing and next start, its requests in flight as leases, and the pace each host got per run.

Revision ID: 0020_host_budget
Revises: 0019_classes
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0020_host_budget"
down_revision = "0019_classes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_budget",
        sa.Column("host", sa.Text, primary_key=True),
        sa.Column("delay", sa.Float, nullable=False),
        sa.Column("floor", sa.Float, nullable=False, server_default="0"),
        sa.Column("next_start", sa.Float, nullable=False, server_default="0"),
        sa.Column("held_until", sa.Float, nullable=False, server_default="0"),
        sa.Column("active", sa.Integer, nullable=False, server_default="0"),
        sa.Column("streak", sa.Integer, nullable=False, server_default="0"),
        sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
        sa.Column("images", sa.Integer, nullable=False, server_default="0"),
        sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
        sa.Column("throttled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
        sa.Column("peak_rate", sa.Float, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.Float, nullable=False, server_default="0"),
    )
    op.create_table(
        "host_leases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_host_leases_host", "host_leases", ["host"])
    op.create_table(
        "host_rates",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("host", sa.Text, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False, server_default="site"),
        sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
        sa.Column("throttled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("errors", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rate", sa.Float, nullable=False, server_default="0"),
        sa.Column("peak_rate", sa.Float, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("host_rates")
    op.drop_index("ix_host_leases_host", table_name="host_leases")
    op.drop_table("host_leases")
    op.drop_table("host_budget")
