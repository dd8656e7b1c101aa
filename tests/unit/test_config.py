"""The dataset spec: the shipped spec loads; invalid specs fail with one message naming file, field, problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from include.mlops.config import SPEC_DIR, SpecError, load_spec, load_spec_file, spec_hash, spec_paths


def _write(tmp_path: Path, data: dict, name: str = "flights") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((SPEC_DIR / "flights.yaml").read_text())


def test_shipped_spec_loads():
    spec = load_spec("flights")
    assert spec.name == "flights"
    assert spec.source.primary_table == "flights"
    assert {"sched_dep_hour", "carrier", "route_delay_rate"} <= set(spec.feature_names)
    assert [(r.if_null, r.then) for r in spec.label.rules] == [("dep_time", "exclude"), ("arr_delay", "positive")]
    severities = {e.severity.value for e in spec.validation.expectations}
    assert severities == {"critical", "warning"}
    assert "flights.yaml" in [p.name for p in spec_paths()]


def test_every_shipped_spec_loads():
    """A second dataset is a spec file: every file in include/config loads and names itself."""
    paths = spec_paths()
    assert len(paths) >= 2
    for p in paths:
        assert load_spec_file(p).name == p.stem


def test_spec_hash_is_stable_and_content_sensitive(tmp_path, raw):
    a = load_spec_file(_write(tmp_path, raw))
    assert spec_hash(a) == spec_hash(load_spec("flights"))
    raw["gate"]["min_roc_auc"] = 0.7
    assert spec_hash(load_spec_file(_write(tmp_path, raw))) != spec_hash(a)


@pytest.mark.parametrize(
    ("mutate", "field", "problem"),
    [
        (lambda d: d["source"].pop("connection_id"), "source.connection_id", "Field required"),
        (lambda d: d["gate"].update(min_roc_auc=1.5), "gate.min_roc_auc", "less than or equal to 1"),
        (lambda d: d["source"].update(primary_table="nope"), "source", "primary_table 'nope'"),
        (lambda d: d.update(entity_keys=["flight_date", "no_such_col"]), "entity_keys", "'no_such_col'"),
        (
            lambda d: d["validation"]["expectations"].append(
                {"table": "flights", "type": "expect_the_moon", "severity": "warning"}
            ),
            "validation.expectations.",
            "unsupported expectation 'expect_the_moon'",
        ),
        (
            lambda d: d["validation"]["expectations"].append(
                {
                    "table": "flights",
                    "type": "expect_column_values_to_not_be_null",
                    "kwargs": {"column": "x"},
                    "severity": "warning",
                }
            ),
            "validation.expectations[",
            "column 'x' is not in table 'flights'",
        ),
        (lambda d: d["validation"]["expectations"][0].update(severity="fatal"), "severity", "'critical' or 'warning'"),
        (lambda d: d["training"].update(window_days=10), "training", "validation_days + test_days"),
        (lambda d: d["features"].append(dict(d["features"][0])), "<top level>", "declared twice"),
        (lambda d: d["source"]["tables"]["flights"].update(query="SELECT * FROM flights"), "query", ":start and :end"),
        (lambda d: d.update(surprise=1), "surprise", "Extra inputs are not permitted"),
        (lambda d: d["time"].update(end="2012-01-01"), "time", "before start"),
        (lambda d: d["monitoring"].update(retrain_cooldown_days=40), "monitoring", "cannot exceed retrain_debounce"),
        (lambda d: d["gate"].update(confidence=1.0), "gate.confidence", "less than 1"),
        (lambda d: d["monitoring"].update(bootstrap_samples=-1), "monitoring.bootstrap_samples", "greater than"),
    ],
)
def test_invalid_spec_names_file_field_and_problem(tmp_path, raw, mutate, field, problem):
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    msg = str(err.value)
    assert str(path) in msg
    assert field in msg
    assert problem in msg


@pytest.mark.parametrize(
    ("content", "problem"),
    [("name: [unclosed", "not valid YAML"), ("- a list", "must be a YAML mapping")],
)
def test_unparseable_spec(tmp_path, content, problem):
    p = tmp_path / "flights.yaml"
    p.write_text(content)
    with pytest.raises(SpecError, match=problem):
        load_spec_file(p)


def test_name_must_match_file(tmp_path, raw):
    with pytest.raises(SpecError, match="must equal the file name 'other'"):
        load_spec_file(_write(tmp_path, raw, name="other"))


def test_missing_spec():
    with pytest.raises(SpecError, match="no spec for dataset 'nope'"):
        load_spec("nope")
