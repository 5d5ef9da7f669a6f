"""Initial schema: runs, pages, candidates, images, predictions, publications.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("counters", sa.JSON, nullable=False),
    )
    op.create_table(
        "images",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("staging", sa.Text, nullable=False),
        sa.Column("storage_key", sa.Text, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("mime_type", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("first_url", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "pages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("seed_url", sa.Text, nullable=False),
        sa.Column("depth", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("final_url", sa.Text),
        sa.Column("content_key", sa.Text),
        sa.Column("extract_status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("fetched_at", TS),
        sa.UniqueConstraint("run_id", "url", name="uq_pages_run_url"),
    )
    op.create_index("ix_pages_run_status", "pages", ["run_id", "status"])
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("page_url", sa.Text, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("alt", sa.Text),
        sa.Column("title", sa.Text),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("images.sha256")),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", TS),
        sa.UniqueConstraint("run_id", "url", name="uq_candidates_run_url"),
    )
    op.create_index("ix_candidates_run_shard_status", "candidates", ["run_id", "shard", "status"])
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("images.sha256"), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("top", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("sha256", "model", name="uq_predictions_image_model"),
    )
    op.create_table(
        "publications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("images.sha256"), nullable=False),
        sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("destination", "key", name="uq_publications_destination_key"),
    )


def downgrade() -> None:
    for table in ("publications", "predictions", "candidates", "pages", "images", "runs"):
        op.drop_table(table)
