"""What the UI shows of every DAG: its doc_md, a trigger form of typed Params with titles and descriptions, and
(when the spec asks for approval) an approval step whose body is the gate report."""

from __future__ import annotations

import pytest
import yaml

from include.mlops.config import SPEC_DIR
from tests.e2e.conftest import dagbag


@pytest.fixture(scope="module")
def bag():
    return dagbag()


def test_every_dag_has_docs_and_a_typed_described_trigger_form(bag):
    assert bag.dags, "no DAGs parsed"
    for dag_id, dag in bag.dags.items():
        assert dag.doc_md, f"{dag_id}: no doc_md"
        assert dag.doc_md.strip().startswith("###"), f"{dag_id}: doc_md has no heading"
        for name in dag.params:
            param = dag.params.get_param(name)
            assert param.schema.get("type"), f"{dag_id}.{name}: untyped Param"
            assert param.schema.get("title"), f"{dag_id}.{name}: no title"
            assert len(param.description or "") >= 20, f"{dag_id}.{name}: no useful description"


def test_the_approval_step_shows_the_gate_report(airflow_db, tmp_path):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    raw = yaml.safe_load((SPEC_DIR / "flights.yaml").read_text())
    raw["gate"]["require_approval"] = True
    (tmp_path / "flights.yaml").write_text(yaml.safe_dump(raw))
    dag = dagbag(tmp_path).get_dag("flights_train")
    approve = dag.get_task("approve")
    assert isinstance(approve, ApprovalOperator)
    assert approve.upstream_task_ids == {"decide"}
    assert approve.downstream_task_ids == {"promote"}
    # the body is the gate report (evaluate's Markdown); the subject names the challenger version
    assert "xcom_pull(task_ids='evaluate')['markdown']" in approve.body
    assert "challenger_version" in approve.subject


def test_candidates_are_a_multi_select_of_the_specs_candidates(bag):
    """An array Param with ``examples`` is a multi-select in the trigger form (Airflow's params UI): only the spec's
    candidate names can be picked, not free text."""
    from include.mlops.config import load_spec

    for name in ("flights", "pizzas"):
        schema = bag.dags[f"{name}_train"].params.get_param("candidates").schema
        names = [c.name for c in load_spec(name).training.candidates]
        assert schema["type"] == "array"
        assert schema["examples"] == names
        assert schema["items"]["enum"] == names
