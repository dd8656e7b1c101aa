"""The lake: zones of date/version partitions under one root URL, reached through fsspec.

A partition exists only when its ``_manifest.json`` exists. Data files are content-addressed
(``<table>-<sha12>.parquet``) and written first; the manifest is written last and names the files it
covers. So a crash before the manifest leaves nothing visible (or the previous version intact, on a
rewrite), rewriting identical data is a no-op that yields an identical manifest, and readers never see a
half-written partition. The same code runs on a local folder, a shared volume or an object store.

The raw zone is append-only: its blobs are content-addressed too, no file is ever removed from it, and every
manifest is also kept under ``_manifests/<partition sha256>.json``, so the raw data behind any validated
partition (its manifest's ``raw_sha256``) stays readable whatever is uploaded for the day later.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

if TYPE_CHECKING:
    import pandas as pd

ZONES = ("raw", "validated", "quarantine", "features", "predictions", "rescored", "shadow", "reports", "reference")
APPEND_ONLY = ("raw",)  # zones whose files are never removed or replaced (see module docstring)
MANIFEST = "_manifest.json"
HISTORY = "_manifests"
_PARTITION = re.compile(r"^[a-z_]+=[A-Za-z0-9_.:-]+$")
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / ".data" / "lake"


class LakeError(RuntimeError):
    """A lake operation that cannot be done (bad zone or partition name, missing partition)."""


def data_root() -> str:
    """The lake's root URL: ``MLOPS_DATA_ROOT`` or the git-ignored ``.data/lake`` of the repo."""
    return os.environ.get("MLOPS_DATA_ROOT") or str(DEFAULT_ROOT)


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the partition
    rows: int
    sha256: str
    schema: dict[str, str]


