"""Registry: promotion, rejection, rollback and the shadow with MLflow aliases, and an audit history kept in MLflow.

The registered model ``<dataset>`` carries three aliases: ``challenger`` (set by training), ``champion`` (moved
only here) and ``shadow`` (moved only here): a version newer than the champion, rejected or awaiting approval,
that scores every new day beside the champion so the monitor can compare the two on live labels. A shadow ends
when it, or a newer version, becomes champion. Stages are deprecated and never used.

Audit store: one MLflow run per event in the experiment ``<dataset>-registry-audit``. The entry is written
both as params (immutable once logged: an entry cannot be silently rewritten) and as tags (``audit.*``:
filterable with ``search_runs`` and shown in the MLflow UI). A run is FINISHED only once the alias move it
records has happened; history is the FINISHED runs ordered by ``audit.seq``, a gap-free sequence assigned
under the lock. Ordering by a sequence rather than start time keeps the order right when workers' clocks
disagree. Registered-model tags (``audit.<seq>``) were the alternative: they are mutable, capped in number
per model in some backends, and cannot be filtered by action, version or time.

Lock: two promotions must not interleave "read champion, write entry, move alias", or the history would
record a ``from`` that was not the champion any more. MLflow has no compare-and-set on aliases or tags, but
it does have one insert-if-absent: registered model names are a unique key, and ``create_registered_model``
on an existing name fails with RESOURCE_ALREADY_EXISTS (an IntegrityError in the SQL store) on SQLite,
Postgres and through a tracking server alike. So the lock is a registered model ``_lock-<dataset>-registry``,
created to acquire and deleted to release, tagged with its owner. It lives where the state it protects
lives, so it works across processes and hosts wherever the registry is reachable, unlike a lock file, which
needs a shared file system with atomic exclusive create (not an object store). A lock older than
``LOCK_STALE_SECONDS`` (a holder crashed) is broken. After writing its entry, a writer also verifies that
no other entry holds its sequence number before moving the alias (belt and braces, should a stale lock be
broken under a slow holder); an entry left RUNNING by a crash is settled by the next writer: FINISHED if the
alias shows its move happened, FAILED otherwise. An entry's ``from`` is read from the alias itself, so an alias
moved by hand (MLflow UI) shows up as a break in the from/to chain rather than being papered over.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.mlops.config import DatasetSpec
from include.mlops.tracking import artifact_location, ensure_experiment
from include.mlops.tracking import client as _client

if TYPE_CHECKING:
    from mlflow import MlflowClient

_LOG = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
SHADOW = "shadow"
# external: champion moved outside the pipeline; shadow / unshadow: the shadow alias set / removed (champion kept)
ACTIONS = ("promote", "reject", "rollback", "external", "shadow", "unshadow")
LOCK_TIMEOUT_SECONDS = 60.0
LOCK_STALE_SECONDS = 300.0
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")  # MLflow's answers for a missing alias or model
_MAX_TEXT = 5000  # MLflow caps tag values at 5000 characters (params at 6000)
_KEY_TAGS = (
    "gate.decision",
    "gate.reasons",
    "gate.report_uri",
    "gate.report_path",
    "rejected_reasons",
    "previous_champion",
    "promoted_at",
    "promoted_by",
    "feature_version",
    "candidate",
    "threshold",
    "git_sha",
    "window_start",
    "window_end",
    "trained_because",
    "shadow.since",
    "shadow.reason",
)


class RegistryError(RuntimeError):
    """A registry action that is refused: unknown or unapproved version, nothing to roll back to, lock timeout."""


@dataclass(frozen=True)
class AuditEntry:
    """One audited registry event. ``from_version``/``to_version`` are the champion before and after (equal for
    a rejection); ``version`` is the version acted on."""

    seq: int
    action: str
    version: str
    from_version: str | None
    to_version: str | None
    when: str  # UTC ISO 8601
    reason: str
    dag_run: str | None = None
    approver: str | None = None
    run_id: str | None = None  # the audit run in MLflow

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.when)


# -- helpers -------------------------------------------------------------------------------------------
def _norm(version: str | int) -> str:
    v = str(version).strip().removeprefix("v")
    if not v.isdigit():
        raise RegistryError(f"a model version is a positive integer, got {version!r}")
    return str(int(v))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _model_version(client: MlflowClient, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version {version}") from None


def audit_experiment(spec: DatasetSpec) -> str:
    """Name of the experiment holding the registry audit runs of a dataset."""
    return f"{spec.name}-registry-audit"


def _audit_experiment_id(client: MlflowClient, spec: DatasetSpec, *, create: bool) -> str | None:

    name = audit_experiment(spec)
    if create:
        location = artifact_location(client.tracking_uri, name)
        return ensure_experiment(client, name, location, tags={"dataset": spec.name})
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else None


def _entry(run: Any) -> AuditEntry:
    t = run.data.tags
    return AuditEntry(
        seq=int(t["audit.seq"]),
        action=t["audit.action"],
        version=t["audit.version"],
        from_version=t.get("audit.from") or None,
        to_version=t.get("audit.to") or None,
        when=t["audit.when"],
        reason=t.get("audit.reason", ""),
        dag_run=t.get("audit.dag_run") or None,
        approver=t.get("audit.approver") or None,
        run_id=run.info.run_id,
    )


def _audit_runs(client: MlflowClient, exp_id: str, status: str | None = "FINISHED") -> list[Any]:
    runs, token = [], None
    where = f"attributes.status = '{status}'" if status else ""
    while True:
        page = client.search_runs([exp_id], where, max_results=1000, page_token=token)
        runs += [r for r in page if "audit.seq" in r.data.tags]
        token = page.token
        if not token:
            return runs


# -- lock ----------------------------------------------------------------------------------------------
def lock_name(spec: DatasetSpec) -> str:
    return f"_lock-{spec.name}-registry"


@contextmanager
def registry_lock(
    spec: DatasetSpec,
    tracking_uri: str | None = None,
    *,
    timeout: float | None = None,
    stale_after: float | None = None,
) -> Iterator[str]:
    """Hold the dataset's registry lock (a registered model created exclusively); yields the owner token.

    Waits up to ``timeout`` (default ``LOCK_TIMEOUT_SECONDS``), then raises RegistryError; breaks a lock older
    than ``stale_after`` (default ``LOCK_STALE_SECONDS``), whose holder must have died.
    """
    from mlflow.exceptions import MlflowException

    timeout = LOCK_TIMEOUT_SECONDS if timeout is None else timeout
    stale_after = LOCK_STALE_SECONDS if stale_after is None else stale_after
    client = _client(tracking_uri)
    name = lock_name(spec)
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_registered_model(
                name, tags={"owner": owner}, description=f"registry lock of {spec.name} (mlops.registry)"
            )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        try:
            held = client.get_registered_model(name)
        except MlflowException:
            continue  # released meanwhile: try again at once
        age = time.time() - held.creation_timestamp / 1000.0
        if age > stale_after:
            _delete_lock(client, name, held.tags.get("owner"))
            continue
        if time.monotonic() > deadline:
            raise RegistryError(
                f"registry lock {name!r} held by {held.tags.get('owner')} for {age:.0f} s; gave up after {timeout} s"
            )
        time.sleep(random.uniform(0.02, 0.2))
    try:
        yield owner
    finally:
        _delete_lock(client, name, owner)


def _delete_lock(client: MlflowClient, name: str, owner: str | None) -> None:
    from mlflow.exceptions import MlflowException

    # Delete only the lock we mean (ours, or the stale one we saw): never a lock someone else took since.
    try:
        if client.get_registered_model(name).tags.get("owner") == owner:
            client.delete_registered_model(name)
    except MlflowException:
        pass  # already gone


# -- recording -----------------------------------------------------------------------------------------
def _settle_orphans(client: MlflowClient, exp_id: str, champion: str | None, shadow: str | None = None) -> None:
    """Entries left RUNNING by a crashed writer: FINISHED if the alias shows their move happened, else FAILED
    (the ``champion`` alias; the ``shadow`` alias for shadow and unshadow entries)."""
    for run in _audit_runs(client, exp_id, status="RUNNING"):
        t = run.data.tags
        if t.get("audit.action") == "shadow":
            done = shadow == t.get("audit.version")
        elif t.get("audit.action") == "unshadow":
            done = shadow != t.get("audit.version")
        else:
            done = (t.get("audit.to") or None) == champion
        client.set_terminated(run.info.run_id, "FINISHED" if done else "FAILED")


def _record(
    client: MlflowClient,
    spec: DatasetSpec,
    *,
    action: str,
    version: str,
    to_version: str | None,
    reason: str,
    dag_run: str | None,
    approver: str | None,
    apply: Any,
    from_version: str | None = None,
) -> AuditEntry:
    """Under the lock: write the entry (RUNNING), verify its sequence number, ``apply()`` the change, finish.

    ``to_version`` None means the champion does not change; ``from_version`` overrides the champion read from
    the alias (an external move records the champion the history knew, not the alias it found).
    """
    from mlflow.entities import Param, RunTag

    exp_id = _audit_experiment_id(client, spec, create=True)
    champion = _alias_version(client, spec.name, CHAMPION)
    _settle_orphans(client, exp_id, champion, _alias_version(client, spec.name, SHADOW))
    done = _audit_runs(client, exp_id)
    seq = max((int(r.data.tags["audit.seq"]) for r in done), default=0) + 1
    when = _now()
    fields = {
        "audit.seq": str(seq),
        "audit.action": action,
        "audit.version": version,
        "audit.from": (from_version if from_version is not None else champion) or "",
        "audit.to": (to_version if to_version is not None else champion) or "",
        "audit.when": when,
        "audit.reason": (reason or "")[:_MAX_TEXT],
        "audit.dag_run": dag_run or "",
        "audit.approver": approver or "",
    }
    fields = {k: v for k, v in fields.items() if v != ""}
    run = client.create_run(
        exp_id,
        start_time=int(datetime.fromisoformat(when).timestamp() * 1000),
        tags={**fields, "dataset": spec.name},
        run_name=f"{seq:06d}-{action}-v{version}",
    )
    run_id = run.info.run_id
    try:
        params = [Param(k.removeprefix("audit."), v) for k, v in fields.items()]
        client.log_batch(run_id, params=params, tags=[RunTag("mlflow.note.content", _note(fields))])
        rivals = client.search_runs([exp_id], f"tags.`audit.seq` = '{seq}' and attributes.status != 'FAILED'")
        if len(rivals) > 1:
            raise RegistryError(f"audit sequence {seq} of {spec.name} was written twice: concurrent registry write")
        apply(seq, champion)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    entry = _entry(client.get_run(run_id))
    _after_event(client, spec, entry)
    return entry


def _after_event(client: MlflowClient, spec: DatasetSpec, entry: AuditEntry) -> None:
    """Name the version's training run by its outcome and re-render its model card (approver, history)."""
    from include.mlops import lineage

    try:
        mv = client.get_model_version(spec.name, entry.version)
        if entry.action not in ("shadow", "unshadow"):  # a role beside the gate's outcome, which the name keeps
            outcome = {"promote": "champion", "rollback": "champion (rollback)", "reject": "rejected"}.get(
                entry.action, entry.action
            )
            name = client.get_run(mv.run_id).data.tags.get("mlflow.runName", "")
            client.set_tag(mv.run_id, "mlflow.runName", f"{name.split(' (')[0]} ({outcome})")
        lineage.log_model_card(spec, entry.version, client.tracking_uri)
    except Exception as exc:  # the alias moved and the entry is written: a card must not undo that
        _LOG.warning("model card of %s v%s not updated: %s", spec.name, entry.version, exc)


