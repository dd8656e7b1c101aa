"""Ingestion: extract an interval (or a user-provided file) to the raw zone, validate it, and publish
the validated rows or quarantine them with reasons. Raw data is always kept; nothing partial or bad
reaches the validated zone; re-running an interval overwrites the same partitions with the same bytes.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import date
from typing import Any

from include.mlops import sources, validation
from include.mlops.config import DatasetSpec
from include.mlops.storage import Lake, date_partition

log = logging.getLogger(__name__)

REFERENCE_PARTITION = "snapshot=current"


class InputRejected(RuntimeError):
    """The batch could not be read at all; its raw bytes and a quarantine record are kept."""


@dataclass(frozen=True)
class RawResult:
    partition: str
    uri: str
    rows: int
    sha256: str
    read_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def next_day(spec: DatasetSpec, lake: Lake) -> date | None:
    """The first day after the latest one ingested (validated or quarantined), the spec's first day when none
    was, None when the whole time range is ingested: where the replay clock starts and what a manual ingest
    without a day covers."""
    from datetime import timedelta

    days = ingested_days(spec, lake, "validated") + ingested_days(spec, lake, "quarantine")
    nxt = max(days) + timedelta(days=1) if days else spec.time.start
    return nxt if nxt <= spec.time.end else None


def ingested_days(spec: DatasetSpec, lake: Lake, zone: str = "validated") -> list[date]:
    """The days with a partition in ``zone`` (``validated`` or ``quarantine``), oldest first."""
    return [date.fromisoformat(p[5:]) for p in lake.partitions(zone, spec.name) if p.startswith("date=")]


def extract_to_raw(
    spec: DatasetSpec,
    lake: Lake,
    source_url: str,
    start: date,
    end: date,
    *,
    run_id: str | None = None,
    source_uri: str | None = None,
) -> RawResult:
    """Land [start, end) in the raw zone: every interval table from the source, with the primary table
    taken from ``source_uri`` instead when given (the file's bytes are kept as they came)."""
    partition = date_partition(start)
    upload = sources.fetch_upload(spec, source_uri) if source_uri else None  # refused before anything is read
    tables = sources.extract_interval(spec, source_url, start, end)
    _snapshot_reference(spec, lake, source_url, run_id)
    blobs: dict[str, bytes] = {}
    read_error = None
    origin = f"{spec.source.connection_id}:{start}..{end}"
    if upload:
        fmt, data = upload
        blobs[f"upload.{fmt}"] = data
        origin = source_uri
        try:
            tables[spec.source.primary_table] = sources.parse_upload(
                fmt,
                data,
                spec.source.tables[spec.source.primary_table].columns,
                max_rows=spec.source.max_file_rows,
                max_uncompressed_mb=spec.source.max_uncompressed_mb,
            )
        except ValueError as exc:
            read_error = str(exc)
            tables.pop(spec.source.primary_table)
    m = lake.write_partition(
        "raw",
        spec.name,
        partition,
        tables,
        source=origin,
        run_id=run_id,
        blobs=blobs,
        extra={"interval": [start.isoformat(), end.isoformat()], "read_error": read_error},
    )
    uri = lake.uri(lake.partition_path("raw", spec.name, partition))
    return RawResult(partition, uri, m.rows, m.sha256, read_error)


def _snapshot_reference(spec: DatasetSpec, lake: Lake, source_url: str, run_id: str | None) -> None:
    if spec.source.reference:
        ref = sources.extract_reference(spec, source_url)
        lake.write_partition(
            "reference", spec.name, REFERENCE_PARTITION, ref, source=spec.source.connection_id, run_id=run_id
        )


def load_reference(spec: DatasetSpec, lake: Lake) -> dict[str, Any]:
    """The reference tables snapshotted by the last extraction (empty when the spec has none)."""
    if not spec.source.reference:
        return {}
    return {t: lake.read_table("reference", spec.name, REFERENCE_PARTITION, t) for t in spec.source.reference}


def validate_raw(
    spec: DatasetSpec, lake: Lake, start: date, end: date, *, run_id: str | None = None, build_docs: bool = True
) -> dict[str, Any]:
    """Validate the raw partition of [start, end); write validated / quarantine partitions, GX results and
    Data Docs. Returns a JSON-serialisable summary; raises ValidationFailed / InputRejected after the
    quarantine record is written when the whole batch is rejected."""
    partition = date_partition(start)
    raw = lake.manifest("raw", spec.name, partition)
    if raw is None:
        raise InputRejected(f"no raw partition {partition} for {spec.name}: run the extraction first")
    report_rel = f"reports/gx/{spec.name}/{partition}"
    if raw.extra.get("read_error"):
        reason = raw.extra["read_error"]
        _quarantine_batch(spec, lake, partition, raw, {"status": "rejected", "reasons": [reason]}, run_id)
        lake.write_json(f"{report_rel}/result.json", {"status": "rejected", "reasons": [reason]})
        raise InputRejected(f"{spec.name} {partition}: input rejected - {reason}")

    tables = {t: lake.read_table("raw", spec.name, partition, t) for t in raw.files if "." not in t}
    docs_dir = validation.docs_tempdir() if build_docs else None
    try:
        split = validation.validate_batch(
            spec, tables, (start, end), load_reference(spec, lake), partition=partition, docs_dir=docs_dir
        )
        if docs_dir:
            validation.add_docs_context(docs_dir, split.report)
            split.report.docs_uri = validation.upload_dir(lake, docs_dir, f"{report_rel}/docs")
    finally:
        if docs_dir:
            shutil.rmtree(docs_dir, ignore_errors=True)
    report = split.report
    result_uri = lake.write_json(f"{report_rel}/result.json", report.as_dict())
    reasons = {"status": report.status, "reasons": [o.describe() for o in report.critical_failures + report.warnings]}

    if report.status == "failed":
        _quarantine_batch(spec, lake, partition, raw, reasons, run_id)
        raise validation.ValidationFailed(report)

    q = {t: df for t, df in split.quarantined.items() if len(df)}
    if q:
        lake.write_partition(
            "quarantine",
            spec.name,
            partition,
            q,
            source=raw.source,
            run_id=run_id,
            blobs={"reasons.json": json.dumps(reasons, indent=2).encode()},
            extra={"scope": "rows", "rows": report.rows_quarantined},
        )
    else:
        lake.delete_partition("quarantine", spec.name, partition)
    m = lake.write_partition(
        "validated",
        spec.name,
        partition,
        split.valid,
        source=raw.source,
        run_id=run_id,
        extra={"raw_sha256": raw.sha256, "status": report.status, "warnings": reasons["reasons"]},
    )
    return {
        "partition": partition,
        "status": report.status,
        "uri": lake.uri(lake.partition_path("validated", spec.name, partition)),
        "rows": m.rows,
        "sha256": m.sha256,
        "rows_quarantined": report.rows_quarantined,
        "warnings": reasons["reasons"],
        "docs_uri": report.docs_uri,
        "result_uri": result_uri,
    }


def _quarantine_batch(spec: DatasetSpec, lake: Lake, partition: str, raw, reasons: dict, run_id: str | None) -> None:
    """The whole batch is rejected: copy raw into quarantine with reasons. A validated partition of the same day
    from an earlier, accepted batch is kept as it was (the rejected batch never replaces good data)."""
    tables = {t: lake.read_table("raw", spec.name, partition, t) for t in raw.files if "." not in t}
    blobs = {n: lake.read_blob("raw", spec.name, partition, n) for n in raw.files if "." in n}
    blobs["reasons.json"] = json.dumps(reasons, indent=2).encode()
    lake.write_partition(
        "quarantine",
        spec.name,
        partition,
        tables,
        source=raw.source,
        run_id=run_id,
        blobs=blobs,
        extra={"scope": "batch"},
    )
    kept = lake.manifest("validated", spec.name, partition)
    if kept is not None:
        log.warning(
            "%s %s: batch rejected; the validated partition from raw %s (run %s) is kept unchanged",
            spec.name, partition, kept.extra.get("raw_sha256", "?")[:12], kept.run_id,
        )  # fmt: skip
