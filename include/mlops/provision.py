"""Least-privilege accounts for the production topology (docs/security.md): one Postgres role per database (Airflow,
MLflow, MLflow's user store, the demo source), a read-only role for reading the source, and MLflow users for the
Airflow workers (may create experiments and models, owns what it creates) and for serving (reads only).

Used by compose's ``airflow-init`` / ``mlflow-users`` and by the native topology test; idempotent: a second run
changes only passwords. The Postgres superuser is needed here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Database:
    """A database, the role that owns it (and is the only one to connect, besides ``readers``)."""

    name: str
    owner: str
    readers: tuple[str, ...] = ()  # roles that may SELECT every table the owner creates in schema public, no more


def _ident(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain Postgres identifier: {name!r}")
    return f'"{name}"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _connect(admin_url: str, dbname: str | None = None):
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    conn = psycopg2.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password,
        dbname=dbname or url.database or "postgres", connect_timeout=10,
    )  # fmt: skip
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    return conn


def execute(admin_url: str, statements: list[str], dbname: str | None = None) -> None:
    """Run ``statements`` one by one, outside a transaction, on ``dbname`` (default: the URL's database)."""
    conn = _connect(admin_url, dbname)
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


def provision_postgres(admin_url: str, databases: list[Database], passwords: Mapping[str, str]) -> None:
    """Create (or re-password) every role of ``databases`` with ``passwords[role]``, each database owned by its
    role with CONNECT revoked from PUBLIC, and readers granted SELECT on present and future tables."""
    roles = dict.fromkeys(r for db in databases for r in (db.owner, *db.readers))
    conn = _connect(admin_url)
    try:
        with conn.cursor() as cur:
            for role in roles:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"
                cur.execute(f"{verb} ROLE {_ident(role)} WITH {options} PASSWORD {_literal(passwords[role])}")
            for db in databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.name,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {_ident(db.name)} OWNER {_ident(db.owner)}")
                else:
                    cur.execute(f"ALTER DATABASE {_ident(db.name)} OWNER TO {_ident(db.owner)}")
                cur.execute(f"REVOKE ALL ON DATABASE {_ident(db.name)} FROM PUBLIC")
                for reader in db.readers:
                    cur.execute(f"GRANT CONNECT ON DATABASE {_ident(db.name)} TO {_ident(reader)}")
    finally:
        conn.close()
    for db in databases:
        owner = _ident(db.owner)
        statements = ["REVOKE CREATE ON SCHEMA public FROM PUBLIC", f"GRANT ALL ON SCHEMA public TO {owner}"]
        for reader in map(_ident, db.readers):
            statements += [
                f"GRANT USAGE ON SCHEMA public TO {reader}",
                f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT SELECT ON TABLES TO {reader}",
            ]
        execute(admin_url, statements, db.name)


def drop_postgres(admin_url: str, databases: list[Database]) -> None:
    """Drop ``databases`` and their roles (tests: what :func:`provision_postgres` made)."""
    roles = dict.fromkeys(r for db in databases for r in (db.owner, *db.readers))
    execute(
        admin_url,
        [f"DROP DATABASE IF EXISTS {_ident(db.name)} WITH (FORCE)" for db in databases]
        + [f"DROP ROLE IF EXISTS {_ident(role)}" for role in roles],
    )


def provision_mlflow_users(tracking_uri: str, users: Mapping[str, str]) -> None:
    """Create each MLflow user (basic-auth app) with its password, or reset the password of one that exists; call
    with the admin's credentials in ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``. None is an
    admin: with ``default_permission = READ`` each reads everything and manages what it creates."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    client = AuthServiceClient(tracking_uri)
    for name, password in users.items():
        try:
            client.create_user(name, password)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            client.update_user_password(name, password)
