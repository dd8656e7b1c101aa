"""The production online store: Feast's Redis online store on the machine's Redis (a claimed, empty DB, flushed
afterwards) with its SQL registry on a fresh Postgres database, fed real January days. The values stored
equal the feature engine's, a repeated run writes nothing, and a re-validated day replaces its rows."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from include.mlops import feature_store as FS
from include.mlops import features as F
from include.mlops.storage import Lake
from tests.e2e.conftest import write_validated
from tests.integration.conftest import REDIS_HOST, REDIS_PORT, _claim_redis_db

pytestmark = pytest.mark.integration

DAY = "2013-01-03"
ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def production_store():
    """MLOPS_ONLINE_STORE on a claimed Redis DB, MLOPS_FEAST_REGISTRY on a fresh Postgres database."""
    client = _claim_redis_db(f"feature-store-{uuid.uuid4().hex[:8]}")
    db = client.connection_pool.connection_kwargs["db"]
    name = f"mlops_feast_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    old = {k: os.environ.get(k) for k in (FS.STORE_ENV, FS.REGISTRY_ENV)}
    os.environ[FS.STORE_ENV] = f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    os.environ[FS.REGISTRY_ENV] = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    try:
        yield client
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        client.flushdb()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def lake(nyc, spec, tmp_path_factory) -> Lake:
    return write_validated(Lake(str(tmp_path_factory.mktemp("redis-lake"))), nyc, spec, [("2013-01-01", DAY)])


def _served(spec, lake: Lake) -> tuple[list[list], list[list]]:
    """(looked up, computed): every feature column of DAY through OnlineLookup and from the engine."""
    table = F.features_for_dates(lake, spec, DAY, DAY)
    primary = lake.read_table("validated", spec.name, f"date={DAY}", spec.source.primary_table)
    sent = {k: table[k].tolist() for k in spec.entity_keys}
    sent |= {c: [None if v != v else v for v in primary[c].tolist()] for c in spec.online.request_fields}
    got = FS.OnlineLookup.open(spec).columns(spec.feature_names, sent)
    want = [[None if v != v else v for v in table[f].tolist()] for f in spec.feature_names]
    return got, want


def test_the_redis_store_holds_the_engines_values_and_rewrites_only_changed_days(production_store, spec, lake):
    first = FS.materialize_day(spec, lake, DAY)
    assert first["written"] is True
    assert first["store"] == f"redis {os.environ[FS.STORE_ENV].removeprefix('redis://')}"
    assert production_store.dbsize() > first["rows"]  # one hash per entity, plus the claim marker
    before, want = _served(spec, lake)
    assert before == want
    assert FS.materialize_day(spec, lake, DAY)["written"] is False

    # the day is re-validated with other weather: its rows are replaced, not kept because they came first
    tables = {t: lake.read_table("validated", spec.name, f"date={DAY}", t) for t in ("flights", "weather")}
    tables["weather"]["temp"] = tables["weather"]["temp"] + 1.0
    lake.write_partition("validated", spec.name, f"date={DAY}", tables, source="test")
    again = FS.materialize_day(spec, lake, DAY)
    assert again["written"] is True
    assert again["feature_version"] != first["feature_version"]
    got, want = _served(spec, lake)
    assert got == want
    temp = spec.feature_names.index("temp")
    assert got[temp] != before[temp]
