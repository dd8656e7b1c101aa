"""The online half of the feature store: Feast, fed by the same engine as training and batch scoring.

Feast (0.67) holds, per dataset (a Feast *project*), one feature view ``<dataset>_features`` keyed by the spec's
``entity_keys`` (one Feast entity each) with

- every feature of the spec (a feature named like an entity key as ``feature__<name>``), the values
  :func:`features.features_for_dates` computes, so a served row equals a batch-scored row exactly (no
  train/serve skew);
- ``feature_version``: the lake's content version of the features of the row's day (:func:`features.feature_version`);
- ``request__<column>``: the spec's ``online.request_fields`` as they were when the features were computed, so a
  request whose fields differ (another tail number, another time) is refused rather than scored with features
  of other inputs. One view: a lookup is one read of the store.

:func:`materialize_day` writes one validated day (the ``<dataset>_materialize`` DAG runs it on every validated
Asset event): incremental (that day's rows only), idempotent (a day whose stored ``feature_version`` already
equals the lake's is not rewritten; a re-validated day is). A row's features read only its own day and, for
windows, days strictly before it, so the store never holds a value computed with data after the row's day.

Where the store lives comes from the environment (config in layers; no endpoint in the spec):

- ``MLOPS_ONLINE_STORE``: unset or ``sqlite`` — the embedded default, SQLite files under ``MLOPS_ONLINE_DIR``
  (default ``<MLOPS_DATA_ROOT>/online``); ``redis://host:port/<db>`` — Feast's Redis online store (production:
  compose and the native topology).
- ``MLOPS_FEAST_REGISTRY``: Feast's registry; default a file beside the SQLite store; a ``postgresql://`` URL
  makes it Feast's SQL registry.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import pandas as pd

from include.mlops.config import DatasetSpec

if TYPE_CHECKING:
    from feast import FeatureStore

    from include.mlops.storage import Lake

STORE_ENV = "MLOPS_ONLINE_STORE"
DIR_ENV = "MLOPS_ONLINE_DIR"
REGISTRY_ENV = "MLOPS_FEAST_REGISTRY"
VERSION_FIELD = "feature_version"  # non-null on every stored row: its absence means "no such entity"
EVENT_TIME = "event_timestamp"


class OnlineStoreError(RuntimeError):
    """The online store cannot answer: not configured, not materialized, or a day that is not validated."""


class EntityNotFound(OnlineStoreError):
    """Requested entity keys with no row in the online store."""


class StaleFeatures(OnlineStoreError):
    """A request field differs from the value the stored features were computed with."""


def features_view(spec: DatasetSpec) -> str:
    return f"{spec.name}_features"


def field_name(spec: DatasetSpec, feature: str) -> str:
    """The Feast field of a feature: its own name, or ``feature__<name>`` for a feature named like an entity key
    (Feast would take that column for the key)."""
    return f"feature__{feature}" if feature in spec.entity_keys else feature


def request_field(column: str) -> str:
    """The Feast field holding request field ``column`` as it was when the row's features were computed."""
    return f"request__{column}"


# -- configuration ---------------------------------------------------------------------------------------
def online_dir() -> Path:
    """Folder of the embedded store's SQLite files: ``MLOPS_ONLINE_DIR`` or ``<data root>/online``."""
    from include.mlops.storage import data_root

    given = os.environ.get(DIR_ENV)
    if given:
        return Path(given)
    root = data_root()
    if "://" in root and not root.startswith("file://"):
        raise OnlineStoreError(
            f"the lake is at {root}: the embedded SQLite store needs a local folder, set {DIR_ENV} "
            f"or {STORE_ENV}=redis://host:port/<db>"
        )
    return Path(root.removeprefix("file://")) / "online"


