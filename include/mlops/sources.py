"""The source system: seeding a SQL database from a spec's ``source.seed``, and interval-bounded extraction.

Any SQLAlchemy URL works (SQLite by default, the machine's Postgres by option). The DAGs reach it
through the Airflow connection named in the spec (``source.connection_id``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from include.mlops.config import DatasetSpec

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_SOURCE_DB = Path(__file__).resolve().parents[2] / ".data" / "source.db"
REPO = Path(__file__).resolve().parents[2]


class SourceError(RuntimeError):
    """The source could not be read (bad URL, missing table, failing query)."""


def default_source_url(dataset: str | None = None) -> str:
    """The embedded source database of ``dataset``: ``MLOPS_SOURCE_URL_<DATASET>`` if set, else the shared
    ``MLOPS_SOURCE_URL``, else ``.data/source.db``. (DAGs never read this: they use the spec's connection.)"""
    own = os.environ.get(f"MLOPS_SOURCE_URL_{dataset.upper()}") if dataset else None
    return own or os.environ.get("MLOPS_SOURCE_URL") or f"sqlite:///{DEFAULT_SOURCE_DB}"


def load_seed_tables(spec: DatasetSpec) -> dict[str, pd.DataFrame]:
    """The source tables the spec's ``source.seed`` names: files, files a package ships, or a loader."""
    import importlib
    import importlib.util

    import pandas as pd

    seed = spec.source.seed
    if seed is None:
        raise SourceError(f"spec {spec.name!r} has no source.seed: its source is filled by its own system")
    if seed.loader:
        module, _, func = seed.loader.partition(":")
        try:
            fn = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise SourceError(f"{spec.name}: source.seed.loader {seed.loader!r} cannot be loaded: {exc}") from exc
        tables = dict(fn())
    else:
        paths: dict[str, Path] = {}
        for table, ref in (seed.files or {}).items():
            path = Path(ref)
            paths[table] = path if path.is_absolute() else REPO / path
        for table, ref in (seed.package_files or {}).items():
            package, _, inner = ref.partition(":")
            found = importlib.util.find_spec(package)
            if found is None or not found.submodule_search_locations:
                raise SourceError(f"{spec.name}: package {package!r} of source.seed.package_files is not installed")
            paths[table] = Path(next(iter(found.submodule_search_locations))) / inner
        tables = {}
        for table, path in paths.items():
            if not path.exists():
                raise SourceError(f"{spec.name}: seed file for table {table!r} not found: {path}")
            is_parquet = path.suffix == ".parquet"
            tables[table] = pd.read_parquet(path) if is_parquet else pd.read_csv(path, low_memory=False)
    missing = [t for t in spec.source.tables if t not in tables]
    if missing:
        raise SourceError(f"{spec.name}: the seed gave tables {sorted(tables)}, not the source tables {missing}")
    return tables


@dataclass(frozen=True)
class SeedResult:
    url: str
    rows: dict[str, int]
    seconds: float


def seed_source(spec: DatasetSpec, url: str | None = None) -> SeedResult:
    """(Re)create the spec's source tables at ``url`` from its ``source.seed``. Idempotent: tables are replaced,
    and each interval table gets an index on its time column (the extraction query bounds it)."""
    import sqlalchemy as sa

    url = url or default_source_url(spec.name)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tables = load_seed_tables(spec)
    engine = sa.create_engine(url)
    rows = {}
    try:
        with engine.begin() as conn:
            for name, df in tables.items():
                method = _copy_insert if engine.dialect.name == "postgresql" else None
                df.to_sql(name, conn, if_exists="replace", index=False, chunksize=50_000, method=method)
                rows[name] = len(df)
            for name, table in spec.source.tables.items():
                if table.time_column in tables[name].columns:
                    ix = f"ix_{name}_{table.time_column}"
                    conn.execute(sa.text(f'CREATE INDEX IF NOT EXISTS "{ix}" ON "{name}" ("{table.time_column}")'))
    finally:
        engine.dispose()
    return SeedResult(url=_redact(url), rows=rows, seconds=round(time.perf_counter() - t0, 2))


def _copy_insert(table, conn, keys, data_iter) -> None:
    """pandas ``to_sql`` method for PostgreSQL: one COPY per chunk instead of row INSERTs (~50x faster)."""
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerows(data_iter)
    buf.seek(0)
    columns = ", ".join(f'"{k}"' for k in keys)
    target = f'"{table.schema}"."{table.name}"' if table.schema else f'"{table.name}"'
    with conn.connection.cursor() as cur:
        cur.copy_expert(f"COPY {target} ({columns}) FROM STDIN WITH (FORMAT csv)", buf)


def _redact(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def interval_dates(start: date, end: date) -> list[str]:
    """ISO dates of the half-open interval [start, end)."""
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days)]