def _note(fields: dict[str, str]) -> str:
    action, version, why = fields["audit.action"], fields["audit.version"], fields.get("audit.reason", "")
    frm, to = fields.get("audit.from", "none"), fields.get("audit.to", "none")
    return f"{action} v{version}: champion {frm} -> {to}. {why}"


def _gate_passed(mv: Any) -> bool:
    return mv.tags.get("gate.decision") == "passed"


def _was_champion(entries: Sequence[AuditEntry], version: str) -> bool:
    return any(e.to_version == version and e.action in ("promote", "rollback") for e in entries)


def _move_champion(
    client: MlflowClient, spec: DatasetSpec, version: str, action: str, reason: str, approver: str | None
) -> Any:
    def apply(seq: int, champion: str | None) -> None:
        client.set_registered_model_alias(spec.name, CHAMPION, version)
        tags = {
            "previous_champion": champion or "none",
            "champion.since": _now(),
            "champion.action": action,
            "champion.audit_seq": str(seq),
        }
        if action == "promote":
            tags |= {"promoted_at": tags["champion.since"], "promoted_by": approver or "pipeline"}
        for k, v in tags.items():
            client.set_model_version_tag(spec.name, version, k, v)
        if champion and action == "rollback":
            client.set_model_version_tag(spec.name, champion, "rolled_back_at", tags["champion.since"])
            client.set_model_version_tag(spec.name, champion, "rolled_back_reason", (reason or "")[:_MAX_TEXT])
        shadow = _alias_version(client, spec.name, SHADOW)
        if shadow is not None and int(version) >= int(shadow):  # a promoted shadow, or one older than the champion
            why = "became champion" if shadow == version else f"v{version}, a newer version, became champion"
            _end_shadow(client, spec, shadow, f"{action}: {why}")

    return apply