def _redis_connection(url: str) -> str:
    """Feast's Redis connection string (``host:port,db=N,password=…``) for a ``redis://`` URL."""
    u = urlparse(url)
    parts = [f"{u.hostname or 'localhost'}:{u.port or 6379}"]
    db = (u.path or "/").strip("/") or parse_qs(u.query).get("db", ["0"])[0]
    parts.append(f"db={int(db)}")
    if u.password:
        parts.append(f"password={u.password}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def describe_store(spec: DatasetSpec) -> str:
    """Where ``spec``'s online features live, without secrets (for logs, health and the CLI)."""
    url = os.environ.get(STORE_ENV, "")
    if url.startswith(("redis://", "rediss://")):
        u = urlparse(url)
        return f"redis {u.hostname}:{u.port or 6379}{u.path or '/0'}"
    return f"sqlite {online_dir() / (spec.name + '.db')}"


def repo_config(spec: DatasetSpec, *, registry_ttl_seconds: int = 10) -> Any:
    """Feast's RepoConfig for ``spec``'s project, from the environment (module docstring)."""
    from feast import RepoConfig
    from feast.repo_config import RegistryConfig

    url = os.environ.get(STORE_ENV, "")
    if url.startswith(("redis://", "rediss://")):
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig

        online: Any = RedisOnlineStoreConfig(connection_string=_redis_connection(url))
    elif url in ("", "sqlite"):
        from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

        online_dir().mkdir(parents=True, exist_ok=True)
        online = SqliteOnlineStoreConfig(path=str(online_dir() / f"{spec.name}.db"))
    else:
        raise OnlineStoreError(f"{STORE_ENV}={url.split('@')[-1]!r}: use 'sqlite' or a redis://host:port/<db> URL")
    registry_url = os.environ.get(REGISTRY_ENV, "")
    if registry_url.startswith("postgresql"):
        from feast.infra.registry.sql import SqlRegistryConfig

        registry = SqlRegistryConfig(path=registry_url, cache_ttl_seconds=registry_ttl_seconds)
    else:
        path = registry_url or str(online_dir() / f"{spec.name}.registry.db")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        registry = RegistryConfig(path=path, cache_ttl_seconds=registry_ttl_seconds)
    return RepoConfig(
        project=spec.name,
        provider="local",
        registry=registry,
        online_store=online,
        entity_key_serialization_version=3,
    )


# -- definitions -----------------------------------------------------------------------------------------
def _feast_type(dtype: str) -> Any:
    from feast.types import Bool, Float64, Int64, String

    return {"int": Int64, "float": Float64, "bool": Bool}.get(dtype, String)


def _value_type(dtype: str) -> Any:
    from feast import ValueType

    return ValueType.INT64 if dtype == "int" else ValueType.STRING


def definitions(spec: DatasetSpec, lake_uri: str = "") -> list[Any]:
    """The Feast objects of ``spec``: one entity per entity key and the feature view, each feature with its
    spec description and definition as tags (what ``feast`` and :func:`catalog` show)."""
    import json
    from datetime import timedelta

    from feast import Entity, FeatureView, Field, FileSource

    primary = spec.primary_columns
    entities = [
        Entity(name=k, join_keys=[k], value_type=_value_type(primary[k]), description=f"entity key of {spec.name}")
        for k in spec.entity_keys
    ]
    keys = [Field(name=k, dtype=_feast_type(primary[k])) for k in spec.entity_keys]
    # The offline half is the lake's versioned feature table; Feast never reads it (rows are written by
    # materialize_day from the same engine), the source only records where it is.
    source = FileSource(
        name=f"{spec.name}_lake_features", path=f"{lake_uri}/features/{spec.name}", timestamp_field=EVENT_TIME
    )
    feature_fields = [
        Field(
            name=field_name(spec, f.name),
            dtype=_feast_type(f.dtype),
            description=f.description,
            tags={"kind": f.kind, "definition": json.dumps(f.model_dump(exclude_none=True, exclude={"name"}))},
        )
        for f in spec.features
    ]
    version = Field(name=VERSION_FIELD, dtype=_feast_type("str"), description="lake feature version of the row's day")
    request = [
        Field(name=request_field(c), dtype=_feast_type(primary[c]), description=f"request field {c} as computed with")
        for c in spec.online.request_fields
    ]
    fv = FeatureView(
        name=features_view(spec),
        entities=entities,
        ttl=timedelta(0),
        schema=[*keys, *feature_fields, version, *request],
        source=source,
        online=True,
        description=spec.description.strip(),
        owner=spec.owner,
        tags={"dataset": spec.name},
    )
    return [*entities, fv]


def open_store(spec: DatasetSpec, *, apply: bool = False, lake_uri: str = "") -> FeatureStore:
    """A Feast FeatureStore for ``spec`` (``apply``: register the definitions first, idempotently)."""
    import warnings

    from feast import FeatureStore

    with warnings.catch_warnings():  # Feast warns about its own experimental features on every call
        warnings.simplefilter("ignore")
        try:
            store = FeatureStore(config=repo_config(spec))
        except OSError as exc:  # e.g. a read-only lake without the store's folder yet
            raise OnlineStoreError(f"the online store cannot be opened: {exc}") from None
        if apply:
            store.apply(definitions(spec, lake_uri))
    return store


# -- values ----------------------------------------------------------------------------------------------
def _stored(dtype: str, values: pd.Series, tz: str = "UTC") -> list[Any]:
    """Column values as Feast stores them: int / float / str, None for missing; datetimes as UTC ISO text (a time
    without an offset is wall-clock time in ``tz``, the spec's timezone)."""
    if dtype == "datetime":
        return [None if pd.isna(v) else _instant(v, tz).isoformat() for v in values]
    if dtype in ("int", "float", "bool"):
        return [None if pd.isna(v) else v.item() if hasattr(v, "item") else v for v in values]
    return [None if pd.isna(v) else str(v) for v in values]


def _same(dtype: str, sent: Any, stored: Any, tz: str) -> bool:
    if sent is None or stored is None:
        return sent is None and stored is None
    if dtype == "datetime":
        try:
            return _instant(sent, tz) == pd.Timestamp(stored)
        except (ValueError, TypeError):
            return False
    if dtype in ("int", "float"):
        return isinstance(sent, int | float) and sent == stored
    return str(sent) == stored


def _instant(value: Any, tz: str) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return (t.tz_localize(tz) if t.tzinfo is None else t).tz_convert("UTC")


def _key_values(spec: DatasetSpec, frame: pd.DataFrame) -> dict[str, list[Any]]:
    return {k: _stored("int" if spec.primary_columns[k] == "int" else "str", frame[k]) for k in spec.entity_keys}


# -- materialization -------------------------------------------------------------------------------------
def materialize_day(
    spec: DatasetSpec, lake: Lake, day: date | str, *, store: FeatureStore | None = None
) -> dict[str, Any]:
    """Write the features of validated day ``day`` to the online store; a JSON-serialisable summary.

    Skipped (``written: False``) when every row of the day already holds the lake's current feature version."""
    import time

    from include.mlops import features as F
    from include.mlops.storage import date_partition

    t0 = time.perf_counter()
    day = day if isinstance(day, date) else date.fromisoformat(str(day)[:10])
    partition = date_partition(day)
    if lake.manifest("validated", spec.name, partition) is None:
        raise OnlineStoreError(f"validated/{spec.name}/{partition} does not exist: nothing to materialize")
    version, _ = F.feature_version(lake, spec, day, day)
    table = F.features_for_dates(lake, spec, day, day)  # the engine of training and batch scoring
    primary = lake.read_table("validated", spec.name, partition, spec.source.primary_table)
    if len(primary) != len(table):  # build_features: one row per primary row, in input order
        raise OnlineStoreError(f"{partition}: {len(table)} feature rows for {len(primary)} validated rows")
    store = store or open_store(spec, apply=True, lake_uri=lake.url)
    summary = {"dataset": spec.name, "date": day.isoformat(), "rows": len(table), "feature_version": version}
    summary["store"] = describe_store(spec)
    if table.empty:
        return summary | {"written": False, "reason": "no rows", "seconds": round(time.perf_counter() - t0, 3)}
    keys = _key_values(spec, table)
    held = _read(store, [f"{features_view(spec)}:{VERSION_FIELD}"], keys)[VERSION_FIELD]
    if all(v == version for v in held):
        reason = f"unchanged: every row holds feature version {version}"
        return summary | {"written": False, "reason": reason, "seconds": round(time.perf_counter() - t0, 3)}
    now = datetime.now(UTC)  # Feast keeps the newest event per key: a re-validated day replaces the old rows
    kinds = {f.name: f.dtype for f in spec.features}
    values = {field_name(spec, f): _stored(kinds[f], table[f]) for f in spec.feature_names}
    tz = spec.time.timezone
    raw = {request_field(c): _stored(spec.primary_columns[c], primary[c], tz) for c in spec.online.request_fields}
    rows = pd.DataFrame({**keys, **values, VERSION_FIELD: version, **raw, EVENT_TIME: now})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store.write_to_online_store(features_view(spec), rows)
    _log_day(spec, lake, summary | {"at": now.isoformat(timespec="seconds")})
    return summary | {"written": True, "seconds": round(time.perf_counter() - t0, 3)}


def _record_path(spec: DatasetSpec) -> str:
    return f"reports/{spec.name}/online_store.json"


def materialized_days(spec: DatasetSpec, lake: Lake) -> dict[str, Any]:
    """The lake's note of what was materialized: ``{"store": …, "days": {day: {feature_version, rows, at}}}``."""
    return lake.read_json(_record_path(spec)) if lake.exists(_record_path(spec)) else {"days": {}}


def days_to_materialize(spec: DatasetSpec, lake: Lake, days: Sequence[str]) -> list[str]:
    """``days`` plus what they leave stale. Materialized days whose lake feature version moved within
    ``history_days`` after one of them: a day validated late (a parallel backfill, a re-validation) is history
    for the windows of the days after it. And validated days never materialized in the ``history_days`` before
    the last of them: a run is not told of every validated event (Airflow may fold events that arrive while a
    run is queued), so each run catches up. :func:`materialize_day` skips what is current."""
    from datetime import timedelta

    from include.mlops.features import feature_version

    out = {d[:10] for d in days}
    if not out:
        return []
    record = materialized_days(spec, lake)["days"]
    last = date.fromisoformat(max(out))
    since = (last - timedelta(days=spec.history_days)).isoformat()
    for p in lake.partitions("validated", spec.name):
        d = p.removeprefix("date=")
        if p.startswith("date=") and since <= d <= last.isoformat() and d not in record:
            out.add(d)
    first = date.fromisoformat(min(out))
    for later, entry in record.items():
        gap = (date.fromisoformat(later) - first).days
        moved = later not in out and 0 < gap <= spec.history_days + (last - first).days
        if moved and entry["feature_version"] != feature_version(lake, spec, later, later)[0]:
            out.add(later)
    return sorted(out)


def _log_day(spec: DatasetSpec, lake: Lake, entry: Mapping[str, Any]) -> None:
    """Note a materialized day in the lake (what :func:`catalog` reports as freshness); a record of another
    store is replaced."""
    record = materialized_days(spec, lake)
    if record.get("store") != entry["store"]:
        record = {"store": entry["store"], "days": {}}
    record["days"][entry["date"]] = {k: entry[k] for k in ("feature_version", "rows", "at")}
    lake.write_json(_record_path(spec), record)


def describe(result: Mapping[str, Any]) -> str:
    """One log line for a :func:`materialize_day` summary."""
    what = f"{result['rows']} rows written" if result["written"] else result["reason"]
    return f"{result['dataset']} {result['date']}: {what} -> {result['store']} ({result['seconds']} s)"


def _read(store: FeatureStore, refs: list[str], keys: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    return store.get_online_features(features=refs, entity_rows=dict(keys), full_feature_names=False).to_dict()


def request_rows(spec: DatasetSpec, lake: Lake, day: date | str) -> pd.DataFrame:
    """What an online client sends for every row of validated ``day``: the entity keys (as stored) and the
    spec's request fields (JSON-ready values, None for missing), one row per validated row, in order."""
    from include.mlops import features as F

    table = F.features_for_dates(lake, spec, day, day)
    primary = lake.read_table("validated", spec.name, f"date={str(day)[:10]}", spec.source.primary_table)
    sent = table[spec.entity_keys].copy()
    for c in spec.online.request_fields:
        sent[c] = primary[c].astype(object).where(primary[c].notna(), None).to_numpy()
    return sent


# -- lookup at serving time ------------------------------------------------------------------------------
@dataclass
class OnlineLookup:
    """Features by entity key for the scoring server: one Feast store, read under a lock (the embedded
    SQLite store shares one connection between the server's threads)."""

    spec: DatasetSpec
    store: Any
    _lock: threading.Lock

    @classmethod
    def open(cls, spec: DatasetSpec) -> OnlineLookup:
        return cls(spec, open_store(spec), threading.Lock())

    @property
    def fields(self) -> list[str]:
        """What a keyed request carries: the entity keys, then the request fields."""
        return [*self.spec.entity_keys, *self.spec.online.request_fields]

    def kinds(self) -> dict[str, str]:
        """Request kind per field for serving's type checks: ``int``, ``float`` or ``any``."""
        out = {}
        for c in self.fields:
            dtype = self.spec.primary_columns[c]
            out[c] = dtype if dtype in ("int", "float") else "any"
        return out

    def columns(self, features: Sequence[str], sent: Mapping[str, list[Any]]) -> list[list[Any]]:
        """The stored values of ``features`` (one list per feature) for the rows of ``sent`` (field -> values).

        Raises EntityNotFound naming the first missing keys, StaleFeatures naming a request field that differs
        from the stored one, OnlineStoreError when the store cannot be read."""
        spec = self.spec
        keys = {k: [_entity(spec.primary_columns[k], v) for v in sent[k]] for k in spec.entity_keys}
        refs = [f"{features_view(spec)}:{field_name(spec, f)}" for f in [*features, VERSION_FIELD]]
        refs += [f"{features_view(spec)}:{request_field(c)}" for c in spec.online.request_fields]
        try:
            with self._lock:
                got = self.store.get_online_features(features=refs, entity_rows=keys, full_feature_names=True).to_dict()
        except Exception as exc:
            raise OnlineStoreError(f"the online store cannot be read: {type(exc).__name__}: {exc}") from None
        versions = got[f"{features_view(spec)}__{VERSION_FIELD}"]
        missing = [i for i, v in enumerate(versions) if v is None]
        if missing:
            shown = [{k: keys[k][i] for k in keys} for i in missing[:3]]
            raise EntityNotFound(
                f"{len(missing)} of {len(versions)} rows have no online features for entity keys {shown}"
                f"{' …' if len(missing) > 3 else ''}: the day is not materialized, or no such {spec.name} row"
            )
        for c in spec.online.request_fields:
            stored = got[f"{features_view(spec)}__{request_field(c)}"]
            for i, (s, v) in enumerate(zip(sent[c], stored, strict=True)):
                if not _same(spec.primary_columns[c], s, v, spec.time.timezone):
                    raise StaleFeatures(
                        f"row {i}: the online features of { ({k: keys[k][i] for k in keys}) } were computed with "
                        f"{c}={v!r}, the request says {s!r}: no features for those inputs"
                    )
        return [got[f"{features_view(spec)}__{field_name(spec, f)}"] for f in features]


def _entity(dtype: str, value: Any) -> Any:
    if dtype == "int":
        return int(value) if isinstance(value, int | float) and float(value).is_integer() else value
    return None if value is None else str(value)


# -- discovery -------------------------------------------------------------------------------------------
def definition(spec: DatasetSpec, name: str) -> str:
    """How a feature is computed, in one line of text."""
    f = next(x for x in spec.features if x.name == name)
    if f.calendar is not None:
        return f"{f.calendar.part} of {f.calendar.column}"
    if f.expr is not None:
        return f.expr
    if f.window is not None:
        w = f.window
        by = f" per {', '.join(w.by)}" if w.by else ""
        prior = f", smoothed with {w.prior:g} pseudo rows" if w.prior else ""
        return f"{w.agg} of {w.of}{by} over the {w.days} days before the row's day{prior}"
    if f.function is not None:
        return f"{spec.module}.{f.function}(primary, tables)"
    return f"column {f.source_column}"


def _model_users(spec: DatasetSpec, tracking_uri: str | None) -> dict[str, list[str]]:
    """Feature -> registered versions trained on it (``v3 (champion)``), from each version's training run."""
    from mlflow import MlflowClient

    from include.mlops.training import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(uri, uri)
    users: dict[str, list[str]] = {}
    versions = sorted(client.search_model_versions(f"name='{spec.name}'"), key=lambda v: int(v.version))
    aliases: dict[str, list[str]] = {}
    if versions:  # search results carry no aliases: the registered model has them
        for alias, version in client.get_registered_model(spec.name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
    for mv in versions:
        run = client.get_run(mv.run_id)
        names = run.data.params.get("features")
        parent = run.data.tags.get("mlflow.parentRunId")
        if names is None and parent:
            names = client.get_run(parent).data.params.get("features")
        named = sorted(aliases.get(str(mv.version), []))
        label = f"v{mv.version}" + (f" ({', '.join(named)})" if named else "")
        for n in (names or "").split(","):
            users.setdefault(n, []).append(label)
    return users


def catalog(spec: DatasetSpec, lake: Lake, tracking_uri: str | None = None) -> dict[str, Any]:
    """Every feature of ``spec`` with its definition, the registered versions that use it, and the freshness of
    the online store (last materialized day) and of the lake's feature tables. JSON-serialisable."""
    record = materialized_days(spec, lake)
    days = sorted(record.get("days", {}))
    last = record["days"][days[-1]] if days else None
    try:
        users, registry_error = _model_users(spec, tracking_uri), None
    except Exception as exc:  # the catalog still lists the features with the registry down
        users, registry_error = {}, f"{type(exc).__name__}: {exc}"
    tables = lake.partitions("features", spec.name)
    return {
        "dataset": spec.name,
        "entity_keys": spec.entity_keys,
        "request_fields": spec.online.request_fields,
        "online": {
            "store": describe_store(spec),
            "view": features_view(spec),
            "days": len(days),
            "first_day": days[0] if days else None,
            "last_day": days[-1] if days else None,
            "last_materialized_at": last["at"] if last else None,
            "last_feature_version": last["feature_version"] if last else None,
        },
        "offline": {"feature_tables": len(tables), "uri": lake.uri(lake.path("features", spec.name))},
        "registry_error": registry_error,
        "features": [
            {
                "name": f.name,
                "dtype": f.dtype,
                "kind": f.kind,
                "description": f.description,
                "definition": definition(spec, f.name),
                "reads": spec.feature_inputs(f),
                "used_by": users.get(f.name, []),
            }
            for f in spec.features
        ],
    }


def format_catalog(cat: Mapping[str, Any]) -> str:
    """The catalog as text for a terminal."""
    o = cat["online"]
    fresh = (
        f"days {o['first_day']} .. {o['last_day']} ({o['days']}), last written {o['last_materialized_at']}"
        if o["days"]
        else "nothing materialized yet"
    )
    lines = [
        f"{cat['dataset']}: {len(cat['features'])} features; entity keys {', '.join(cat['entity_keys'])}; "
        f"request fields {', '.join(cat['request_fields']) or 'none'}",
        f"online store: {o['store']}, view {o['view']}: {fresh}",
        f"offline: {cat['offline']['feature_tables']} feature table version(s) at {cat['offline']['uri']}",
    ]
    if cat["registry_error"]:
        lines.append(f"model registry not reachable: {cat['registry_error']}")
    rows = [("feature", "dtype", "kind", "definition", "used by")]
    rows += [
        (f["name"], f["dtype"], f["kind"], f["definition"], ", ".join(f["used_by"]) or "-") for f in cat["features"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows]
    return "\n".join(lines)
