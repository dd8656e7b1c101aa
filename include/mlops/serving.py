"""Online serving: a dataset's champion behind an MLflow-compatible HTTP API, with a fast single-row path.

    python -m include.mlops.serving --dataset flights [--alias champion] [--host 127.0.0.1] [--port 5001]

``POST /invocations`` takes MLflow's ``dataframe_split`` or ``dataframe_records`` JSON and answers
``{"predictions": [probability, ...], "labels": [0/1 at the version's threshold, ...], "model_version": "3"}``.
``GET /ping`` answers 200 once a model is loaded, ``GET /health`` names the model, version and when it was loaded,
``GET /version`` the server's library versions. Bad input gets a JSON error naming the problem: 400 for a body
that is empty, not JSON, nested too deeply or in another format, 408 for a body not received within
``body_timeout``, 413 for a body over the size limit (counted while it streams in: a chunked body is cut off at the
limit, never buffered whole), 422 for no rows, too many rows, missing feature columns, values of the wrong type,
non-finite numbers (``NaN``, ``Infinity``, ``1e999``) or numbers beyond +-2**53. No request gets a traceback.

Hardening (docs/security.md). With a token (``MLOPS_SERVING_TOKEN``, never a command-line flag: it would show in
the process list) every route but ``/ping`` needs ``Authorization: Bearer <token>`` (401 otherwise); without one
the server refuses to bind anything but loopback unless started with ``--insecure-no-auth``. A connection must
finish its request headers within ``header_timeout`` seconds (:class:`HeaderTimeoutProtocol`: slow-header
connections are closed) and its body within ``body_timeout``; at most ``max_connections`` are served at once
(uvicorn's ``limit_concurrency``: 503 beyond). Bodies over :data:`INLINE_BYTES` are parsed and scored on a worker
thread, so a large request does not hold up the event loop.

The model is :func:`scoring.load_model`'s: the native scikit-learn pipeline, the version's ``threshold`` tag, the
signature's columns. A background task resolves the alias every ``reload_seconds`` and swaps in a new version
(promotion or rollback) in one assignment; a request runs on the version it started with.

The fast path. scikit-learn spends ~10 ms on a single-row ``predict_proba`` of the HistGradientBoosting pipeline,
nearly all of it overhead: the DataFrame, ColumnTransformer's column selection and input checks (~4.6 ms), the
classifier's input check (~1.7 ms), one Python call and OpenMP region per tree (~1 ms for 150 trees). For the
pipeline ``training.make_pipeline`` builds (a ColumnTransformer of OrdinalEncoder + passthrough columns, then the
classifier), the server encodes categories with dict lookups derived from the fitted encoder itself, so unknown,
missing and infrequent categories get exactly the encoder's codes, and walks all trees at once in numpy with the
comparisons of scikit-learn's predictor, summing the leaf values in the same order. The probabilities are
bit-identical to ``pipeline.predict_proba``: checked at load time on probe rows (a mismatch switches the fast path
off) and in tests/unit/test_serving.py. Any other pipeline is served by :func:`scoring.predict` on a DataFrame.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import platform
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from include.mlops import scoring
from include.mlops.config import DatasetSpec, load_spec
from include.mlops.training import default_tracking_uri

log = logging.getLogger("mlops.serving")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
DEFAULT_RELOAD_SECONDS = 30.0
DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY_MB = 32.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 1000
INLINE_ROWS = 64  # requests up to this many rows run on the event loop: a thread hop costs more than they do
INLINE_BYTES = 32 * 1024  # bodies up to this size are parsed on the event loop (64 rows are ~20 KiB)
MAX_MAGNITUDE = 2.0**53  # numbers beyond this are refused: float64 no longer holds every integer there
TREE_ROWS = 16  # up to this many rows the trees are walked in numpy; more go to the classifier's own predict
_ENV = "MLOPS_SERVING_"  # the settings travel to uvicorn's worker processes as environment variables


class RequestError(ValueError):
    """A request the server cannot score; the message names the problem, ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 422, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Settings:
    """What one server serves and how."""

    dataset: str
    alias: str = scoring.CHAMPION
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI (training.default_tracking_uri)
    reload_seconds: float = DEFAULT_RELOAD_SECONDS  # 0: never re-check the alias
    max_rows: int = DEFAULT_MAX_ROWS
    max_body_mb: float = DEFAULT_MAX_BODY_MB
    token: str | None = field(default=None, repr=False)  # None: no authentication (loopback only, see main)
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def to_env(self) -> dict[str, str]:
        return {f"{_ENV}{k.upper()}": str(v) for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        def get(name: str, cast: Any, default: Any) -> Any:
            raw = env.get(f"{_ENV}{name.upper()}")
            return default if raw in (None, "") else cast(raw)

        if not env.get(f"{_ENV}DATASET"):
            raise RuntimeError(f"{_ENV}DATASET is not set: start the server with python -m include.mlops.serving")
        return cls(
            dataset=env[f"{_ENV}DATASET"],
            alias=get("alias", str, scoring.CHAMPION),
            tracking_uri=get("tracking_uri", str, None),
            reload_seconds=get("reload_seconds", float, DEFAULT_RELOAD_SECONDS),
            max_rows=get("max_rows", int, DEFAULT_MAX_ROWS),
            max_body_mb=get("max_body_mb", float, DEFAULT_MAX_BODY_MB),
            token=get("token", str, None),
            header_timeout=get("header_timeout", float, DEFAULT_HEADER_TIMEOUT),
            body_timeout=get("body_timeout", float, DEFAULT_BODY_TIMEOUT),
            max_connections=get("max_connections", int, DEFAULT_MAX_CONNECTIONS),
        )


# -- requests -------------------------------------------------------------------------------------------
def parse_request(
    body: bytes,
    features: Sequence[str],
    kinds: Mapping[str, str],
    max_rows: int,
    lookup: Callable[[Any], list[list[Any]] | None] | None = None,
) -> list[list[Any]]:
    """The values of each of ``features`` (one list per feature, in order) in an MLflow ``dataframe_split`` or
    ``dataframe_records`` JSON body, type-checked against ``kinds``. Raises RequestError naming the problem.
    ``lookup`` (the server's online-store lookup) answers a payload it takes, or None to leave it to the above."""
    payload = load_payload(body)
    if lookup is not None and (looked_up := lookup(payload)) is not None:
        return looked_up
    return request_columns(payload, features, kinds, max_rows)


def load_payload(body: bytes) -> Any:
    """The request body's JSON; RequestError 400 for an empty, non-JSON or too deeply nested body."""
    if not body.strip():
        raise RequestError("empty request body: send JSON with 'dataframe_split' or 'dataframe_records'", 400)
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except RequestError:
        raise
    except RecursionError:
        raise RequestError("the request body is nested too deeply", 400) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not JSON: {exc}", 400) from None
    return payload


def payload_columns(payload: Any) -> set[str]:
    """The column names a payload carries (a split's columns, the first record's keys; empty when neither)."""
    if isinstance(payload, dict) and isinstance(payload.get("dataframe_split"), dict):
        names = payload["dataframe_split"].get("columns")
        return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()
    records = payload.get("dataframe_records") if isinstance(payload, dict) else None
    return set(records[0]) if isinstance(records, list) and records and isinstance(records[0], dict) else set()


def request_columns(payload: Any, features: Sequence[str], kinds: Mapping[str, str], max_rows: int) -> list[list[Any]]:
    """:func:`parse_request` on a decoded payload."""
    if isinstance(payload, dict) and "dataframe_split" in payload:
        columns = _split_columns(payload["dataframe_split"], features, max_rows)
    elif isinstance(payload, dict) and "dataframe_records" in payload:
        columns = _record_columns(payload["dataframe_records"], features, max_rows)
    else:
        keys = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise RequestError(f"expected a JSON object with 'dataframe_split' or 'dataframe_records', got {keys}", 400)
    bad = [problem for name, values in zip(features, columns, strict=True) if (problem := _check(name, kinds, values))]
    if bad:
        raise RequestError("wrong value types: " + "; ".join(bad))
    return columns


def _refuse_constant(name: str) -> Any:
    raise RequestError(f"the request has a non-finite number {name}: send null for a missing value")


def _check_rows(n: int, max_rows: int) -> None:
    if n == 0:
        raise RequestError("the request has no rows")
    if n > max_rows:
        raise RequestError(f"the request has {n} rows, more than the limit of {max_rows} per request")


def _split_columns(split: Any, features: Sequence[str], max_rows: int) -> list[list[Any]]:
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise RequestError("'dataframe_split' must be an object with 'columns' and 'data' (a list of rows)", 400)
    data, names = split["data"], split.get("columns")
    _check_rows(len(data), max_rows)
    if not isinstance(names, list):
        raise RequestError("'dataframe_split' has no 'columns' list: name the column of each value", 400)
    position = {name: i for i, name in enumerate(names) if isinstance(name, str)}
    missing = [f for f in features if f not in position]
    if missing:
        raise RequestError(f"missing feature columns {missing}")
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(names):
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise RequestError(f"row {i} of 'dataframe_split' has {got} for {len(names)} columns")
    return [[row[position[f]] for row in data] for f in features]


def _record_columns(records: Any, features: Sequence[str], max_rows: int) -> list[list[Any]]:
    if not isinstance(records, list):
        raise RequestError("'dataframe_records' must be a list of objects, one per row", 400)
    _check_rows(len(records), max_rows)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise RequestError(f"record {i} of 'dataframe_records' is a {type(record).__name__}, not an object")
        missing = [f for f in features if f not in record]
        if missing:
            raise RequestError(f"missing feature columns {missing}" + (f" in record {i}" if len(records) > 1 else ""))
    return [[record[f] for record in records] for f in features]


def _check(name: str, kinds: Mapping[str, str], values: list[Any]) -> str | None:
    """None when every value fits the feature's kind (JSON null and NaN are missing values), else the problem;
    NaN among category values becomes None in place, as pandas and the encoder treat both as missing. Numbers
    must be finite and within +-2**53 (``1e999`` parses as infinity, ``10**30`` overflows int64)."""
    kind = kinds.get(name, "any")
    for i, v in enumerate(values):
        t = type(v)
        if v is None or (t is float and v != v):  # v != v: NaN
            if kind == "category":
                values[i] = None
            continue
        if (t is float or t is int) and not -MAX_MAGNITUDE <= v <= MAX_MAGNITUDE:  # also infinity, exact for ints
            return f"column {name!r} row {i} has {json.dumps(v)[:40]}, not a finite number within +-2**53"
        if kind == "category":
            ok, want = t is str, "a string or null"
        elif kind == "int":
            ok, want = t is int or (t is float and v.is_integer()), "an integer or null"
        elif kind == "float":
            ok, want = t is int or t is float, "a number or null"
        else:
            ok, want = t in (str, int, float), "a string, number or null"
        if not ok:
            return f"column {name!r} expects {want}, row {i} has {t.__name__} {json.dumps(v)[:40]}"
    return None


def to_frame(features: Sequence[str], kinds: Mapping[str, str], columns: list[list[Any]]) -> pd.DataFrame:
    """The checked request columns as the feature frame training saw: int features int64 (float64 with missing
    values, as pandas makes them), float features float64, categories object with None for missing."""
    data = {}
    for name, values in zip(features, columns, strict=True):
        kind = kinds.get(name, "any")
        if kind in ("int", "float"):
            has_missing = any(v is None for v in values)
            dtype = "int64" if kind == "int" and not has_missing else "float64"
            data[name] = np.array([np.nan if v is None else v for v in values], dtype=dtype)
        elif kind == "category":
            data[name] = np.array(values, dtype=object)
        else:
            data[name] = pd.Series(values)
    return pd.DataFrame(data)


def request_body(frame: pd.DataFrame, orient: str = "split") -> bytes:
    """An MLflow ``dataframe_split`` (or ``dataframe_records``) JSON body holding ``frame``'s values exactly:
    pandas' ``to_json`` rounds floats to 10 significant digits, which can move a value across a tree threshold."""
    columns = [str(c) for c in frame.columns]
    values = frame.astype(object).where(frame.notna(), None)
    data = [[v.item() if isinstance(v, np.generic) else v for v in row] for row in values.itertuples(index=False)]
    if orient == "records":
        return json.dumps({"dataframe_records": [dict(zip(columns, row, strict=True)) for row in data]}).encode()
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


def feature_kinds(spec: DatasetSpec) -> dict[str, str]:
    """Feature name -> ``int`` / ``float`` / ``category``, from the spec."""
    return {f.name: f.dtype for f in spec.features}


# -- the fast path ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Column:
    source: int  # index of the model feature it reads
    codes: dict[Any, float] | None  # category -> the encoder's code; None: a passthrough number
    missing: float = np.nan  # the code of a missing category
    unknown: float = np.nan  # the code of a category the encoder did not see


class _Trees:
    """A fitted binary HistGradientBoostingClassifier's trees as flat arrays, walked for a few rows at once.

    Each node's direction is computed as scikit-learn's ``_predict_one_from_raw_data`` does: NaN follows
    ``missing_go_to_left``; a categorical split sends a code in the node's left bitset left, another known code
    right, a negative or unknown code the missing way; a numeric split goes left when ``value <= threshold``.
    The leaf values are added to the baseline one tree after another, in the classifier's order (``cumsum`` is
    sequential), and the loss's own ``predict_proba`` makes them probabilities.
    """

    def __init__(self, clf: Any) -> None:
        known, f_idx_map = clf._bin_mapper.make_known_categories_bitsets()
        trees = [p for iteration in clf._predictors for p in iteration]
        sizes = np.array([len(p.nodes) for p in trees])
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        nodes = np.concatenate([p.nodes for p in trees])
        offset = np.repeat(first, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        index = np.arange(len(nodes))
        self.roots = first
        self.depth = max(p.get_max_depth() for p in trees)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"]
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.left = np.where(leaf, index, nodes["left"].astype(np.intp) + offset)  # a leaf points to itself
        self.right = np.where(leaf, index, nodes["right"].astype(np.intp) + offset)
        self.value = nodes["value"]
        self.split = ~leaf
        self.cat = np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf)
        bitsets = np.concatenate([p.raw_left_cat_bitsets for p in trees]).reshape(-1, known.shape[1])
        bits_per_tree = [len(p.raw_left_cat_bitsets) for p in trees]
        bits_first = np.repeat(np.concatenate([[0], np.cumsum(bits_per_tree)[:-1]]), sizes)
        self.cat_left_bits = bitsets[nodes["bitset_idx"][self.cat].astype(np.intp) + bits_first[self.cat]]
        self.cat_known_bits = known[f_idx_map[self.feature[self.cat]]]
        self.baseline = 0.0 + float(clf._baseline_prediction.ravel()[0])  # raw = zeros + baseline, as sklearn
        self.loss = clf._loss

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive class for each row of ``x`` (the classifier's input, float64)."""
        v = x[:, self.feature]
        go_left = np.where(np.isnan(v), self.missing_left, v <= self.threshold)
        if len(self.cat):
            c = v[:, self.cat]
            known_code = c >= 0  # False for NaN too, which already went the missing way
            code = np.where(known_code, c, 0).astype(np.uint8)
            word, bit = code >> 5, (code & 31).astype(np.uint32)
            cols = np.arange(len(self.cat))
            in_left = (self.cat_left_bits[cols, word] >> bit) & 1
            in_known = (self.cat_known_bits[cols, word] >> bit) & 1
            missing_way = self.missing_left[self.cat]
            go_left[:, self.cat] = np.where(
                known_code & (in_left == 1), True, np.where(known_code & (in_known == 1), False, missing_way)
            )
        following = np.where(go_left, self.left, self.right)
        node = np.broadcast_to(self.roots, (len(x), len(self.roots)))
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth):
            node = following[rows, node]
        raw = np.cumsum(np.hstack([np.full((len(x), 1), self.baseline), self.value[node]]), axis=1)[:, -1:]
        return self.loss.predict_proba(raw)[:, 1]


class FastPath:
    """``Pipeline([ColumnTransformer(OrdinalEncoder, passthrough), classifier])`` without pandas: the encoder's
    codes by dict lookup, the classifier on a float64 array, or for a few rows its trees in numpy."""

    def __init__(self, columns: list[_Column], classifier: Any, threads: Any) -> None:
        self.columns = columns  # the classifier's input, column by column
        self.classifier = classifier
        self.threads = threads
        self.trees, self.tree_columns = None, None
        if _is_binary_hgb(classifier):
            self.tree_columns = _tree_columns(classifier, columns)
            self.trees = _Trees(classifier) if self.tree_columns is not None else None

    @staticmethod
    def encode(columns: list[_Column], values: list[list[Any]]) -> np.ndarray:
        """A float64 array of ``columns`` for checked request values (one list per model feature)."""
        out = []
        for c in columns:
            vals = values[c.source]
            if c.codes is None:
                out.append([np.nan if v is None else v for v in vals])
            else:
                out.append([c.missing if v is None else c.codes.get(v, c.unknown) for v in vals])
        return np.ascontiguousarray(np.array(out, dtype=np.float64).T)  # row-major, as ColumnTransformer's

    def predict_proba(self, values: list[list[Any]]) -> np.ndarray:
        """Probability of the positive class per row of checked request values."""
        if self.trees is not None and len(values[0]) <= TREE_ROWS:
            return self.trees.predict_proba(self.encode(self.tree_columns, values))
        x = self.encode(self.columns, values)
        with self.threads.limit(limits=1):
            return np.asarray(self.classifier.predict_proba(x))[:, 1]


def _is_binary_hgb(clf: Any) -> bool:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return isinstance(clf, HistGradientBoostingClassifier) and clf.n_trees_per_iteration_ == 1


def _tree_columns(clf: Any, columns: list[_Column]) -> list[_Column] | None:
    """The trees' input column by column: HistGradientBoosting re-codes its categorical input columns with an
    OrdinalEncoder of its own and puts them first, so a category's tree code is that encoder's code of our
    encoder's code, computed here by the fitted encoders for every category (and for missing and unknown)."""
    prep = getattr(clf, "_preprocessor", None)
    if prep is None:
        return columns
    names = [name for name, _, _ in prep.transformers_]
    if names[:2] != ["encoder", "numerical"] or prep.output_indices_["encoder"].start != 0:
        return None
    inner = prep.named_transformers_["encoder"]
    categorical = np.flatnonzero(clf.is_categorical_)
    out = []
    for e, k in enumerate(categorical):
        outer = columns[k]
        if outer.codes is None:
            return None
        keys = list(outer.codes)
        codes = [*outer.codes.values(), outer.missing, outer.unknown]
        probe = np.tile([cats[0] for cats in inner.categories_], (len(codes), 1)).astype(np.float64)
        probe[:, e] = codes  # column e takes every code of ours; the others hold one known code
        tree_codes = np.asarray(inner.transform(probe), dtype=np.float64)[:, e]
        if np.any(tree_codes[~np.isnan(tree_codes)] > 255):
            return None
        out.append(
            _Column(outer.source, dict(zip(keys, tree_codes.tolist(), strict=False)), *map(float, tree_codes[-2:]))
        )
    return out + [columns[k] for k in np.flatnonzero(~clf.is_categorical_)]


def build_fast_path(pipeline: Any, features: Sequence[str]) -> FastPath | None:
    """The fast path for a fitted pipeline of the known shape, else None (served through pandas)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    if not (isinstance(pipeline, Pipeline) and len(pipeline.steps) == 2):
        return None
    prep, clf = pipeline[0], pipeline[-1]
    if not isinstance(prep, ColumnTransformer):
        return None
    if not isinstance(clf, HistGradientBoostingClassifier | LogisticRegression):
        return None
    if len(getattr(clf, "classes_", ())) != 2 or prep.transformer_weights or prep.sparse_output_:
        return None
    if getattr(prep, "_sklearn_output_config", {}).get("transform") not in (None, "default"):
        return None
    source = {name: i for i, name in enumerate(features)}
    columns: list[_Column] = []
    for _, transformer, cols in prep.transformers_:
        if transformer == "drop" or (isinstance(cols, list | np.ndarray) and len(cols) == 0):
            continue
        if not isinstance(cols, list | np.ndarray) or not all(isinstance(c, str) and c in source for c in cols):
            return None
        cols = list(cols)
        if isinstance(transformer, FunctionTransformer) and transformer.func is None and not transformer.validate:
            columns += [_Column(source[c], None) for c in cols]  # passthrough
        elif isinstance(transformer, OrdinalEncoder) and transformer.handle_unknown == "use_encoded_value":
            coded = _ordinal_codes(transformer, cols)
            if coded is None:
                return None
            columns += [_Column(source[c], *codes) for c, codes in zip(cols, coded, strict=True)]
        else:
            return None
    if len(columns) != clf.n_features_in_:
        return None
    return FastPath(columns, clf, scoring._threadpools())


def _ordinal_codes(encoder: Any, cols: list[str]) -> list[tuple[dict[Any, float], float, float]] | None:
    """Per column: (category -> code, missing code, unknown code), each code computed by the fitted encoder
    itself, so infrequent-category grouping and the unknown/missing settings are the encoder's. None when a
    column's categories are not strings or a code does not fit the trees' uint8."""
    if list(getattr(encoder, "feature_names_in_", [])) != cols:
        return None
    known = [[c for c in cats if isinstance(c, str)] for cats in encoder.categories_]
    if any(c is not None and c == c and not isinstance(c, str) for cats in encoder.categories_ for c in cats):
        return None  # categories other than strings and missing (None, NaN: c != c)
    out = []
    for j, col in enumerate(cols):
        unseen = "\x00unseen"
        while unseen in known[j]:
            unseen += "\x00"
        probe = [*known[j], None, unseen]
        # Column j takes every category, missing and an unseen value; the others hold one fixed category.
        frame = pd.DataFrame(
            {c: probe if c == col else [next(iter(known[k]), None)] * len(probe) for k, c in enumerate(cols)}
        )
        codes = np.asarray(encoder.transform(frame), dtype=np.float64)[:, j]
        if np.any(codes[~np.isnan(codes)] > 255):
            return None
        out.append((dict(zip(known[j], codes.tolist(), strict=False)), float(codes[-2]), float(codes[-1])))
    return out


# -- the served model ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServedModel:
    """One loaded version and how to predict with it."""

    model: scoring.ScoringModel
    kinds: dict[str, str]
    fast: FastPath | None
    loaded_at: str

    def predict_proba(self, columns: list[list[Any]]) -> np.ndarray:
        """Probability of the positive class per row of checked request columns (one list per model feature)."""
        if self.fast is not None:
            return self.fast.predict_proba(columns)
        return scoring.predict(self.model, to_frame(self.model.features, self.kinds, columns))

    def answer(self, columns: list[list[Any]]) -> dict[str, Any]:
        p = self.predict_proba(columns)
        return {
            "predictions": p.tolist(),
            "labels": (p >= self.model.threshold).astype(int).tolist(),
            "model_version": self.model.version,
        }


def load_version(spec: DatasetSpec, model_uri: str, tracking_uri: str) -> ServedModel:
    """``model_uri`` loaded by :func:`scoring.load_model`, with its fast path when it has the known shape and
    agrees bit for bit with the pipeline on probe rows."""
    scoring.clear_cache()  # the server holds its model itself: the cache would keep every version ever served
    model = scoring.load_model(spec, model_uri, tracking_uri=tracking_uri)
    scoring.clear_cache()
    kinds = feature_kinds(spec)
    fast = build_fast_path(model.model, model.features)
    if fast is not None and (problem := _disagreement(fast, model, kinds)):
        log.warning("%s: fast path switched off, %s", model.uri, problem)
        fast = None
    return ServedModel(model=model, kinds=kinds, fast=fast, loaded_at=_now())


def probe_columns(fast: FastPath, features: Sequence[str], kinds: Mapping[str, str], rows: int = 256) -> list[list]:
    """Request columns that exercise the fast path: every category, missing and unseen ones, numbers at and
    beside every tree threshold, missing numbers."""
    rng = np.random.default_rng(0)
    columns: list[list[Any]] = [[None] * rows for _ in features]
    trees = fast.trees
    for j, c in enumerate(fast.tree_columns if trees is not None else fast.columns):
        if c.codes is not None:
            pool: list[Any] = [*c.codes, None, "\x00unseen"]
        else:
            split = trees.threshold[trees.split & (trees.feature == j)] if trees is not None else np.array([0.0])
            split = np.unique(split[np.isfinite(split)])[:200]
            pool = [*split, *np.nextafter(split, np.inf), *np.nextafter(split, -np.inf), -1.0, 1.0]
            if kinds.get(features[c.source]) == "int":  # a request sends integers for these
                pool = sorted({int(np.floor(v)) + k for v in pool for k in (0, 1)})
            pool = [*pool, None]
        columns[c.source] = [pool[i] for i in rng.integers(len(pool), size=rows)]
    return columns


def _disagreement(fast: FastPath, model: scoring.ScoringModel, kinds: Mapping[str, str]) -> str | None:
    columns = probe_columns(fast, model.features, kinds)
    expected = scoring.predict(model, to_frame(model.features, kinds, columns))
    n = len(expected)
    batched = fast.predict_proba(columns)
    few = np.concatenate([fast.predict_proba([c[i : i + TREE_ROWS] for c in columns]) for i in range(0, n, TREE_ROWS)])
    for name, got in (("batch", batched), ("few rows", few)):
        if not np.array_equal(got, expected):
            return f"{name}: {int(np.sum(got != expected))} of {n} probe rows differ from pipeline.predict_proba"
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- the server ------------------------------------------------------------------------------------------
@dataclass
class Server:
    """The state of one serving process: the served model (replaced whole on reload) and the alias checks."""

    settings: Settings
    spec: DatasetSpec
    tracking_uri: str
    model: ServedModel | None = None
    last_check: str | None = None
    last_error: str | None = None
    _client: Any = field(default=None, repr=False)
    _online: Any = field(default=None, repr=False)

    def keyed(self, payload: Any, features: Sequence[str]) -> bool:
        """Whether a request asks for an online lookup: it lacks model features and carries every entity key."""
        names = payload_columns(payload)
        return not names.issuperset(features) and names.issuperset(self.spec.entity_keys)

    def parse(self, body: bytes, served: ServedModel) -> list[list[Any]]:
        """The model's feature columns for a request: sent in full, or looked up by the entity keys (and checked
        against the request fields) in the online store (feature_store.py). RequestError names the problem:
        404 ENTITY_NOT_FOUND, 409 STALE_FEATURES, 503 ONLINE_STORE_UNAVAILABLE for the lookup."""
        features = served.model.features

        def lookup(payload: Any) -> list[list[Any]] | None:
            return self.look_up(payload, features) if self.keyed(payload, features) else None

        return parse_request(body, features, served.kinds, self.settings.max_rows, lookup)

    def look_up(self, payload: Any, features: Sequence[str]) -> list[list[Any]]:
        """``features`` of a keyed payload's rows, from the online store."""
        from include.mlops import feature_store as FS

        try:
            if self._online is None:
                self._online = FS.OnlineLookup.open(self.spec)
            lookup = self._online
            sent = request_columns(payload, lookup.fields, lookup.kinds(), self.settings.max_rows)
            return lookup.columns(features, dict(zip(lookup.fields, sent, strict=True)))
        except FS.EntityNotFound as exc:
            raise RequestError(str(exc), 404, "ENTITY_NOT_FOUND") from None
        except FS.StaleFeatures as exc:
            raise RequestError(str(exc), 409, "STALE_FEATURES") from None
        except FS.OnlineStoreError as exc:
            raise RequestError(str(exc), 503, "ONLINE_STORE_UNAVAILABLE") from None

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.spec.name}@{self.settings.alias}"

    def refresh(self) -> bool:
        """Resolve the alias and, when it names another version than the served one, load that version and swap
        it in. True when swapped. A failure (no such alias, registry down) keeps the served version; /health
        reports it."""
        try:
            if self._client is None:
                self._client = scoring._client(self.tracking_uri)
            name, version, _ = scoring._resolve(self._client, self.spec, self.alias_uri)
            swapped = self.model is None or self.model.model.version != version
            if swapped:
                t0 = time.perf_counter()
                new = load_version(self.spec, f"models:/{name}/{version}", self.tracking_uri)
                old, self.model = self.model, new
                log.info(
                    "%s: serving version %s (was %s), loaded in %.1f s, fast path %s",
                    self.alias_uri,
                    version,
                    old.model.version if old else None,
                    time.perf_counter() - t0,
                    "on" if new.fast else "off",
                )
            self.last_error = None
            return swapped
        except Exception as exc:  # keep serving what is loaded, say why in /health, try again next time
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: alias check failed, still serving %s: %s", self.alias_uri, self._version(), exc)
            return False
        finally:
            self.last_check = _now()

    def _version(self) -> str | None:
        return self.model.model.version if self.model else None

    async def watch(self) -> None:
        """Re-check the alias every ``reload_seconds``."""
        while True:
            await asyncio.sleep(self.settings.reload_seconds)
            await run_in_threadpool(self.refresh)

    def health(self) -> dict[str, Any]:
        m = self.model
        return {
            "status": "ok" if m else "no_model",
            "dataset": self.spec.name,
            "alias": self.settings.alias,
            "model_name": m.model.name if m else None,
            "model_version": m.model.version if m else None,
            "model_uri": m.model.uri if m else None,
            "run_id": m.model.run_id if m else None,
            "threshold": m.model.threshold if m else None,
            "features": m.model.features if m else None,
            "fast_path": bool(m and m.fast),
            "loaded_at": m.loaded_at if m else None,
            "last_check": self.last_check,
            "last_error": self.last_error,
            "reload_seconds": self.settings.reload_seconds,
        }


