"""Record which metadata rule set made each image's published copy.

Published copies keep metadata by allow-list for every image (before, only images whose EXIF had
private fields got a copy, made from a deny-list). ``images.metadata_policy`` names the rule set a
row's copy and private fields follow; rows without it (made by earlier versions) are described
again from their staged bytes before they are published, so what is published never depends on
which version first saw an image.

Revision ID: 0009_metadata_policy
Revises: 0008_image_url_lookup
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_metadata_policy"
down_revision = "0008_image_url_lookup"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("metadata_policy", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("metadata_policy")