def _end_shadow(client: MlflowClient, spec: DatasetSpec, version: str, why: str) -> None:
    """Remove the ``shadow`` alias from ``version``; its tags say when and why (``shadow.since`` stays)."""
    client.delete_registered_model_alias(spec.name, SHADOW)
    client.set_model_version_tag(spec.name, version, "shadow.until", _now())
    client.set_model_version_tag(spec.name, version, "shadow.end_reason", (why or "")[:_MAX_TEXT])


# -- actions -------------------------------------------------------------------------------------------
def promote(
    spec: DatasetSpec,
    version: str | int,
    *,
    reason: str,
    dag_run: str | None = None,
    approver: str | None = None,
    tracking_uri: str | None = None,
) -> AuditEntry:
    """Move alias ``champion`` to ``version`` (which must have passed the gate, and be approved by a person when
    ``spec.gate.require_approval``); audited as 'promote'. Promoting the current champion again (a task retry)
    records nothing and returns the entry that made it champion."""
    client = _client(tracking_uri)
    version = _norm(version)
    mv = _model_version(client, spec.name, version)
    if not _gate_passed(mv):
        decision = mv.tags.get("gate.decision", "no gate decision")
        raise RegistryError(f"{spec.name} v{version} cannot be promoted: gate.decision is {decision!r}")
    if spec.gate.require_approval and not approver:
        raise RegistryError(f"{spec.name} requires a human approver to promote v{version}")
    with registry_lock(spec, client.tracking_uri):
        if _alias_version(client, spec.name, CHAMPION) == version:
            same = [e for e in history(spec, client.tracking_uri) if e.to_version == version]
            if same:
                return same[-1]
        return _record(
            client,
            spec,
            action="promote",
            version=version,
            to_version=version,
            reason=reason,
            dag_run=dag_run,
            approver=approver,
            apply=_move_champion(client, spec, version, "promote", reason, approver),
        )


