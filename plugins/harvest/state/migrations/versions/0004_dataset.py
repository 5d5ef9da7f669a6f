"""Dataset quality: image descriptions (perceptual hash, entropy, EXIF), every URL that served an
image, exclusions and near-duplicate links, and withdrawn publications.

Revision ID: 0004_dataset
Revises: 0003_classify
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_dataset"
down_revision = "0003_classify"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def image_columns() -> list[sa.Column]:
    return [
        sa.Column("mode", sa.String(16)),
        sa.Column("has_alpha", sa.Boolean),
        sa.Column("phash", sa.String(16)),
        sa.Column("entropy", sa.Float),
        sa.Column("orientation", sa.Integer),
        sa.Column("exif", sa.JSON),
        sa.Column("private_fields", sa.JSON),
        sa.Column("exif_private", sa.Text),
        sa.Column("clean_sha256", sa.String(64)),
        sa.Column("clean_key", sa.Text),
        sa.Column("excluded", sa.Text),
        sa.Column("duplicate_of", sa.String(64)),
        sa.Column("duplicate_distance", sa.Integer),
    ]


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        for column in image_columns():
            batch.add_column(column)
    op.create_index("ix_images_phash", "images", ["phash"])
    with op.batch_alter_table("publications") as batch:
        batch.add_column(sa.Column("label", sa.Text))
        batch.add_column(sa.Column("score", sa.Float))
        batch.add_column(sa.Column("content_sha256", sa.String(64)))
        batch.add_column(sa.Column("withdrawn_at", TS))
        batch.add_column(sa.Column("withdrawn_reason", sa.Text))
    op.create_table(
        "image_urls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), sa.ForeignKey("images.sha256"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(250), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("sha256", "url", name="uq_image_urls_sha256_url"),
    )
    op.create_index("ix_image_urls_host", "image_urls", ["host"])


def downgrade() -> None:
    op.drop_index("ix_image_urls_host", "image_urls")
    op.drop_table("image_urls")
    with op.batch_alter_table("publications") as batch:
        batch.drop_column("withdrawn_reason")
        batch.drop_column("withdrawn_at")
        batch.drop_column("content_sha256")
        batch.drop_column("score")
        batch.drop_column("label")
    op.drop_index("ix_images_phash", "images")
    with op.batch_alter_table("images") as batch:
        for column in reversed(image_columns()):
            batch.drop_column(column.name)
