"""Record how an image of a rendered page was found: in a JSON answer its scripts fetched, drawn from
a blob: URL traced to a fetched response, or in the rendered DOM (harvest.pages.script_fed).

Revision ID: 0018_found_by
Revises: 0017_takedown
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_found_by"
down_revision = "0017_takedown"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("found_by", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("found_by")