def reject(
    spec: DatasetSpec,
    version: str | int,
    reasons: Sequence[str] | str,
    *,
    dag_run: str | None = None,
    approver: str | None = None,
    tracking_uri: str | None = None,
) -> AuditEntry:
    """Tag ``version`` ``gate.decision=rejected`` with ``rejected_reasons``; the champion is untouched.
    Audited as 'reject'. ``reasons``: failed gate checks, or a reviewer's words."""
    client = _client(tracking_uri)
    version = _norm(version)
    _model_version(client, spec.name, version)
    why = [reasons] if isinstance(reasons, str) else list(reasons)
    text = ",".join(why) or "unspecified"

    def apply(seq: int, champion: str | None) -> None:
        for k, v in {
            "gate.decision": "rejected",
            "rejected_reasons": text[:_MAX_TEXT],
            "rejected_at": _now(),
            "rejected_by": approver or "pipeline",
        }.items():
            client.set_model_version_tag(spec.name, version, k, v)
        if _alias_version(client, spec.name, CHALLENGER) == version:
            client.delete_registered_model_alias(spec.name, CHALLENGER)  # a rejected version is no challenger

    with registry_lock(spec, client.tracking_uri):
        # a retried reject task (same version, same DAG run) returns its entry instead of writing a second one
        same = [
            e
            for e in history(spec, client.tracking_uri)
            if e.action == "reject" and e.version == version and dag_run and e.dag_run == dag_run
        ]
        if same:
            return same[-1]
        return _record(
            client,
            spec,
            action="reject",
            version=version,
            to_version=None,
            reason=text,
            dag_run=dag_run,
            approver=approver,
            apply=apply,
        )


