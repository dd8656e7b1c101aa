"""The source on the machine's PostgreSQL (the README's alternative to SQLite): seed, re-seed, extract."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
import sqlalchemy as sa

from include.mlops.sources import extract_interval, extract_reference, seed_source

pytestmark = pytest.mark.integration

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_url():
    name = f"mlops_src_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_seed_reseed_and_extract_on_postgres(pg_url, spec, nyc):
    first = seed_source(spec, pg_url)
    assert first.rows["flights"] == len(nyc["flights"]) == 336_776
    again = seed_source(spec, pg_url)  # idempotent: tables replaced, not appended
    assert again.rows == first.rows
    engine = sa.create_engine(pg_url)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM flights")).scalar() == 336_776
    engine.dispose()
    day = extract_interval(spec, pg_url, date(2013, 2, 12), date(2013, 2, 13))
    expected = nyc["flights"][nyc["flights"]["flight_date"] == "2013-02-12"]
    assert len(day["flights"]) == len(expected)
    assert set(day["flights"]["flight_date"]) == {"2013-02-12"}
    assert day["weather"]["wind_speed"].max() > 1000  # the real bad reading comes through untouched
    assert set(extract_reference(spec, pg_url)) == {"airlines", "airports", "planes"}
