"""flights_materialize end to end with dag.test() on a lake of its own (real January days): a validated day lands
in the embedded online store with the lake's feature version on every row, and a second run leaves it as it is."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from tests.e2e.conftest import dagbag, state, write_validated

pytestmark = pytest.mark.e2e

DAY = "2013-01-03"


@pytest.fixture(scope="module")
def lake(nyc, spec, tmp_path_factory):
    from include.mlops.feature_store import DIR_ENV, STORE_ENV
    from include.mlops.storage import Lake

    old = {k: os.environ.get(k) for k in ("MLOPS_DATA_ROOT", DIR_ENV, STORE_ENV)}
    root = tmp_path_factory.mktemp("materialize")
    os.environ["MLOPS_DATA_ROOT"] = str(root / "lake")
    os.environ[DIR_ENV] = str(root / "online")
    os.environ.pop(STORE_ENV, None)
    yield write_validated(Lake(str(root / "lake")), nyc, spec, [("2013-01-01", DAY)])
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _stored_versions(spec, lake) -> list:
    from include.mlops import feature_store as FS
    from include.mlops import features as F

    keys = FS._key_values(spec, F.features_for_dates(lake, spec, DAY, DAY))
    ref = f"{FS.features_view(spec)}:{FS.VERSION_FIELD}"
    return FS.open_store(spec).get_online_features(features=[ref], entity_rows=keys).to_dict()[FS.VERSION_FIELD]


def test_a_validated_day_is_materialized_once(airflow_db, lake, spec):
    from include.mlops import features as F

    dag = dagbag().get_dag("flights_materialize")
    first = dag.test(logical_date=datetime(2013, 1, 3, tzinfo=UTC), run_conf={"date": DAY})
    assert state(first) == "success"
    version = F.feature_version(lake, spec, DAY, DAY)[0]
    stored = _stored_versions(spec, lake)
    assert len(stored) > 600
    assert set(stored) == {version}
    again = dag.test(logical_date=datetime(2013, 1, 3, 1, tzinfo=UTC), run_conf={"date": DAY})
    assert state(again) == "success"
    assert set(_stored_versions(spec, lake)) == {version}