def rollback_target(entries: Sequence[AuditEntry], current: str | None) -> str | None:
    """The version a default rollback returns to: the latest earlier champion that is not the current one and
    was never rolled back away from (so repeated rollbacks walk further back, never in a circle)."""
    abandoned = {e.from_version for e in entries if e.action == "rollback"} | {current}
    for e in reversed(entries):
        if e.action in ("promote", "rollback") and e.to_version and e.to_version not in abandoned:
            return e.to_version
    return None


def rollback(
    spec: DatasetSpec,
    version: str | int | None = None,
    *,
    reason: str = "rollback",
    dag_run: str | None = None,
    approver: str | None = None,
    tracking_uri: str | None = None,
) -> AuditEntry:
    """Move ``champion`` back to ``version`` (default: the previous champion, see :func:`rollback_target`).

    Refuses (RegistryError) a version that does not exist or was never approved: never champion and never
    passed the gate. Audited as 'rollback'. Rolling back to the current champion records nothing and returns
    the entry that made it champion.
    """
    client = _client(tracking_uri)
    with registry_lock(spec, client.tracking_uri):
        entries = history(spec, client.tracking_uri)
        champion = _alias_version(client, spec.name, CHAMPION)
        if version is None:
            target = rollback_target(entries, champion)
            if target is None:
                raise RegistryError(f"{spec.name}: no previous champion to roll back to (champion is {champion})")
        else:
            target = _norm(version)
        mv = _model_version(client, spec.name, target)
        if not (_was_champion(entries, target) or _gate_passed(mv)):
            raise RegistryError(
                f"{spec.name} v{target} was never approved (never champion, gate.decision="
                f"{mv.tags.get('gate.decision')!r}): refusing to roll back to it"
            )
        if target == champion:
            same = [e for e in entries if e.to_version == target]
            if same:
                return same[-1]
        return _record(
            client,
            spec,
            action="rollback",
            version=target,
            to_version=target,
            reason=reason,
            dag_run=dag_run,
            approver=approver,
            apply=_move_champion(client, spec, target, "rollback", reason, approver),
        )