@dataclass(frozen=True)
class PartitionManifest:
    """What a partition holds; written last, so its presence is what makes the partition exist."""

    zone: str
    dataset: str
    partition: str
    files: dict[str, FileEntry]
    source: str
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files.values())

    @property
    def sha256(self) -> str:
        """Content hash of the whole partition (the tables' hashes, in name order)."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(f"{name}:{self.files[name].sha256};".encode())
        return h.hexdigest()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows"] = self.rows
        d["sha256"] = self.sha256
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartitionManifest:
        files = {k: FileEntry(**v) for k, v in d["files"].items()}
        keep = {k: d[k] for k in ("zone", "dataset", "partition", "source", "run_id", "extra") if k in d}
        return cls(files=files, **keep)


def frame_to_parquet(df: pd.DataFrame) -> bytes:
    """Deterministic Parquet bytes for a frame (no index, no timestamps), so equal data hashes equal."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        # Mixed-type object columns (garbage input) cannot be typed: keep them as text, never drop them.
        obj = {c: "string" for c in df.columns if df[c].dtype == object}
        table = pa.Table.from_pandas(df.astype(obj), preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


class Lake:
    """Zones and partitions under one fsspec root (local path, ``file://``, ``s3://`` …)."""

    def __init__(self, root: str | None = None) -> None:
        self.url = root or data_root()
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")

    # -- paths ---------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        for p in parts:
            if not p or p in (".", "..") or "/../" in f"/{p}/":
                raise LakeError(f"invalid lake path component {p!r}")
        return "/".join([self.root, *parts])

    def partition_path(self, zone: str, dataset: str, partition: str) -> str:
        if zone not in ZONES:
            raise LakeError(f"unknown zone {zone!r}; zones are {ZONES}")
        if not _PARTITION.match(partition):
            raise LakeError(f"partition must look like key=value (e.g. date=2013-01-01), got {partition!r}")
        return self.path(zone, dataset, partition)

    def uri(self, path: str) -> str:
        """A URL for a path of this lake (what goes into XCom and Asset events)."""
        return self.fs.unstrip_protocol(path)

    # -- partitions ----------------------------------------------------------------------------
    def write_partition(
        self,
        zone: str,
        dataset: str,
        partition: str,
        tables: dict[str, pd.DataFrame],
        *,
        source: str,
        run_id: str | None = None,
        extra: dict[str, Any] | None = None,
        blobs: dict[str, bytes] | None = None,
    ) -> PartitionManifest:
        """Write ``tables`` (and opaque ``blobs``) as one partition: data first, manifest last.

        Blobs are kept byte for byte (an uploaded file as received, a reasons.json); files of an earlier
        version of the partition that the new manifest does not list are removed after it is written, except
        in an append-only zone, where blobs are content-addressed and every version stays (``HISTORY``).
        """
        base = self.partition_path(zone, dataset, partition)
        self.fs.makedirs(base, exist_ok=True)
        entries: dict[str, FileEntry] = {}
        for name, df in sorted(tables.items()):
            if not re.match(r"^[a-z][a-z0-9_]*$", name):
                raise LakeError(f"table name must be lower_snake_case, got {name!r}")
            data = frame_to_parquet(df)
            sha = hashlib.sha256(data).hexdigest()
            rel = f"{name}-{sha[:16]}.parquet"
            target = f"{base}/{rel}"
            if not self.fs.exists(target):  # content-addressed: same bytes, same name
                self._atomic_put(target, data)
            entries[name] = FileEntry(rel, len(df), sha, {c: str(t) for c, t in df.dtypes.items()})
        append_only = zone in APPEND_ONLY
        for name, data in sorted((blobs or {}).items()):
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", name) or name in entries:
                raise LakeError(f"invalid or duplicate blob name {name!r}")
            sha = hashlib.sha256(data).hexdigest()
            rel = name
            if append_only:  # upload.csv -> upload-<sha16>.csv: a later upload never replaces it
                stem, dot, ext = name.partition(".")
                rel = f"{stem}-{sha[:16]}{dot}{ext}"
            if not (append_only and self.fs.exists(f"{base}/{rel}")):
                self._atomic_put(f"{base}/{rel}", data)
            entries[name] = FileEntry(rel, 0, sha, {"blob": "bytes"})
        manifest = PartitionManifest(zone, dataset, partition, entries, source, run_id, extra or {})
        doc = json.dumps(manifest.as_dict(), indent=2, sort_keys=True).encode()
        if append_only:  # the version first: a manifest is never current without its archived copy
            self.fs.makedirs(f"{base}/{HISTORY}", exist_ok=True)
            self._atomic_put(f"{base}/{HISTORY}/{manifest.sha256}.json", doc)
        self._atomic_put(f"{base}/{MANIFEST}", doc)
        if not append_only:
            self._remove_unlisted(base, {e.path for e in entries.values()})
        return manifest

    def _atomic_put(self, target: str, data: bytes) -> None:
        # On object stores a single PUT is atomic; on a file system write a temp file, then rename.
        if isinstance(self.fs, LocalFileSystem):
            tmp = f"{target}.tmp-{uuid.uuid4().hex}"
            self.fs.pipe_file(tmp, data)
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, data)

    def _remove_unlisted(self, base: str, keep: set[str]) -> None:
        for p in self.fs.ls(base, detail=False):
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if name != MANIFEST and name not in keep and not name.startswith("_"):
                self.fs.rm(p, recursive=True)

    def manifest(self, zone: str, dataset: str, partition: str) -> PartitionManifest | None:
        """The partition's manifest, or None when the partition does not exist (yet)."""
        return self._read_manifest(f"{self.partition_path(zone, dataset, partition)}/{MANIFEST}")

    def _read_manifest(self, path: str) -> PartitionManifest | None:
        try:
            with self.fs.open(path, "rb") as f:
                return PartitionManifest.from_dict(json.load(f))
        except FileNotFoundError:
            return None

    def manifest_version(self, zone: str, dataset: str, partition: str, sha256: str) -> PartitionManifest | None:
        """An earlier (or the current) version of a partition of an append-only zone, by its content hash."""
        if zone not in APPEND_ONLY or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise LakeError(f"versions are kept in {APPEND_ONLY} only, by a 64-hex sha256; got {zone!r} {sha256!r}")
        return self._read_manifest(f"{self.partition_path(zone, dataset, partition)}/{HISTORY}/{sha256}.json")

    def read_version(self, manifest: PartitionManifest, table: str) -> pd.DataFrame:
        """One table of a partition version (a manifest from :meth:`manifest_version`)."""
        import pandas as pd

        base = self.partition_path(manifest.zone, manifest.dataset, manifest.partition)
        with self.fs.open(f"{base}/{manifest.files[table].path}", "rb") as f:
            return pd.read_parquet(f)

    def partitions(self, zone: str, dataset: str) -> list[str]:
        """Names of the partitions that exist (have a manifest), sorted."""
        base = self.path(zone, dataset)
        if not self.fs.exists(base):
            return []
        found = []
        for p in self.fs.ls(base, detail=False):
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if _PARTITION.match(name) and self.fs.exists(f"{p.rstrip('/')}/{MANIFEST}"):
                found.append(name)
        return sorted(found)

    def read_table(self, zone: str, dataset: str, partition: str, table: str) -> pd.DataFrame:
        """One table of an existing partition; LakeError if the partition or table is missing."""
        import pandas as pd

        m = self.manifest(zone, dataset, partition)
        if m is None:
            raise LakeError(f"partition {zone}/{dataset}/{partition} does not exist (no manifest)")
        if table not in m.files:
            raise LakeError(f"partition {zone}/{dataset}/{partition} has no table {table!r}: {sorted(m.files)}")
        with self.fs.open(f"{self.partition_path(zone, dataset, partition)}/{m.files[table].path}", "rb") as f:
            return pd.read_parquet(f)

    def read_blob(self, zone: str, dataset: str, partition: str, name: str) -> bytes:
        """A blob of an existing partition, byte for byte."""
        m = self.manifest(zone, dataset, partition)
        if m is None or name not in m.files:
            raise LakeError(f"partition {zone}/{dataset}/{partition} has no blob {name!r}")
        return self.fs.cat_file(f"{self.partition_path(zone, dataset, partition)}/{m.files[name].path}")

    def delete_partition(self, zone: str, dataset: str, partition: str) -> None:
        """Remove a partition: manifest first (it disappears at once), then its files (never in raw)."""
        if zone in APPEND_ONLY:
            raise LakeError(f"zone {zone!r} is append-only: its partitions are never deleted")
        base = self.partition_path(zone, dataset, partition)
        if self.fs.exists(f"{base}/{MANIFEST}"):
            self.fs.rm(f"{base}/{MANIFEST}")
        if self.fs.exists(base):
            self.fs.rm(base, recursive=True)

    # -- reports and other documents -------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write a document (report, JSON) at a path relative to the root; return its URI."""
        target = self.path(*rel.strip("/").split("/"))
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        self._atomic_put(target, data)
        return self.uri(target)

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, rel: str) -> Any:
        with self.fs.open(self.path(*rel.strip("/").split("/")), "rb") as f:
            return json.load(f)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(*rel.strip("/").split("/")))


def date_partition(day: Any) -> str:
    """``date=YYYY-MM-DD`` for a date, datetime or ISO string."""
    return f"date={str(day)[:10]}"