def extract_interval(spec: DatasetSpec, url: str, start: date, end: date) -> dict[str, pd.DataFrame]:
    """Every interval table of the spec for [start, end), by its bounded query."""
    return _run_queries(
        url, {n: t.query for n, t in spec.source.tables.items()}, {"start": start.isoformat(), "end": end.isoformat()}
    )


def extract_reference(spec: DatasetSpec, url: str) -> dict[str, pd.DataFrame]:
    """The spec's static reference tables (lookups a join or a value_set_from reads)."""
    return _run_queries(url, dict(spec.source.reference), {})


def _run_queries(url: str, queries: dict[str, str], params: dict[str, str]) -> dict[str, pd.DataFrame]:
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    out = {}
    try:
        with engine.connect() as conn:
            for name, sql in queries.items():
                try:
                    out[name] = pd.read_sql_query(sa.text(sql), conn, params=params)
                except sa.exc.SQLAlchemyError as exc:
                    raise SourceError(
                        f"query for table {name!r} failed on {_redact(url)}: "
                        f"{exc.__class__.__name__}: {str(exc).splitlines()[0]}"
                    ) from exc
    except sa.exc.OperationalError as exc:
        raise SourceError(f"cannot connect to source {_redact(url)}: {str(exc).splitlines()[0]}") from exc
    finally:
        engine.dispose()
    return out


