"""Least-privilege Postgres roles (include/mlops/provision.py) on the machine's Postgres: each database reachable by
its own role only, the source's reader able to SELECT and nothing else. Roles and databases have unique names and
are dropped afterwards."""

from __future__ import annotations

import secrets
import uuid

import pytest
import sqlalchemy as sa

from include.mlops.provision import Database, drop_postgres, provision_postgres

pytestmark = pytest.mark.integration

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def dbs():
    tag = f"mlops_lp_{uuid.uuid4().hex[:8]}"
    databases = [
        Database(f"{tag}_app", f"{tag}_app"),
        Database(f"{tag}_src", f"{tag}_src_owner", readers=(f"{tag}_src_reader",)),
    ]
    passwords = {r: secrets.token_hex(16) for d in databases for r in (d.owner, *d.readers)}
    try:
        provision_postgres(ADMIN, databases, passwords)
        provision_postgres(ADMIN, databases, passwords)  # idempotent
        yield databases
    finally:
        drop_postgres(ADMIN, databases)


def _url(role: str, db: str) -> str:
    return f"postgresql+psycopg2://{role}@127.0.0.1:5432/{db}"


def _run(url: str, *sql: str) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            out = [c.execute(sa.text(s)) for s in sql]
            return [r.fetchall() if r.returns_rows else None for r in out]
    finally:
        engine.dispose()


def test_the_source_reader_reads_and_does_nothing_else(dbs):
    _, src = dbs
    reader = src.readers[0]
    _run(_url(src.owner, src.name), "CREATE TABLE flights (id int)", "INSERT INTO flights VALUES (1)")
    assert _run(_url(reader, src.name), "SELECT id FROM flights") == [[(1,)]]
    for sql in (
        "INSERT INTO flights VALUES (2)",
        "DELETE FROM flights",
        "DROP TABLE flights",
        "CREATE TABLE x (i int)",
    ):
        with pytest.raises(sa.exc.ProgrammingError, match=r"permission denied|must be owner"):
            _run(_url(reader, src.name), sql)
    # a table the owner replaces later (pandas to_sql if_exists=replace) is readable too: default privileges
    _run(_url(src.owner, src.name), "DROP TABLE flights", "CREATE TABLE flights (id int)")
    assert _run(_url(reader, src.name), "SELECT count(*) FROM flights") == [[(0,)]]


def test_each_database_admits_its_own_role_only(dbs):
    app, src = dbs
    for role, db in ((src.readers[0], app.name), (src.owner, app.name), (app.owner, src.name)):
        with pytest.raises(sa.exc.OperationalError, match="permission denied for database"):
            _run(_url(role, db), "SELECT 1")
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        _run(_url(app.owner, app.name), "CREATE ROLE sneaky")
