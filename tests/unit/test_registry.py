"""Registry: promotion, rejection and rollback with aliases, the audit history in MLflow, point-in-time champion
queries, the lock, and two processes promoting at the same moment against one SQLite MLflow database."""

from __future__ import annotations

import itertools
import multiprocessing
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest

from include.mlops import registry as R
from include.mlops.training import SKOPS_TRUSTED_TYPES

VERSIONS = 6  # v1 … v5 passed the gate; v6 has no gate decision


@pytest.fixture(scope="module")
def template(tmp_path_factory, spec) -> str:
    """A migrated SQLite MLflow DB holding model ``flights`` with real versions (one tiny logged sklearn model,
    registered six times). Each test gets a copy: migrating a fresh DB takes seconds, copying it milliseconds."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    folder = tmp_path_factory.mktemp("registry-template")
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri, uri)
    exp_id = client.create_experiment("flights", artifact_location=(folder / "artifacts").as_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    x = np.arange(20, dtype=float).reshape(-1, 1)
    model = LogisticRegression().fit(x, (x[:, 0] > 9).astype(int))
    with mlflow.start_run(experiment_id=exp_id):
        mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=spec.name,
            serialization_format="skops",  # what training logs; scoring refuses pickle
            skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
            pip_requirements=["scikit-learn"],
        )
    first = client.get_model_version(spec.name, "1")
    for _ in range(VERSIONS - 1):
        client.create_model_version(spec.name, source=first.source, run_id=first.run_id)
    for v in range(1, VERSIONS):
        client.set_model_version_tag(spec.name, str(v), "gate.decision", "passed")
        client.set_model_version_tag(spec.name, str(v), "test_roc_auc", f"0.7{v}")
    client.set_registered_model_alias(spec.name, "challenger", str(VERSIONS - 1))
    return str(folder / "mlflow.db")


@pytest.fixture
def uri(template, tmp_path) -> str:
    shutil.copy(template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri, uri)


def champion(client, name: str = "flights") -> str | None:
    return R._alias_version(client, name, "champion")


def chain(entries) -> list[tuple[str, str | None, str | None]]:
    return [(e.action, e.from_version, e.to_version) for e in entries]


# -- promote -------------------------------------------------------------------------------------------
def test_promote_moves_the_alias_and_records_the_previous_champion(spec, uri, client):
    first = R.promote(spec, 1, reason="first model", dag_run="manual__1", tracking_uri=uri)
    assert (first.seq, first.action, first.from_version, first.to_version) == (1, "promote", None, "1")
    assert champion(client) == "1"
    assert client.get_model_version("flights", "1").tags["previous_champion"] == "none"

    second = R.promote(spec, "2", reason="better AUC", dag_run="scheduled__2", approver="ana", tracking_uri=uri)
    assert (second.seq, second.from_version, second.to_version) == (2, "1", "2")
    assert champion(client) == "2"
    tags = client.get_model_version("flights", "2").tags
    assert tags["previous_champion"] == "1"
    assert tags["promoted_by"] == "ana"

    entries = R.history(spec, uri)
    assert chain(entries) == [("promote", None, "1"), ("promote", "1", "2")]
    assert entries[1].reason == "better AUC"
    assert entries[1].dag_run == "scheduled__2"
    assert entries[1].approver == "ana"
    assert datetime.fromisoformat(entries[1].when).tzinfo is not None
    assert entries[0].at <= entries[1].at

    # The audit lives in MLflow: a run per event, its entry as immutable params, searchable by tag.
    exp = client.get_experiment_by_name("flights-registry-audit")
    runs = client.search_runs([exp.experiment_id], "tags.`audit.action` = 'promote' and params.to = '2'")
    assert [r.info.run_id for r in runs] == [second.run_id]
    assert runs[0].data.params["approver"] == "ana"
    # No lock left behind.
    assert [m.name for m in client.search_registered_models()] == ["flights"]


def test_promoting_the_champion_again_is_a_no_op(spec, uri, client):
    entry = R.promote(spec, 1, reason="first", tracking_uri=uri)
    again = R.promote(spec, 1, reason="task retry", tracking_uri=uri)
    assert again == entry
    assert len(R.history(spec, uri)) == 1


@pytest.mark.parametrize(
    ("version", "match"),
    [(99, "no version 99"), (6, "gate.decision is 'no gate decision'"), ("abc", "positive integer")],
    ids=["unknown", "never-gated", "not-a-version"],
)
def test_promote_refuses_unknown_and_ungated_versions(spec, uri, client, version, match):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    with pytest.raises(R.RegistryError, match=match):
        R.promote(spec, version, reason="x", tracking_uri=uri)
    assert champion(client) == "1"
    assert len(R.history(spec, uri)) == 1


def test_promote_requires_an_approver_when_the_spec_says_so(spec, uri, client):
    strict = spec.model_copy(update={"gate": spec.gate.model_copy(update={"require_approval": True})})
    with pytest.raises(R.RegistryError, match="approver"):
        R.promote(strict, 1, reason="no one looked", tracking_uri=uri)
    assert champion(client) is None
    entry = R.promote(strict, 1, reason="reviewed the gate report", approver="ana", tracking_uri=uri)
    assert entry.approver == "ana"
    assert champion(client) == "1"


def test_a_failed_alias_move_leaves_no_history_and_no_lock(spec, uri, client, monkeypatch):
    from mlflow import MlflowClient

    R.promote(spec, 1, reason="first", tracking_uri=uri)

    def broken(self, *a, **k):
        raise RuntimeError("registry down")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", broken)
    with pytest.raises(RuntimeError, match="registry down"):
        R.promote(spec, 2, reason="x", tracking_uri=uri)
    monkeypatch.undo()
    assert champion(client) == "1"
    assert chain(R.history(spec, uri)) == [("promote", None, "1")]
    exp = client.get_experiment_by_name("flights-registry-audit")
    assert len(client.search_runs([exp.experiment_id], "attributes.status = 'FAILED'")) == 1
    assert R.promote(spec, 2, reason="retry", tracking_uri=uri).seq == 2  # the lock was released


# -- reject --------------------------------------------------------------------------------------------
def test_reject_tags_the_version_and_leaves_the_champion(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    entry = R.reject(spec, 2, ["max_roc_auc_drop", "max_slice_gap[carrier]"], dag_run="d1", tracking_uri=uri)
    assert (entry.action, entry.version, entry.from_version, entry.to_version) == ("reject", "2", "1", "1")
    assert champion(client) == "1"
    tags = client.get_model_version("flights", "2").tags
    assert tags["gate.decision"] == "rejected"
    assert tags["rejected_reasons"] == "max_roc_auc_drop,max_slice_gap[carrier]"
    assert chain(R.history(spec, uri)) == [("promote", None, "1"), ("reject", "1", "1")]
    with pytest.raises(R.RegistryError, match="rejected"):
        R.promote(spec, 2, reason="try anyway", tracking_uri=uri)


def test_a_retried_reject_writes_one_audit_entry(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    first = R.reject(spec, 2, ["min_roc_auc"], dag_run="run-a", tracking_uri=uri)
    again = R.reject(spec, 2, ["min_roc_auc"], dag_run="run-a", tracking_uri=uri)
    assert again.seq == first.seq
    assert chain(R.history(spec, uri)) == [("promote", None, "1"), ("reject", "1", "1")]
    R.reject(spec, 2, ["reviewer: still wrong"], dag_run="run-b", tracking_uri=uri)  # another run: a new entry
    assert len(R.history(spec, uri)) == 3


def test_reject_of_an_unknown_version_is_refused(spec, uri):
    with pytest.raises(R.RegistryError, match="no version 42"):
        R.reject(spec, 42, "bad", tracking_uri=uri)
    assert R.history(spec, uri) == []


# -- rollback ------------------------------------------------------------------------------------------
def test_rollback_returns_to_the_previous_champion_and_walks_further_back(spec, uri, client):
    for v in (1, 2, 3):
        R.promote(spec, v, reason=f"v{v}", tracking_uri=uri)
    back = R.rollback(spec, reason="v3 mispredicts weekends", approver="ana", tracking_uri=uri)
    assert (back.action, back.from_version, back.to_version) == ("rollback", "3", "2")
    assert champion(client) == "2"
    assert client.get_model_version("flights", "3").tags["rolled_back_reason"] == "v3 mispredicts weekends"

    # Again: not back to v3 (rolled back away from), but on to v1.
    assert R.rollback(spec, reason="v2 too", tracking_uri=uri).to_version == "1"
    assert champion(client) == "1"
    with pytest.raises(R.RegistryError, match="no previous champion"):
        R.rollback(spec, tracking_uri=uri)
    assert chain(R.history(spec, uri))[-2:] == [("rollback", "3", "2"), ("rollback", "2", "1")]


def test_rollback_to_a_named_version(spec, uri, client):
    for v in (1, 2, 3):
        R.promote(spec, v, reason=f"v{v}", tracking_uri=uri)
    entry = R.rollback(spec, 1, reason="known good", tracking_uri=uri)
    assert (entry.from_version, entry.to_version) == ("3", "1")
    assert champion(client) == "1"
    # A version that passed the gate but was never champion is approved too.
    assert R.rollback(spec, 4, reason="gate-passed", tracking_uri=uri).to_version == "4"


@pytest.mark.parametrize(
    ("version", "match"),
    [(99, "no version 99"), (6, "never approved"), (2, "never approved")],
    ids=["unknown", "never-gated", "rejected-never-champion"],
)
def test_rollback_refuses_unknown_and_never_approved_versions(spec, uri, client, version, match):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    R.reject(spec, 2, ["min_roc_auc"], tracking_uri=uri)
    before = R.history(spec, uri)
    with pytest.raises(R.RegistryError, match=match):
        R.rollback(spec, version, tracking_uri=uri)
    assert champion(client) == "1"
    assert R.history(spec, uri) == before


def test_a_former_champion_can_be_rolled_back_to_even_if_rejected_later(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    R.promote(spec, 2, reason="second", tracking_uri=uri)
    R.reject(spec, 1, "re-evaluated: below the new bar", tracking_uri=uri)
    assert R.rollback(spec, 1, tracking_uri=uri).to_version == "1"


def test_rollback_without_history_is_refused(spec, uri):
    with pytest.raises(R.RegistryError, match="no previous champion"):
        R.rollback(spec, tracking_uri=uri)


# -- history queries -----------------------------------------------------------------------------------
def test_champion_at_answers_from_the_history(spec, uri):
    e1 = R.promote(spec, 1, reason="a", tracking_uri=uri)
    time.sleep(0.01)
    e2 = R.promote(spec, 2, reason="b", tracking_uri=uri)
    time.sleep(0.01)
    R.reject(spec, 3, "c", tracking_uri=uri)
    time.sleep(0.01)
    e4 = R.rollback(spec, tracking_uri=uri)

    us = timedelta(microseconds=1)
    assert R.champion_at(spec, e1.at - us, uri) is None
    assert R.champion_at(spec, e1.at, uri) == "1"
    assert R.champion_at(spec, e2.at - us, uri) == "1"
    assert R.champion_at(spec, e2.at, uri) == "2"
    assert R.champion_at(spec, e4.at - us, uri) == "2"  # the rejection changed nothing
    assert R.champion_at(spec, e4.at, uri) == "1"
    assert R.champion_at(spec, datetime.now(UTC) + timedelta(days=1), uri) == "1"
    # Naive datetimes and strings are UTC.
    naive = e2.at.astimezone(UTC).replace(tzinfo=None)
    assert R.champion_at(spec, naive, uri) == "2"
    assert R.champion_at(spec, e2.when, uri) == "2"
    assert R.champion_at(spec, "2013-03-01T00:00", uri) is None


def test_history_is_empty_before_any_event(spec, uri):
    assert R.history(spec, uri) == []
    assert R.champion_at(spec, datetime.now(UTC), uri) is None


def test_current_shows_champion_and_challenger(spec, uri):
    assert R.current(spec, uri)["champion"] is None
    R.promote(spec, 2, reason="b", tracking_uri=uri)
    now = R.current(spec, uri)
    assert now["champion"]["version"] == "2"
    assert now["champion"]["tags"]["gate.decision"] == "passed"
    assert now["champion"]["tags"]["previous_champion"] == "none"
    assert now["champion"]["metrics"] == {"test_roc_auc": pytest.approx(0.72)}
    assert now["challenger"]["version"] == "5"
    assert now["last_event"]["action"] == "promote"


def test_format_history_lists_every_event(spec, uri):
    R.promote(spec, 1, reason="first model", approver="ana", tracking_uri=uri)
    R.reject(spec, 2, ["min_roc_auc"], dag_run="scheduled__2013-02-01", tracking_uri=uri)
    text = R.format_history(R.history(spec, uri))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["seq", "when", "(UTC)"]
    for text, line in [("promote", 2), ("none -> v1", 2), ("ana", 2), ("first model", 2), ("reject", 3)]:
        assert text in lines[line]
    for text in ("v2", "v1 -> v1", "scheduled__2013-02-01", "min_roc_auc"):
        assert text in lines[3]
    assert R.format_history([]) == "no registry events"


# -- the lock ------------------------------------------------------------------------------------------
def test_the_lock_excludes_a_second_holder_and_is_released(spec, uri, client, monkeypatch):
    monkeypatch.setattr(R, "LOCK_TIMEOUT_SECONDS", 0.3)
    with R.registry_lock(spec, uri):
        with pytest.raises(R.RegistryError, match="registry lock"), R.registry_lock(spec, uri):
            pass
        with pytest.raises(R.RegistryError, match="registry lock"):
            R.promote(spec, 1, reason="blocked", tracking_uri=uri)
    assert champion(client) is None
    assert R.history(spec, uri) == []
    with R.registry_lock(spec, uri):  # free again
        pass
    assert [m.name for m in client.search_registered_models()] == ["flights"]


def test_a_stale_lock_is_broken(spec, uri, client):
    client.create_registered_model(R.lock_name(spec), tags={"owner": "crashed-worker"})
    with pytest.raises(R.RegistryError, match="crashed-worker"), R.registry_lock(spec, uri, timeout=0.2):
        pass
    time.sleep(0.05)
    with R.registry_lock(spec, uri, timeout=0.2, stale_after=0.01) as owner:
        assert client.get_registered_model(R.lock_name(spec)).tags["owner"] == owner


def test_an_entry_left_running_by_a_crash_is_settled_by_the_next_writer(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    exp_id = client.get_experiment_by_name("flights-registry-audit").experiment_id
    # A writer that crashed after writing its entry (seq 2, to v2) but before moving the alias.
    now = datetime.now(UTC).isoformat()
    tags = {"audit.seq": "2", "audit.action": "promote", "audit.version": "2", "audit.from": "1", "audit.to": "2"}
    orphan = client.create_run(exp_id, tags={**tags, "audit.when": now})
    entry = R.promote(spec, 3, reason="next", tracking_uri=uri)
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"  # the alias never moved to v2
    assert (entry.seq, entry.from_version) == (2, "1")
    assert chain(R.history(spec, uri)) == [("promote", None, "1"), ("promote", "1", "3")]


def test_a_second_entry_with_the_same_sequence_number_stops_the_promotion(spec, uri, client, monkeypatch):
    """Belt and braces behind the lock: if another writer's entry claims the same sequence number (a lock broken
    under a slow holder), the alias is not moved and the promotion fails loudly."""
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    exp_id = client.get_experiment_by_name("flights-registry-audit").experiment_id
    monkeypatch.setattr(R, "_settle_orphans", lambda *a: None)  # the rival is in flight, not a crash orphan
    tags = {"audit.seq": "2", "audit.action": "promote", "audit.version": "3", "audit.to": "3"}
    client.create_run(exp_id, tags={**tags, "audit.when": datetime.now(UTC).isoformat()})
    with pytest.raises(R.RegistryError, match="written twice"):
        R.promote(spec, 2, reason="racing", tracking_uri=uri)
    assert champion(client) == "1"
    assert chain(R.history(spec, uri)) == [("promote", None, "1")]


# -- two processes at once -----------------------------------------------------------------------------
def _promote_in_process(uri: str, versions: list[int], who: str, barrier, errors) -> None:
    try:
        from include.mlops import registry
        from include.mlops.config import load_spec

        spec = load_spec("flights")
        registry.history(spec, uri)  # imports and DB connection warmed up before the race starts
        barrier.wait(timeout=60)
        for v in versions:
            registry.promote(spec, v, reason=f"{who} promotes v{v}", dag_run=who, tracking_uri=uri)
    except BaseException as exc:
        errors.put(f"{who}: {type(exc).__name__}: {exc}")
        raise


def test_two_processes_promoting_at_once_leave_one_champion_and_a_consistent_history(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    plans = {"proc-a": [2, 3, 2], "proc-b": [4, 5, 4]}
    procs = [
        ctx.Process(target=_promote_in_process, args=(uri, versions, who, barrier, errors))
        for who, versions in plans.items()
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert [p.exitcode for p in procs] == [0, 0], problems

    entries = R.history(spec, uri)
    assert [e.seq for e in entries] == list(range(1, 8))  # every promotion recorded, no gaps, no duplicates
    for earlier, later in itertools.pairwise(entries):
        assert later.from_version == earlier.to_version, R.format_history(entries)
    for who, versions in plans.items():  # each process's promotions, in its own order
        assert [e.to_version for e in entries if e.dag_run == who] == [str(v) for v in versions]
    holders = [v for v in range(1, VERSIONS + 1) if "champion" in client.get_model_version("flights", str(v)).aliases]
    assert len(holders) == 1
    assert champion(client) == entries[-1].to_version
    exp_id = client.get_experiment_by_name("flights-registry-audit").experiment_id
    assert client.search_runs([exp_id], "attributes.status != 'FINISHED'") == []
    assert [m.name for m in client.search_registered_models()] == ["flights"]


# -- aliases moved outside the pipeline ----------------------------------------------------------------
def test_a_champion_moved_outside_the_pipeline_is_recorded_once(spec, uri, client):
    assert R.reconcile_aliases(spec, uri) is None  # no champion, no history: they agree
    R.promote(spec, 1, reason="first", dag_run="manual__1", tracking_uri=uri)
    assert R.reconcile_aliases(spec, uri) is None
    client.set_registered_model_alias("flights", "champion", "6")  # what the MLflow UI's alias editor does
    entry = R.reconcile_aliases(spec, uri)
    assert (entry.action, entry.from_version, entry.to_version, entry.approver) == ("external", "1", "6", None)
    assert "outside the pipeline" in entry.reason
    assert chain(R.history(spec, uri)) == [("promote", None, "1"), ("external", "1", "6")]
    assert R.reconcile_aliases(spec, uri) is None  # recorded: the history now ends where the alias is
    assert client.get_model_version("flights", "6").tags["champion.action"] == "external"
    assert champion(client) == "6"  # recorded, not reverted: a person decides (rollback)
    # an external champion was never approved: rollback goes back to the last audited one
    assert R.rollback(spec, reason="undo the manual move", tracking_uri=uri).to_version == "1"


def test_a_deleted_champion_alias_is_recorded(spec, uri, client):
    R.promote(spec, 2, reason="first", tracking_uri=uri)
    client.delete_registered_model_alias("flights", "champion")
    entry = R.reconcile_aliases(spec, uri)
    assert (entry.action, entry.from_version, entry.to_version) == ("external", "2", None)
    assert R.reconcile_aliases(spec, uri) is None


# -- the shadow ----------------------------------------------------------------------------------------
def shadow(client, name: str = "flights") -> str | None:
    return R._alias_version(client, name, "shadow")


def test_set_shadow_moves_the_alias_tags_the_version_and_is_audited(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    R.reject(spec, 3, ["max_roc_auc_drop"], dag_run="train-3", tracking_uri=uri)
    entry = R.set_shadow(spec, 3, reason="rejected by a noisy test week", dag_run="train-3", tracking_uri=uri)
    assert (entry.action, entry.version, entry.from_version, entry.to_version) == ("shadow", "3", "1", "1")
    assert entry.reason == "rejected by a noisy test week"
    assert shadow(client) == "3"
    assert R.shadow_version(spec, uri) == "3"
    assert champion(client) == "1"
    tags = client.get_model_version("flights", "3").tags
    assert tags["shadow.reason"] == "rejected by a noisy test week"
    assert datetime.fromisoformat(tags["shadow.since"]) <= datetime.now(UTC)
    assert tags["gate.decision"] == "rejected"  # a role beside the gate's outcome, not a new decision
    now = R.current(spec, uri)
    assert now["shadow"]["version"] == "3"
    assert now["shadow"]["tags"]["shadow.reason"] == "rejected by a noisy test week"
    assert now["champion"]["version"] == "1"
    assert now["last_event"]["action"] == "shadow"
    # the champion's history reads through shadow entries
    entries = R.history(spec, uri)
    assert chain(entries) == [("promote", None, "1"), ("reject", "1", "1"), ("shadow", "1", "1")]
    assert R.champion_at(spec, entries[-1].at, uri) == "1"
    assert R.reconcile_aliases(spec, uri) is None
    R.promote(spec, 2, reason="second", tracking_uri=uri)  # v2 < v3: the shadow stays
    assert shadow(client) == "3"
    assert R.rollback_target(R.history(spec, uri), "2") == "1"
    assert R.rollback(spec, reason="back", tracking_uri=uri).to_version == "1"
    assert shadow(client) == "3"  # a rollback to an older champion keeps the newer shadow


@pytest.mark.parametrize(
    ("champ", "version"), [(None, 3), (3, 3), (3, 2)], ids=["no-champion", "is-the-champion", "older"]
)
def test_set_shadow_refuses_a_version_not_newer_than_the_champion(spec, uri, client, champ, version):
    if champ:
        R.promote(spec, champ, reason="first", tracking_uri=uri)
    before = R.history(spec, uri)
    assert R.set_shadow(spec, version, reason="x", dag_run="d", tracking_uri=uri) is None
    assert shadow(client) is None
    assert R.shadow_version(spec, uri) is None
    assert R.history(spec, uri) == before
    assert "shadow.since" not in client.get_model_version("flights", str(version)).tags
    with pytest.raises(R.RegistryError, match="no version 42"):
        R.set_shadow(spec, 42, reason="x", tracking_uri=uri)


def test_set_shadow_compares_versions_as_numbers(spec, uri, client):
    from include.mlops import tracking

    first = client.get_model_version("flights", "1")
    with tracking.using(uri):  # MLflow resolves a models:/m-... source with a default client
        for _ in range(7, 11):  # v7 ... v10: "10" < "9" as text
            client.create_model_version("flights", source=first.source, run_id=first.run_id)
    R.promote(spec, 5, reason="first", tracking_uri=uri)
    client.set_model_version_tag("flights", "9", "gate.decision", "passed")
    R.promote(spec, 9, reason="v9", tracking_uri=uri)
    assert R.set_shadow(spec, 10, reason="numbers", tracking_uri=uri).version == "10"
    assert R.set_shadow(spec, 6, reason="older", tracking_uri=uri) is None


def test_a_retried_set_shadow_records_once_and_a_new_shadow_replaces_the_old(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    first = R.set_shadow(spec, 3, reason="awaits approval", dag_run="run-a", tracking_uri=uri)
    assert R.set_shadow(spec, 3, reason="awaits approval", dag_run="run-a", tracking_uri=uri) == first
    assert R.set_shadow(spec, 3, reason="again", dag_run="run-b", tracking_uri=uri) == first  # already the shadow
    assert len(R.history(spec, uri)) == 2
    since = client.get_model_version("flights", "3").tags["shadow.since"]
    second = R.set_shadow(spec, 4, reason="newer candidate", dag_run="run-c", tracking_uri=uri)
    assert (second.seq, second.version) == (3, "4")
    assert shadow(client) == "4"
    old = client.get_model_version("flights", "3").tags
    assert old["shadow.since"] == since
    assert old["shadow.end_reason"] == "replaced by v4"
    assert old["shadow.until"] >= since


@pytest.mark.parametrize(("promoted", "why"), [(3, "became champion"), (4, "v4, a newer version, became champion")])
def test_promoting_the_shadow_or_a_newer_version_ends_the_shadow(spec, uri, client, promoted, why):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    R.set_shadow(spec, 3, reason="awaits approval", tracking_uri=uri)
    R.promote(spec, promoted, reason="approved", approver="ana", tracking_uri=uri)
    assert shadow(client) is None
    assert R.shadow_version(spec, uri) is None
    assert R.current(spec, uri)["shadow"] is None
    tags = client.get_model_version("flights", "3").tags
    assert tags["shadow.end_reason"] == f"promote: {why}"
    assert "shadow.until" in tags
    entries = R.history(spec, uri)
    assert chain(entries) == [("promote", None, "1"), ("shadow", "1", "1"), ("promote", "1", str(promoted))]
    assert R.rollback_target(entries, str(promoted)) == "1"


def test_clear_shadow_is_audited_and_a_no_op_without_a_shadow(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    assert R.clear_shadow(spec, reason="nothing to clear", tracking_uri=uri) is None
    R.set_shadow(spec, 4, reason="candidate", tracking_uri=uri)
    entry = R.clear_shadow(spec, reason="enough evidence", approver="ana", tracking_uri=uri)
    assert (entry.action, entry.version, entry.from_version, entry.to_version) == ("unshadow", "4", "1", "1")
    assert shadow(client) is None
    assert client.get_model_version("flights", "4").tags["shadow.end_reason"] == "enough evidence"
    assert [e.action for e in R.history(spec, uri)] == ["promote", "shadow", "unshadow"]


def test_a_shadow_entry_does_not_hide_a_champion_moved_outside_the_pipeline(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    client.set_registered_model_alias("flights", "champion", "2")  # by hand
    entry = R.set_shadow(spec, 4, reason="candidate", tracking_uri=uri)
    assert (entry.from_version, entry.to_version) == ("1", "1")  # what the history knew
    moved = R.reconcile_aliases(spec, uri)
    assert (moved.action, moved.from_version, moved.to_version) == ("external", "1", "2")


def test_a_shadow_entry_left_running_is_settled_by_the_alias(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    exp_id = client.get_experiment_by_name("flights-registry-audit").experiment_id
    now = datetime.now(UTC).isoformat()
    tags = {"audit.seq": "2", "audit.action": "shadow", "audit.version": "3", "audit.from": "1", "audit.to": "1"}
    orphan = client.create_run(exp_id, tags={**tags, "audit.when": now})  # crashed before moving the alias
    R.set_shadow(spec, 4, reason="next", tracking_uri=uri)
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert [(e.action, e.version) for e in R.history(spec, uri)] == [("promote", "1"), ("shadow", "4")]


def test_a_rollback_to_a_version_newer_than_the_shadow_ends_it(spec, uri, client):
    R.promote(spec, 1, reason="first", tracking_uri=uri)
    R.promote(spec, 4, reason="fourth", tracking_uri=uri)
    R.rollback(spec, reason="v4 misbehaves", tracking_uri=uri)
    R.set_shadow(spec, 3, reason="candidate", tracking_uri=uri)
    R.rollback(spec, 4, reason="v4 was fine after all", tracking_uri=uri)
    assert (champion(client), shadow(client)) == ("4", None)
    assert client.get_model_version("flights", "3").tags["shadow.end_reason"] == (
        "rollback: v4, a newer version, became champion"
    )
