"""Look up an image URL's earlier downloads by index: the download stage asks for every chunk of
candidates which of their URLs another run fetched (for a conditional GET), and without an index on
``image_urls.url`` that scanned the table, whose size grows with every run.

A hash index on Postgres: equality is all the lookup needs, and unlike a B-tree it takes URLs of any
length (a B-tree entry is limited to about 2.7 kB).

Revision ID: 0008_image_url_lookup
Revises: 0007_conditional
Create Date: 2026-11-30
"""

from alembic import op

revision = "0008_image_url_lookup"
down_revision = "0007_conditional"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_image_urls_url", "image_urls", ["url"], postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_image_urls_url", table_name="image_urls")
