"""Consent and provenance: the opt-out that stopped a page or an image, each candidate's licence
(SPDX id, its evidence, the author to credit) and the rights statements an image file carries.

``pages.optout`` / ``candidates.optout``: {"directive": "noai", "found": "X-Robots-Tag header of
the page"} when an opt-out applied (the candidate is then skipped with the same reason).
``candidates.license`` is an SPDX id or "unknown"; ``license_evidence`` says where it was read.
``images.rights``: what the file's XMP/IPTC/EXIF say about rights (before they are stripped from
the published copy); the creator's name only when the file's own licence requires attribution.

Revision ID: 0016_consent
Revises: 0011_image_detail
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_consent"
down_revision = "0011_image_detail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pages") as batch:
        batch.add_column(sa.Column("optout", sa.JSON))
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("optout", sa.JSON))
        batch.add_column(sa.Column("license", sa.String(64)))
        batch.add_column(sa.Column("license_evidence", sa.JSON))
        batch.add_column(sa.Column("author", sa.Text))
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("rights", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("rights")
    with op.batch_alter_table("candidates") as batch:
        for name in ("author", "license_evidence", "license", "optout"):
            batch.drop_column(name)
    with op.batch_alter_table("pages") as batch:
        batch.drop_column("optout")