def _error(
    status: int, message: str, headers: Mapping[str, str] | None = None, code: str | None = None
) -> JSONResponse:
    codes = {
        400: "BAD_REQUEST",
        401: "UNAUTHORIZED",
        408: "REQUEST_TIMEOUT",
        413: "REQUEST_TOO_LARGE",
        422: "INVALID_INPUT",
        503: "NO_MODEL",
    }
    body = {"error_code": code or codes.get(status, "INTERNAL_ERROR"), "message": message}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


_CLOSE = {"Connection": "close"}  # after a body we stopped reading: the rest is never read, the connection goes


async def read_body(request: Request, max_body: int, timeout: float) -> bytes:
    """The request body, counted while it streams in: RequestError 413 as soon as it passes ``max_body`` bytes
    (a declared Content-Length over the limit before any byte is read), 408 when it has not all arrived within
    ``timeout`` seconds."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_body:
        raise RequestError(f"the request body has {int(length)} bytes, more than the limit of {max_body} bytes", 413)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body:  # a chunked body has no Content-Length to refuse it by
                    raise RequestError(f"the request body has more than the limit of {max_body} bytes", 413)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(f"the request body did not arrive within {timeout:g} s", 408) from None
    return b"".join(chunks)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for request headers: a connection that has not sent a whole
    request head within ``MLOPS_SERVING_HEADER_TIMEOUT`` seconds of connecting (or of its previous response) is
    closed. uvicorn alone keeps such a connection open for ever (its keep-alive timer is cancelled by any byte),
    so a few hundred slow clients would hold every connection slot."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        raw = os.environ.get(f"{_ENV}HEADER_TIMEOUT")
        self.header_timeout = float(raw) if raw else DEFAULT_HEADER_TIMEOUT
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # a pipelined request's head has arrived already
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def create_app(settings: Settings | None = None, spec: DatasetSpec | None = None) -> Starlette:
    """The ASGI app (settings from ``MLOPS_SERVING_*`` environment variables when not given, as in uvicorn's
    worker processes). The first alias check runs at startup; the server starts without a model if it fails."""
    settings = settings or Settings.from_env()
    spec = spec or load_spec(settings.dataset)
    server = Server(settings, spec, settings.tracking_uri or default_tracking_uri())
    max_body = int(settings.max_body_mb * 2**20)
    expected = f"Bearer {settings.token}".encode() if settings.token else None

    def denied(request: Request) -> Response | None:
        """401 unless the request carries the token (None: allowed)."""
        if expected is None:
            return None
        given = request.headers.get("authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        return _error(401, "send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})

    def score(body: bytes, served: ServedModel) -> dict[str, Any]:
        return served.answer(server.parse(body, served))

    async def invocations(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        served = server.model  # one version for the whole request, whatever a reload does meanwhile
        if served is None:
            return _error(503, f"no model loaded for {server.alias_uri}: {server.last_error}")
        try:
            body = await read_body(request, max_body, settings.body_timeout)
        except RequestError as exc:
            return _error(exc.status, str(exc), _CLOSE)
        try:
            if len(body) <= INLINE_BYTES:
                columns = server.parse(body, served)
                if len(columns[0]) <= INLINE_ROWS:
                    return JSONResponse(served.answer(columns))
                return JSONResponse(await run_in_threadpool(served.answer, columns))
            return JSONResponse(await run_in_threadpool(score, body, served))  # parsing too, off the event loop
        except RequestError as exc:
            return _error(exc.status, str(exc), code=exc.code)
        except Exception as exc:  # logged with its traceback here, answered without one
            log.exception("prediction failed")
            return _error(500, f"prediction failed: {type(exc).__name__}: {exc}")

    async def ping(request: Request) -> Response:  # open to all: a liveness probe learns only "loaded or not"
        if server.model is None:
            return _error(503, f"no model loaded for {server.alias_uri}: {server.last_error}")
        return Response("\n", media_type="text/plain")

    async def health(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        return JSONResponse(server.health(), status_code=200 if server.model else 503)

    async def version(request: Request) -> Response:
        if (refused := denied(request)) is not None:
            return refused
        from importlib.metadata import version as installed

        libraries = {name: installed(name) for name in ("mlflow", "scikit-learn", "numpy", "pandas", "starlette")}
        return JSONResponse({"python": platform.python_version(), **libraries, "model_version": server._version()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(server.refresh)
        watcher = asyncio.create_task(server.watch()) if settings.reload_seconds > 0 else None
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    app = Starlette(
        routes=[
            Route("/invocations", invocations, methods=["POST"]),
            Route("/ping", ping, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/version", version, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.server = server
    return app


def main(argv: list[str] | None = None) -> int:
    import copy

    import uvicorn

    p = argparse.ArgumentParser(prog="python -m include.mlops.serving", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="dataset name (= registered model name), e.g. flights")
    p.add_argument("--alias", default=scoring.CHAMPION, help="the registry alias to serve (default: champion)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI)")
    p.add_argument(
        "--reload-seconds",
        type=float,
        default=DEFAULT_RELOAD_SECONDS,
        help=f"how often to re-check the alias; 0: never (default {DEFAULT_RELOAD_SECONDS:g})",
    )
    p.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="rows per request at most")
    p.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB, help="request body size limit (MiB)")
    p.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT, help="seconds for request headers")
    p.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT, help="seconds for a request body")
    p.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, help="served at once (503 beyond)")
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help=f"serve without a token on a non-loopback address (the token comes from {_ENV}TOKEN only)",
    )
    p.add_argument("--access-log", action="store_true", help="log every request (off: it costs latency)")
    a = p.parse_args(argv)
    token = os.environ.get(f"{_ENV}TOKEN") or None
    if token is None and not a.insecure_no_auth and a.host not in ("127.0.0.1", "::1", "localhost"):
        p.error(f"{_ENV}TOKEN is not set, so refusing to serve {a.host} without authentication (or --insecure-no-auth)")
    settings = Settings(
        a.dataset,
        a.alias,
        a.tracking_uri,
        a.reload_seconds,
        a.max_rows,
        a.max_body_mb,
        token=token,
        header_timeout=a.header_timeout,
        body_timeout=a.body_timeout,
        max_connections=a.max_connections,
    )
    load_spec(settings.dataset)  # an unknown dataset fails here, with the spec error, not in every worker
    os.environ.update(settings.to_env())
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in the server log
    logging_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    logging_config["loggers"]["mlops"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(
        "include.mlops.serving:create_app",
        factory=True,
        host=a.host,
        port=a.port,
        workers=a.workers,
        access_log=a.access_log,
        log_config=logging_config,
        http="include.mlops.serving:HeaderTimeoutProtocol",
        limit_concurrency=settings.max_connections,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