def set_shadow(
    spec: DatasetSpec,
    version: str | int,
    *,
    reason: str,
    dag_run: str | None = None,
    tracking_uri: str | None = None,
) -> AuditEntry | None:
    """Move alias ``shadow`` to ``version`` (tags ``shadow.since``, ``shadow.reason``); audited as 'shadow', the
    champion unchanged. Refused (None, nothing recorded) without a champion or when ``version`` is not newer than
    it: a shadow is a candidate the champion has not seen. A retry (same version and DAG run), or setting the
    shadow it already is, records nothing and returns the entry that made it shadow. RegistryError for an
    unknown version."""
    client = _client(tracking_uri)
    version = _norm(version)
    _model_version(client, spec.name, version)
    with registry_lock(spec, client.tracking_uri):
        champion = _alias_version(client, spec.name, CHAMPION)
        if champion is None or int(version) <= int(champion):
            _LOG.info("%s v%s not made shadow: champion is %s (a shadow is newer)", spec.name, version, _v(champion))
            return None
        entries = history(spec, client.tracking_uri)
        mine = [e for e in entries if e.action == "shadow" and e.version == version]
        previous = _alias_version(client, spec.name, SHADOW)
        same = [e for e in mine if dag_run and e.dag_run == dag_run] or (mine if previous == version else [])
        if same:
            return same[-1]

        def apply(seq: int, champion: str | None) -> None:
            client.set_registered_model_alias(spec.name, SHADOW, version)
            tags = {"shadow.since": _now(), "shadow.reason": (reason or "")[:_MAX_TEXT], "shadow.audit_seq": str(seq)}
            for k, v in tags.items():
                client.set_model_version_tag(spec.name, version, k, v)
            if previous is not None and previous != version:
                client.set_model_version_tag(spec.name, previous, "shadow.until", tags["shadow.since"])
                client.set_model_version_tag(spec.name, previous, "shadow.end_reason", f"replaced by v{version}")

        return _record(
            client,
            spec,
            action="shadow",
            version=version,
            **_champion_kept(entries),
            reason=reason,
            dag_run=dag_run,
            approver=None,
            apply=apply,
        )


def clear_shadow(
    spec: DatasetSpec,
    *,
    reason: str,
    dag_run: str | None = None,
    approver: str | None = None,
    tracking_uri: str | None = None,
) -> AuditEntry | None:
    """Remove the ``shadow`` alias (its version is tagged ``shadow.until``, ``shadow.end_reason``); audited as
    'unshadow'. None, and nothing recorded, when there is no shadow."""
    client = _client(tracking_uri)
    with registry_lock(spec, client.tracking_uri):
        shadow = _alias_version(client, spec.name, SHADOW)
        if shadow is None:
            return None
        return _record(
            client,
            spec,
            action="unshadow",
            version=shadow,
            **_champion_kept(history(spec, client.tracking_uri)),
            reason=reason,
            dag_run=dag_run,
            approver=approver,
            apply=lambda seq, champion: _end_shadow(client, spec, shadow, reason),
        )


def _champion_kept(entries: Sequence[AuditEntry]) -> dict[str, str]:
    """from/to of an entry that leaves the champion alone: the champion the history ends with, not the alias, so
    a shadow entry never papers over a champion moved outside the pipeline (:func:`reconcile_aliases`)."""
    audited = (entries[-1].to_version if entries else None) or ""
    return {"from_version": audited, "to_version": audited}


