"""The state DB works with exactly the privileges docs/configuration.md grants, and no more: a plain login role
(no superuser, no CREATEDB, no CREATEROLE) runs the migrations and a whole harvest of the demo site.

The GRANT statements are read from the "State database permissions" section of docs/configuration.md, so the
documentation and the test cannot drift apart. The fresh database first loses the privileges
Postgres gives PUBLIC by default (CONNECT on the database, USAGE on the schema): whatever the role
can do, it can do because the docs said so.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from helpers import DEFAULT_EXPORT_KEYS, EXPECTED_KEPT, expected_image_keys, manifest_rows

from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS
from harvest.pipeline import run_all
from harvest.settings.config import build_config
from harvest.state.db import dispose_engines, migrate

PERMISSIONS_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def readme_blocks() -> list[list[str]]:
    """The SQL statements of each ```sql block of the documented state database permissions section."""
    section = PERMISSIONS_DOC.read_text(encoding="utf-8").split("## State database permissions", 1)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
    return [[s.strip() for s in re.sub(r"--[^\n]*", "", block).split(";") if s.strip()] for block in blocks]


def for_this_test(statement: str, role: str, database: str) -> str:
    """The documented role and database names (both ``harvest``) replaced by this test's."""
    statement = re.sub(r"\bON DATABASE harvest\b", f'ON DATABASE "{database}"', statement)
    statement = re.sub(r"\b(ROLE|TO) harvest\b", rf"\1 {role}", statement)
    assert not re.search(r"\bharvest\b", statement), f"a documented name left unreplaced: {statement}"
    return statement


def admin(url: str):
    return sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture
def plain_role(postgres_url) -> Iterator[str]:
    """A role name for the test, and the role dropped afterwards with whatever it owns or was granted
    (roles belong to the whole cluster, not to the test's database)."""
    role = f"harvest_grants_{uuid.uuid4().hex[:10]}"
    yield role
    dispose_engines()  # the harvest's pooled connections as the role
    engine = admin(postgres_url)
    with engine.connect() as conn:
        if conn.execute(sqlalchemy.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
            conn.execute(sqlalchemy.text(f"DROP OWNED BY {role}"))
            conn.execute(sqlalchemy.text(f"DROP ROLE {role}"))
    engine.dispose()


@pytest.mark.parametrize("migrated_by", ["the role itself", "another role"])
def test_a_harvest_runs_as_a_plain_role_with_the_readme_grants(
    migrated_by, postgres_url, plain_role, site, site_root, classifier, tmp_path
):
    create_role, owner_grants = readme_blocks()[0][0], readme_blocks()[0][1:]
    grants = owner_grants if migrated_by == "the role itself" else readme_blocks()[1]
    database = postgres_url.rsplit("/", 1)[1]
    role_url = postgres_url.replace("postgres@", f"{plain_role}:change-me@")

    engine = admin(postgres_url)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC'))
        conn.execute(sqlalchemy.text("REVOKE ALL ON SCHEMA public FROM PUBLIC"))
        conn.execute(sqlalchemy.text(for_this_test(create_role, plain_role, database)))
        powers = conn.execute(
            sqlalchemy.text(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = :r"
            ),
            {"r": plain_role},
        ).one()
    assert tuple(powers) == (False, False, False, True)
    outsider = admin(role_url)
    with pytest.raises(sqlalchemy.exc.OperationalError, match="permission denied for database"):
        outsider.connect().close()  # before the grants the role cannot even connect
    outsider.dispose()

    if migrated_by == "another role":
        migrate(postgres_url)
    with engine.connect() as conn:
        for statement in grants:
            conn.execute(sqlalchemy.text(for_this_test(statement, plain_role, database)))
    engine.dispose()

    cfg = build_config(
        {
            "seeds": [f"{site}/index.html"],
            "labels": list(DEMO_LABELS),
            "destination": str(tmp_path / "dataset"),
        },
        "manual__grants",
        database_url=role_url,
    )
    run_all(cfg, classifier)

    dataset = Path(cfg.destination)
    published = {str(path.relative_to(dataset)) for path in dataset.rglob("*") if path.is_file()}
    manifest = manifest_key(cfg.run_id)
    assert published == expected_image_keys(site_root) | {manifest} | DEFAULT_EXPORT_KEYS
    rows = manifest_rows((dataset / manifest).read_bytes())
    assert sorted(row["label"] for row in rows) == sorted(EXPECTED_KEPT.values())
    engine = admin(postgres_url)
    with engine.connect() as conn:
        owners = set(
            conn.execute(
                sqlalchemy.text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
            )
            .scalars()
            .all()
        )
    engine.dispose()
    assert owners == ({plain_role} if migrated_by == "the role itself" else {"postgres"})
