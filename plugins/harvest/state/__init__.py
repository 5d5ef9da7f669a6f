"""The pipeline's own state: one table per noun, a status column per row, migrations by Alembic."""
