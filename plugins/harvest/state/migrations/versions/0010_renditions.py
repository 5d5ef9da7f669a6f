"""Record which rendition of a candidate was downloaded, and which ones failed.

A candidate's image is often named by several URLs (srcset entries, ``src``, the thumbnail a link
wraps); the download tries them in order of preference. ``candidates.rendition_url`` is the URL
whose bytes were stored, ``candidates.renditions_failed`` the ones tried before it (or all of them,
when none served an image) as ``[{"url": ..., "reason": ...}, ...]``.

Revision ID: 0010_renditions
Revises: 0009_metadata_policy
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_renditions"
down_revision = "0009_metadata_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("rendition_url", sa.Text()))
        batch.add_column(sa.Column("renditions_failed", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("renditions_failed")
        batch.drop_column("rendition_url")