# -- user-provided files (manual ingest) ----------------------------------------------------------------
class InputRefused(SourceError):
    """A user-provided file that is refused before anything is read (outside the allowed roots, missing,
    too large, unknown format). ``reason`` is a short stable code."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}")


def allowed_roots() -> list[str]:
    """Where manual ingest may read from: ``MLOPS_INGEST_ALLOWED_ROOTS`` (``:``-separated paths or URL
    prefixes), default the lake's ``landing/`` folder and the repo's ``.data/landing``."""
    from include.mlops.storage import data_root

    env = os.environ.get("MLOPS_INGEST_ALLOWED_ROOTS")
    if env:
        return [r for r in env.split(os.pathsep if "://" not in env else ",") if r]
    return [f"{data_root().rstrip('/')}/landing", str(DEFAULT_SOURCE_DB.parent / "landing")]


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _is_under(uri: str, roots: list[str]) -> bool:
    """True when ``uri`` (after resolving symlinks, for a local path) lies under one of ``roots``. URL chaining
    (fsspec's ``a::b``: the check would see one URL and fsspec open another) is never under a root."""
    if "::" in uri or any("::" in r for r in roots):
        return False
    if _is_local(uri):
        real = os.path.realpath(uri.removeprefix("file://"))
        for r in roots:
            if not _is_local(r):
                continue
            root = os.path.realpath(r.removeprefix("file://"))
            if real == root or real.startswith(root.rstrip("/") + "/"):
                return True
        return False
    if "/../" in uri or uri.endswith("/.."):
        return False
    return any(uri.startswith(r.rstrip("/") + "/") for r in roots if "://" in r)


def fetch_upload(spec: DatasetSpec, uri: str, roots: list[str] | None = None) -> tuple[str, bytes]:
    """Guard and read a user-provided file: (format, raw bytes). Raises InputRefused with a reason."""
    import fsspec

    roots = roots if roots is not None else allowed_roots()
    if not _is_under(uri, roots):
        raise InputRefused("path_not_allowed", f"{uri!r} is outside the allowed roots {roots}")
    fmt = uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
    if fmt not in spec.source.file_formats:
        raise InputRefused("unsupported_format", f"{uri!r}: expected one of {spec.source.file_formats}")
    limit = int(spec.source.max_file_mb * 1024 * 1024)
    if _is_local(uri):
        return fmt, _check_header(uri, fmt, _read_local(uri, roots, limit, spec.source.max_file_mb))
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        info = fs.info(path)
    except FileNotFoundError:
        raise InputRefused("file_not_found", f"{uri!r} does not exist") from None
    if info.get("type") != "file":
        raise InputRefused("not_a_file", f"{uri!r} is a {info.get('type', 'non-file')}, not a file")
    if info["size"] > limit:
        raise InputRefused(
            "file_too_large", f"{uri!r} is {info['size'] / 2**20:.2f} MiB, limit {spec.source.max_file_mb} MiB"
        )
    return fmt, _check_header(uri, fmt, fs.cat_file(path))


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"


def _check_header(uri: str, fmt: str, data: bytes) -> bytes:
    """Refuse a file whose column names are not identifiers: a header is echoed into reports (GX Data Docs show
    the columns of a failed schema check as HTML), so ``<script>`` there must never get that far. A header that
    cannot be read is left to the parser, which names that problem."""
    import re

    names: list[str] = []
    try:
        if fmt == "csv":
            import csv
            import io

            first = data.split(b"\n", 1)[0].decode("utf-8-sig")
            names = next(csv.reader([first]), [])
        elif fmt == "parquet":
            import io

            import pyarrow.parquet as pq

            names = list(pq.read_schema(io.BytesIO(data)).names)
    except Exception:  # unreadable: parse_upload rejects it with its own reason
        return data
    bad = [n for n in names if not re.fullmatch(_IDENTIFIER, n)]
    if bad:
        shown = ", ".join(repr(n[:40]) for n in bad[:5])
        raise InputRefused("bad_header", f"{uri!r}: column names must be identifiers ({_IDENTIFIER}), not {shown}")
    return data


def _read_local(uri: str, roots: list[str], limit: int, limit_mb: float) -> bytes:
    """A local file read through one descriptor that is checked after opening: the path it really opened must be
    under ``roots`` and a regular file within ``limit`` bytes. A symlink swapped in between the path check and the
    open (landing is writable by uploaders) is caught here, since what is checked is what is read."""
    import stat

    try:
        fd = os.open(uri.removeprefix("file://"), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputRefused("file_not_found", f"{uri!r} does not exist") from None
    except OSError as exc:
        raise InputRefused("not_a_file", f"{uri!r} cannot be opened: {exc.strerror}") from None
    try:
        opened = f"/proc/self/fd/{fd}"
        real = os.readlink(opened) if os.path.islink(opened) else None
        st = os.fstat(fd)
        if real is None:  # no /proc: the resolved path must still be the file we hold
            real = os.path.realpath(uri.removeprefix("file://"))
            there = os.stat(real)
            if (there.st_dev, there.st_ino) != (st.st_dev, st.st_ino):
                raise InputRefused("path_not_allowed", f"{uri!r} changed while it was being opened")
        if not _is_under(real, roots):
            raise InputRefused("path_not_allowed", f"{uri!r} opened {real!r}, outside the allowed roots {roots}")
        if not stat.S_ISREG(st.st_mode):
            raise InputRefused("not_a_file", f"{uri!r} is not a regular file")
        if st.st_size > limit:
            raise InputRefused("file_too_large", f"{uri!r} is {st.st_size / 2**20:.2f} MiB, limit {limit_mb} MiB")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:  # grew after the fstat
            raise InputRefused("file_too_large", f"{uri!r} is over the limit of {limit_mb} MiB")
        return data
    finally:
        os.close(fd)


TEXT_DTYPES = ("str", "category", "date", "datetime")
HEADER_BYTES = 65_536  # a header line longer than this is no header of a declared table


def max_fields(columns: dict[str, str] | None) -> int:
    """How many columns an upload may have before it is refused unread: twice the declared ones plus a few
    (a file with a column too many still reaches validation, which names the column set)."""
    return 2 * len(columns) + 8 if columns else 10_000


def parse_upload(
    fmt: str,
    data: bytes,
    columns: dict[str, str] | None = None,
    *,
    max_rows: int | None = None,
    max_uncompressed_mb: float | None = None,
) -> pd.DataFrame:
    """Parse a file's bytes into a frame; raise ValueError with a named reason when it is unreadable.

    The cost is bounded before pandas reads anything: a CSV's header line and field count, its line count
    and NUL bytes; a Parquet file's column count, row count and uncompressed size from its footer. Declared
    text columns of a CSV are read as text (a code like ``0123`` stays a code)."""
    import io

    import pandas as pd

    if not data.strip():
        raise ValueError("empty_file: the file has no content")
    if fmt == "csv":
        header = _check_csv_bounds(data, columns, max_rows)
        _check_csv_records(data)
    else:
        _check_parquet_footer(data, columns, max_rows, max_uncompressed_mb)
    try:
        if fmt == "csv":
            text = {c: str for c in header if columns and columns.get(c) in TEXT_DTYPES} or None
            df = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", dtype=text)  # a BOM (Excel) is no column name
        else:
            df = pd.read_parquet(io.BytesIO(data))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not_utf8: {exc}") from None
    except pd.errors.EmptyDataError:
        raise ValueError("empty_file: no header and no rows") from None
    except Exception as exc:  # any parser failure is a named rejection, never a bare traceback
        raise ValueError(f"unreadable_file: {exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}") from None
    if df.empty:
        raise ValueError(f"no_rows: the file has a header ({len(df.columns)} columns) but no rows")
    return df


def _check_csv_bounds(data: bytes, columns: dict[str, str] | None, max_rows: int | None) -> list[str]:
    """The header's fields, after refusing a CSV whose parse would be unbounded or lossy: no line break in
    the first ``HEADER_BYTES`` bytes (header_too_long), far more fields than declared (header_too_wide),
    more lines than ``max_rows`` (too_many_rows), a NUL byte anywhere (nul_byte)."""
    import csv

    end = data.find(b"\n", 0, HEADER_BYTES + 1)
    if end == -1 and len(data) > HEADER_BYTES:
        raise ValueError(f"header_too_long: no line break in the first {HEADER_BYTES:,} bytes")
    line = data[: end if end != -1 else len(data)]
    try:
        header = next(csv.reader([line.decode("utf-8-sig").rstrip("\r")]), [])
    except UnicodeDecodeError as exc:
        raise ValueError(f"not_utf8: {exc}") from None
    if len(header) > max_fields(columns):
        raise ValueError(
            f"header_too_wide: the header has {len(header):,} fields, the spec declares {len(columns or {})}"
        )
    nul = data.find(b"\x00")
    if nul != -1:
        line_no = data.count(b"\n", 0, nul) + 1
        raise ValueError(f"nul_byte: a NUL byte at line {line_no}")
    if max_rows is not None:
        lines = data.count(b"\n") + (not data.endswith(b"\n"))
        if lines - 1 > max_rows:
            raise ValueError(f"too_many_rows: {lines - 1:,} rows, limit {max_rows:,} (source.max_file_rows)")
    return header


def _check_parquet_footer(
    data: bytes, columns: dict[str, str] | None, max_rows: int | None, max_uncompressed_mb: float | None
) -> None:
    """Refuse a Parquet file by its footer alone: more columns than ``max_fields``, more rows than
    ``max_rows`` or more uncompressed bytes than ``max_uncompressed_mb`` (a small file can hold millions)."""
    import io

    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
    except Exception as exc:
        raise ValueError(f"unreadable_file: {exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}") from None
    if meta.num_columns > max_fields(columns):
        raise ValueError(f"header_too_wide: {meta.num_columns:,} columns, the spec declares {len(columns or {})}")
    if max_rows is not None and meta.num_rows > max_rows:
        raise ValueError(f"too_many_rows: {meta.num_rows:,} rows, limit {max_rows:,} (source.max_file_rows)")
    # The footer's uncompressed size is after encoding: a dictionary-encoded repeated value stays tiny there,
    # so count at least 8 bytes per cell, what pandas will hold.
    encoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    size = max(encoded, meta.num_rows * meta.num_columns * 8)
    if max_uncompressed_mb is not None and size > max_uncompressed_mb * 2**20:
        raise ValueError(
            f"too_large_uncompressed: {size / 2**20:,.1f} MiB uncompressed, limit {max_uncompressed_mb:g} MiB "
            "(source.max_uncompressed_mb)"
        )


def _check_csv_records(data: bytes) -> None:
    """Refuse a CSV with a record shorter than its header: pandas would silently fill the missing fields with
    nulls, so a file cut off mid-row (or rows missing fields) would pass as data. Longer records already
    make pandas fail (``unreadable_file``)."""
    import csv
    import io

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not_utf8: {exc}") from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        short = None
        for record in reader:
            if record and len(record) < len(header):
                short = (reader.line_num, len(record))
                break
    except csv.Error as exc:
        raise ValueError(f"unreadable_file: csv.Error: {exc}") from None
    if short is None:
        return
    line, fields = short
    at_end = next(reader, None) is None and not text.endswith(("\n", "\r"))
    if at_end:
        raise ValueError(
            f"truncated_file: the last record (line {line}) has {fields} of {len(header)} fields and the file "
            "does not end with a line break: it was cut off"
        )
    raise ValueError(f"short_rows: line {line} has {fields} fields, the header has {len(header)}")
