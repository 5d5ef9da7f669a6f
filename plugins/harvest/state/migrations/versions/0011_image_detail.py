"""Store each image's detail beside its background (harvest.images.perceptual.detail_bits), read
with the grey-level entropy to tell a flat picture from a photo of an object on a plain background.

Revision ID: 0011_image_detail
Revises: 0010_renditions
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_image_detail"
down_revision = "0010_renditions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("detail", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("detail")