def shadow_version(spec: DatasetSpec, tracking_uri: str | None = None) -> str | None:
    """The version holding the ``shadow`` alias, None when there is none. A registry that cannot answer raises
    (MlflowException): an outage is not "no shadow"."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(tracking_uri).get_model_version_by_alias(spec.name, SHADOW).version)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise


def reconcile_aliases(spec: DatasetSpec, tracking_uri: str | None = None) -> AuditEntry | None:
    """Detect a ``champion`` alias moved outside the pipeline (MLflow UI, API): when the alias differs from the
    champion the audit history ends with, record the move as an ``external`` entry (from the audited champion to
    the alias's version, approver unknown) and return it, so history, ``champion_at`` and rollback see it; None
    when they agree. The caller alerts. A deleted alias is recorded the same way (``to`` none)."""
    client = _client(tracking_uri)
    with registry_lock(spec, client.tracking_uri):
        entries = history(spec, client.tracking_uri)
        audited = entries[-1].to_version if entries else None
        actual = _alias_version(client, spec.name, CHAMPION)
        if actual == audited:
            return None

        def apply(seq: int, champion: str | None) -> None:
            tags = {
                "champion.since": _now(),
                "champion.action": "external",
                "champion.audit_seq": str(seq),
                "previous_champion": audited or "none",
                "promoted_by": "unknown (outside the pipeline)",
            }
            for k, v in tags.items() if actual else ():
                client.set_model_version_tag(spec.name, actual, k, v)

        why = (
            f"champion alias found on {_v(actual)} while the audit history ends with {_v(audited)}: "
            "moved outside the pipeline (MLflow UI or API), bypassing the gate and approval"
        )
        return _record(
            client,
            spec,
            action="external",
            version=actual or (audited or "0"),
            to_version=actual or "",
            from_version=audited or "",
            reason=why,
            dag_run=None,
            approver=None,
            apply=apply,
        )


# -- queries -------------------------------------------------------------------------------------------
def history(spec: DatasetSpec, tracking_uri: str | None = None) -> list[AuditEntry]:
    """Every completed registry event of the dataset, oldest first."""
    client = _client(tracking_uri)
    exp_id = _audit_experiment_id(client, spec, create=False)
    if exp_id is None:
        return []
    return sorted((_entry(r) for r in _audit_runs(client, exp_id)), key=lambda e: e.seq)


def _utc(when: datetime | str) -> datetime:
    t = datetime.fromisoformat(when) if isinstance(when, str) else when
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def champion_at(
    spec: DatasetSpec,
    when: datetime | str,
    tracking_uri: str | None = None,
    *,
    entries: Sequence[AuditEntry] | None = None,
) -> str | None:
    """The version that was champion at ``when`` (naive times are UTC), per the audit history; None before any."""
    t = _utc(when)
    # The last entry (in sequence order) recorded at or before t; no early exit, so a worker whose clock ran a
    # little behind cannot hide later entries.
    champion = None
    for e in entries if entries is not None else history(spec, tracking_uri):
        if e.at <= t:
            champion = e.to_version
    return champion


def _describe(client: MlflowClient, name: str, version: str | None) -> dict[str, Any] | None:
    if version is None:
        return None
    mv = client.get_model_version(name, version)
    try:  # metrics are the training run's metrics (the version carries only the monitor's baseline as tags)
        run_metrics = client.get_run(mv.run_id).data.metrics
    except Exception:
        run_metrics = {}
    metrics = {k: float(v) for k, v in run_metrics.items() if k.startswith(("test_", "valid_"))}
    for k, v in mv.tags.items():
        if k.startswith(("test_", "valid_")) and k not in metrics:
            with suppress(ValueError):
                metrics[k] = float(v)
    return {
        "version": version,
        "run_id": mv.run_id,
        "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds"),
        "tags": {k: mv.tags[k] for k in _KEY_TAGS if k in mv.tags},
        "metrics": metrics,
    }


def current(spec: DatasetSpec, tracking_uri: str | None = None) -> dict[str, Any]:
    """Champion, challenger and shadow (version, run, key tags and metrics; None when unset) and the last audit
    entry."""
    client = _client(tracking_uri)
    entries = history(spec, client.tracking_uri)
    return {
        "model": spec.name,
        CHAMPION: _describe(client, spec.name, _alias_version(client, spec.name, CHAMPION)),
        CHALLENGER: _describe(client, spec.name, _alias_version(client, spec.name, CHALLENGER)),
        SHADOW: _describe(client, spec.name, _alias_version(client, spec.name, SHADOW)),
        "last_event": entries[-1].as_dict() if entries else None,
    }


def format_history(entries: Sequence[AuditEntry]) -> str:
    """A plain-text table of audit entries (for the CLI)."""
    if not entries:
        return "no registry events"
    header = ("seq", "when (UTC)", "action", "version", "champion", "approver", "dag run", "reason")
    rows = [
        (
            str(e.seq),
            e.when[:19].replace("T", " "),
            e.action,
            f"v{e.version}",
            f"{_v(e.from_version)} -> {_v(e.to_version)}",
            e.approver or "-",
            e.dag_run or "-",
            e.reason.replace("\n", " ")[:80],
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"
