"""The one library module that knows Airflow: connections, alert notifiers, shared DAG defaults.

Everything here is cheap to import (DAG files import it at parse time); heavy work happens in calls.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

from airflow.sdk import Asset, BaseNotifier, Param

log = logging.getLogger(__name__)

ALERT_CONN_ID = "mlops_alerts"


def asset(kind: str, dataset: str) -> Asset:
    """The one definition of each Asset, so producers and consumers always agree on its URI:
    ``validated`` (lake partitions), ``predictions``, ``champion`` (the model alias), ``retrain`` (requests),
    ``online`` (the online feature store)."""
    names = {
        "validated": (f"validated/{dataset}", "lake"),
        "predictions": (f"predictions/{dataset}", "lake"),
        "champion": (f"model/{dataset}@champion", "model"),
        "retrain": (f"retrain/{dataset}", "model"),
        "online": (f"online/{dataset}", "features"),
    }
    name, group = names[kind]
    path = name.replace("@", "/")
    return Asset(name=name, uri=f"mlops://{path}", group=group)


def dag_dates(time_spec: Any) -> dict[str, Any]:
    """``start_date`` / ``end_date`` (UTC, timezone-aware) spanning the dataset's time range."""
    import pendulum

    s, e = time_spec.start, time_spec.end
    return {
        "start_date": pendulum.datetime(s.year, s.month, s.day, tz="UTC"),
        "end_date": pendulum.datetime(e.year, e.month, e.day, 23, 59, tz="UTC"),
    }


def daily_schedule(spec: Any, lag_days: int = 0) -> Any:
    """The schedule of a DAG that runs once per data day: the replay clock for a historical dataset
    (``time.replay``; include/mlops/replay.py), else real ``[day, day + 1)`` data intervals in real time
    (the default ``@daily`` trigger timetable has none)."""
    if spec.time.replay:
        from include.mlops.replay import ReplayTimetable

        return ReplayTimetable.for_spec(spec.name, lag_days=lag_days)
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable("0 0 * * *", timezone="UTC")


def default_args(owner: str) -> dict[str, Any]:
    """Retries with exponential backoff and failure alerts, shared by every DAG."""
    return {
        "owner": owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "retry_exponential_backoff": 2.0,  # a multiplier on Airflow 3.3: True would be 1.0, a constant delay
        "max_retry_delay": timedelta(minutes=5),
        "on_failure_callback": AlertNotifier(kind="failure"),
    }


def source_url(conn_id: str) -> str:
    """SQLAlchemy URL of an Airflow connection: ``extra.sqlalchemy_url`` if set, else built from its fields."""
    from airflow.sdk import Connection

    conn = Connection.get(conn_id)
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return extra["sqlalchemy_url"]
    if conn.conn_type in ("postgres", "postgresql"):
        auth = f"{conn.login or ''}{':' + conn.password if conn.password else ''}{'@' if conn.login else ''}"
        return f"postgresql+psycopg2://{auth}{conn.host or '127.0.0.1'}:{conn.port or 5432}/{conn.schema or ''}"
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    raise ValueError(
        f"connection {conn_id!r} (type {conn.conn_type!r}) has no extra.sqlalchemy_url and is not postgres/sqlite"
    )


def run_interval(context: Any, day: str | None = None, time_spec: Any = None, default: Any = None) -> tuple[date, date]:
    """The [start, end) dates a run covers: the ``date`` Param when given; for a manual run the day of its
    logical date (a manual run on a data-interval timetable otherwise gets the interval *ending* there) —
    unless that day is outside the dataset's time range (``time_spec``; the trigger form's default, today, for a
    replayed year), then the day ``default()`` names (e.g. the next day not yet ingested); else the scheduled
    run's data interval."""
    if day:
        start = date.fromisoformat(str(day)[:10])
        return start, start + timedelta(days=1)
    dag_run = context.get("dag_run")
    logical = context.get("logical_date")
    if getattr(dag_run, "run_type", None) == "manual":
        start = (logical or dag_run.run_after).date()
        if time_spec is not None and default is not None and not time_spec.start <= start <= time_spec.end:
            start = default() or start
            log.info("manual run without a day in %s..%s: it covers %s", time_spec.start, time_spec.end, start)
        return start, start + timedelta(days=1)
    start_dt = context.get("data_interval_start") or logical or dag_run.run_after
    end_dt = context.get("data_interval_end") or start_dt
    start = start_dt.date()
    return start, max(end_dt.date(), start + timedelta(days=1))


def day_param(what: str) -> Param:
    """The optional ``date`` Param of a DAG woken by validated-Asset events: ``what`` it does with the day."""
    return Param(
        None,
        type=["null", "string"],
        format="date",
        title="Day (optional)",
        description=f"Validated day (YYYY-MM-DD) to {what}; default: the days named by the triggering "
        "validated-Asset events (a manual run without it takes its logical day).",
    )


def validated_days(context: Any, validated: Asset, day: str | None) -> list[str]:
    """The validated days (ISO) a run woken by ``validated`` events covers: ``day`` when given, else each day its
    events name, once; a manual run with neither covers its logical day."""
    from include.mlops.scoring import partitions_to_score

    events = (context.get("triggering_asset_events") or {}).get(validated, [])
    manual = day or not events
    return partitions_to_score([e.extra for e in events], day, run_interval(context)[0] if manual else None)


class AlertNotifier(BaseNotifier):
    """Alert on failure or on quarantine through the ``mlops_alerts`` connection (SMTP or Slack webhook).

    With no such connection (the embedded default) the alert is logged and nothing fails.
    """

    template_fields = ("message",)

    def __init__(self, kind: str = "failure", message: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.message = message

    def notify(self, context: Any) -> None:
        ti = context.get("task_instance") or context.get("ti")
        where = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')} run {context.get('run_id', '?')}"
        exc = context.get("exception")
        text = self.message or (f"{exc}" if exc else "")
        subject = f"[mlops] {self.kind}: {where}"
        send_alert(subject, text)


def send_alert(subject: str, text: str) -> str:
    """Send through the configured channel; return which channel was used ('log' when none is set)."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(ALERT_CONN_ID)
    except Exception:  # not configured: the embedded default
        conn = None
    channel = "log"
    try:
        if conn is not None and conn.conn_type in ("smtp", "email"):
            from airflow.providers.smtp.hooks.smtp import SmtpHook

            to = (conn.extra_dejson or {}).get("to") or conn.login
            with SmtpHook(smtp_conn_id=ALERT_CONN_ID) as hook:
                hook.send_email_smtp(to=to, subject=subject, html_content=f"<pre>{text}</pre>")
            channel = "smtp"
        elif conn is not None and conn.conn_type in ("slackwebhook", "slack_incoming_webhook", "http"):
            import json
            import urllib.request

            url = (conn.extra_dejson or {}).get("webhook_url") or conn.host
            if not str(url).lower().startswith(("https://", "http://")):  # no file://, ftp:// ... from a connection
                raise ValueError(f"webhook URL of connection {ALERT_CONN_ID!r} must be http(s), got {url!r}")
            req = urllib.request.Request(
                url,
                data=json.dumps({"text": f"*{subject}*\n{text}"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(req, timeout=10).close()  # nosec B310 - scheme checked above
            channel = "slack"
    except Exception as exc:  # an alert must never take a pipeline down
        log.warning("alert via %s failed (%s); logging it instead", ALERT_CONN_ID, exc)
        channel = "log"
    log.warning("ALERT %s\n%s", subject, text)
    return channel
