"""The "Model health" page: one self-contained HTML document (inline CSS and SVG, nothing fetched from elsewhere)
rendered from :func:`include.mlops.health.model_health`. Every value is escaped.

Its one script: Airflow shows the view in an iframe sandboxed without ``allow-popups``, where links that open a
new tab (MLflow) do nothing. The iframe is same-origin (``allow-same-origin``), so a click on such a link is
re-issued from the Airflow page around it, which may open tabs."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from include.mlops.health import PublicUrls

_E = html.escape
COLORS = {
    "blue": "#1f6feb",
    "grey": "#8b949e",
    "red": "#cf222e",
    "orange": "#d4700a",
    "purple": "#8250df",
    "teal": "#0e8a7e",
}
SHADOW_DASH = "7 3"
# A verdict of the shadow-vs-champion comparison (monitor.json ``metrics.shadow.verdict``) → badge class.
SHADOW_VERDICT_CLASS = {"better": "pass", "not better": "none", "too few rows": "skip"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2rem 1.6rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; } h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; }
.muted { color: #656d76; } .small { font-size: .85rem; }
nav a { margin-right: .8rem; } nav a.current { font-weight: 600; text-decoration: none; color: #1f2328; }
.cards { display: flex; gap: 1rem; flex-wrap: wrap; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: .8rem 1rem; min-width: 18rem; }
.card h3 { margin: 0 0 .4rem; font-size: 1rem; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 1rem; font-size: .8rem; color: #fff; }
.pass, .passed { background: #1a7f37; } .fail, .rejected { background: #cf222e; } .skip { background: #8b949e; }
.info { background: #0969da; } .warn, .rollback { background: #d4700a; } .promote { background: #1a7f37; }
.reject, .external { background: #cf222e; } .none { background: #8b949e; }
.badge.shadow { background: #0e8a7e; } .badge.unshadow { background: #8b949e; }
.comparison { border-top: 1px solid #d0d7de; margin-top: .6rem; padding-top: .2rem; }
table { border-collapse: collapse; margin: .4rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.errors { border: 1px solid #cf222e; background: #ffebe9; padding: .5rem 1rem; border-radius: 6px; }
details summary { cursor: pointer; margin: .3rem 0; }
svg text { font-family: system-ui, sans-serif; }
"""

FRAMED_LINKS_JS = """
document.addEventListener("click", function (e) {
  var a = e.target.closest && e.target.closest('a[target="_blank"]');
  if (!a || window.top === window) return;
  e.preventDefault();
  var d = window.top.document, b = d.createElement("a");
  b.href = a.href; b.target = "_blank"; b.rel = "noopener noreferrer";
  d.body.appendChild(b); b.click(); b.remove();
});
"""


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _a(href: str | None, text: str, *, external: bool = False) -> str:
    if not href:
        return ""
    target = ' target="_blank" rel="noopener noreferrer"' if external else ""
    return f'<a href="{_E(href)}"{target}>{_E(text)}</a>'


def _badge(text: str | None) -> str:
    t = (text or "none").lower()
    return f'<span class="badge {_E(t)}">{_E(t)}</span>'


def _num(v: Any) -> float | None:
    """A plotted value: a finite number, else None (a gap)."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _signed(v: Any, digits: int = 3) -> str:
    return f"{v:+.{digits}f}" if _num(v) is not None else "–"


def _count(n: Any) -> str:
    """``12,034`` for a whole number, ``?`` otherwise."""
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else "?"


def _interval(iv: Any) -> str:
    """``[+0.011, +0.025]`` for a two-number interval, "" otherwise."""
    if isinstance(iv, Sequence) and not isinstance(iv, str) and len(iv) == 2:
        return f"[{_signed(iv[0])}, {_signed(iv[1])}]"
    return ""


def _verdict(verdict: Any) -> str:
    """The badge of a shadow-vs-champion verdict."""
    text = str(verdict) if verdict else "not compared"
    return f'<span class="badge {SHADOW_VERDICT_CLASS.get(text, "none")}">{_E(text)}</span>'


Series = (
    tuple[str, Sequence[float | None], str, str] | tuple[str, Sequence[float | None], str, str, Sequence[str | None]]
)


def line_chart(
    title: str,
    days: Sequence[str],
    series: Sequence[Series],
    *,
    markers: Sequence[tuple[str, str, str]] = (),
    width: int = 920,
    height: int = 200,
) -> str:
    """An SVG line chart over days. ``series``: (label, values, colour, dash[, tips]) with None for gaps; points are
    drawn for solid series and for those with ``tips`` (a tooltip per point); ``markers``: (day, colour, tooltip)
    drawn as vertical lines (e.g. retrain requests)."""
    left, right, top, bottom = 56, 16, 28, 26
    xs = [date.fromisoformat(d).toordinal() for d in days]
    values = [v for _, vals, *_ in series for v in vals if v is not None and math.isfinite(v)]
    if not xs or not values:
        return f'<p class="muted small">{_E(title)}: no data yet.</p>'
    x0, x1 = min(xs), max(xs)
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 0.05
    # metrics here are non-negative: do not pad the axis below zero
    lo, hi = (lo - pad if lo < 0 else max(lo - pad, 0.0)), hi + pad

    def px(x: int) -> float:
        return left + (width - left - right) * (0.5 if x1 == x0 else (x - x0) / (x1 - x0))

    def py(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg class="chart" role="img" aria-label="{_E(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="16" font-size="13" font-weight="600">{_E(title)}</text>',
    ]
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        y = py(v)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{v:.3f}</text>')
    ticks = sorted({days[0], days[len(days) // 2], days[-1]})
    for d in ticks:
        x = px(date.fromisoformat(d).toordinal())
        anchor = "start" if d == days[0] and len(ticks) > 1 else "end" if d == days[-1] and len(ticks) > 1 else "middle"
        out.append(f'<text x="{x:.1f}" y="{height - 8}" font-size="10" text-anchor="{anchor}">{_E(d)}</text>')
    for day, colour, tip in markers:
        x = px(date.fromisoformat(day).toordinal())
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="{colour}" '
            f'stroke-width="2" opacity=".6"><title>{_E(tip)}</title></line>'
        )
    lx = left + 8 + len(title) * 8.0  # the bold title is wider than 7 px a character
    for label, vals, colour, dash, *more in series:
        tips = more[0] if more else [None] * len(vals)
        segments: list[list[str]] = [[]]
        for x, v, tip in zip(xs, vals, tips, strict=True):
            if v is None or not math.isfinite(v):
                segments.append([])
                continue
            segments[-1].append(f"{px(x):.1f},{py(v):.1f}")
            if not dash or more:
                out.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="2.5" fill="{colour}">'
                    f"<title>{_E(tip or f'{label} {date.fromordinal(x)}: {v:.4f}')}</title></circle>"
                )
        for seg in segments:
            if len(seg) > 1:
                out.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" '
                    f'stroke-dasharray="{dash}" points="{" ".join(seg)}"/>'
                )
        out.append(
            f'<line x1="{lx:.0f}" x2="{lx + 18:.0f}" y1="12" y2="12" stroke="{colour}" stroke-width="2" '
            f'stroke-dasharray="{dash}"/><text x="{lx + 22:.0f}" y="16" font-size="11">{_E(label)}</text>'
        )
        lx += 30 + len(label) * 6.2
    out.append("</svg>")
    return "\n".join(out)


def _minus(a: Sequence[float | None], b: float) -> list[float | None]:
    return [None if v is None else v - b for v in a]


def charts(health: Mapping[str, Any]) -> str:
    """Drift and performance over time: three panels over the monitored days, retrain requests marked."""
    points = health["monitoring"]
    if not points:
        return '<p class="muted">No monitoring runs yet (the <code>&lt;dataset&gt;_monitor</code> DAG writes them).</p>'
    days = [p["day"] for p in points]
    th = health["thresholds"]

    def col(key: str) -> list[float | None]:
        return [_num(p["metrics"].get(key)) for p in points]

    markers = []
    for p in points:
        d = p.get("decision") or {}
        if d.get("retrain"):
            markers.append((p["day"], COLORS["red"], f"{p['day']}: retrain requested ({', '.join(d['triggers'])})"))
        elif d.get("alert"):
            markers.append((p["day"], COLORS["orange"], f"{p['day']}: alert, {d.get('blocked_by')}"))
        if d.get("propose_shadow"):
            markers.append(
                (p["day"], COLORS["teal"], f"{p['day']}: shadow v{d['propose_shadow']} proposed its promotion")
            )
    base_auc, base_brier = col("baseline_roc_auc"), col("baseline_brier")
    return "\n".join(
        [
            line_chart(
                "ROC AUC (delayed labels)",
                days,
                [
                    ("champion, recent", col("roc_auc"), COLORS["blue"], ""),
                    ("champion at training", base_auc, COLORS["grey"], "4 3"),
                    ("trigger", _minus(base_auc, th["max_roc_auc_drop"]), COLORS["red"], "2 3"),
                    *_shadow_series(points, "window_roc_auc", "roc_auc"),
                ],
                markers=markers,
            ),
            line_chart(
                "Brier score (delayed labels)",
                days,
                [
                    ("champion, recent", col("brier"), COLORS["blue"], ""),
                    ("champion at training", base_brier, COLORS["grey"], "4 3"),
                    ("trigger", _minus(base_brier, -th["max_brier_rise"]), COLORS["red"], "2 3"),
                    *_shadow_series(points, "window_brier", "brier"),
                ],
                markers=markers,
            ),
            line_chart(
                "Drift",
                days,
                [
                    ("prediction drift", col("prediction_drift"), COLORS["purple"], ""),
                    ("its limit", [th["max_prediction_drift"]] * len(days), COLORS["purple"], "2 3"),
                    ("importance-weighted drift", col("weighted_drift"), COLORS["orange"], ""),
                    ("its limit", [th["max_weighted_drift"]] * len(days), COLORS["orange"], "2 3"),
                    ("drifted column share (not a trigger)", col("drift_share"), COLORS["grey"], ""),
                ],
                markers=markers,
            ),
        ]
    )


def _shadow_series(points: Sequence[Mapping[str, Any]], key: str, champion_key: str) -> list[Series]:
    """The shadow's ``key`` on each day's monitored window (the rows of the champion's ``champion_key``), as one
    series labelled with the shadow versions seen, a tooltip per point; none when no shadow was ever compared."""
    values: list[float | None] = []
    tips: list[str | None] = []
    versions: list[str] = []
    for p in points:
        s = p["metrics"].get("shadow")
        v = _num(s.get(key)) if isinstance(s, Mapping) else None
        values.append(v)
        tips.append(None)
        if v is None:
            continue
        version = str(s.get("version"))
        if version not in versions:
            versions.append(version)
        champion = _fmt(_num(p["metrics"].get(champion_key)), 4)
        tips[-1] = (
            f"shadow v{version} {p['day']}: {v:.4f} (champion v{p.get('model_version')}: {champion}; "
            f"{s.get('verdict') or 'no verdict'})"
        )
    if not versions:
        return []
    shown = ", ".join(f"v{v}" for v in versions)
    if len(versions) > 4:
        shown = f"v{versions[0]} … v{versions[-1]}"
    return [(f"shadow {shown}", values, COLORS["teal"], SHADOW_DASH, tips)]


def _model_card(
    title: str,
    m: Mapping[str, Any] | None,
    dataset: str,
    urls: PublicUrls,
    same_as: str | None = None,
    *,
    same_note: str = "the champion itself: no open challenger",
    note: str = "",
    extra: str = "",
    empty: str = "none",
) -> str:
    """A registered version's card (``note``: a line of HTML under its header, ``extra``: HTML at its end);
    ``empty`` when there is none, a short card saying ``same_note`` when it is version ``same_as`` (one version,
    one full card)."""
    if not m:
        role = _E(title.lower())
        return f'<div class="card" data-role="{role}"><h3>{_E(title)}</h3><p class="muted">{_E(empty)}</p></div>'
    if same_as and m.get("version") == same_as:  # e.g. the promoted challenger: one version, one card
        return (
            f'<div class="card" data-role="{_E(title.lower())}"><h3>{_E(title)}: '
            f'<span class="version">v{_E(str(m["version"]))}</span></h3>'
            f'<p class="muted">{_E(same_note)}</p>'
            + (f'<div class="small">{note}</div>' if note else "")
            + f"<div>{_a(urls.model_card(dataset, m['version']), 'model card')}</div>{extra}</div>"
        )
    tags, metrics = m.get("tags") or {}, m.get("metrics") or {}
    gate_rel = tags.get("gate.report_path") or f"reports/gate/{dataset}/v{m['version']}/gate.html"
    rows = "".join(
        f"<tr><th>{_E(k)}</th><td>{_E(_fmt(metrics.get(k)))}</td></tr>"
        for k in ("test_roc_auc", "test_brier", "test_pr_auc")
        if k in metrics
    )
    links = " · ".join(
        x
        for x in (
            _a(urls.model_card(dataset, m["version"]), "model card"),
            _a(urls.model_version(dataset, m["version"]), "MLflow model version", external=True),
            _a(urls.mlflow_run(m["run_id"]) if m.get("run_id") else None, "training run", external=True),
            _a(urls.report(gate_rel) if tags.get("gate.decision") else None, "gate report"),
        )
        if x
    )
    return (
        f'<div class="card" data-role="{_E(title.lower())}"><h3>{_E(title)}: '
        f'<span class="version">v{_E(str(m["version"]))}</span></h3>'
        f'<div class="small muted">registered {_E(m.get("created") or "")} · candidate '
        f"{_E(tags.get('candidate', '?'))} · features {_E(tags.get('feature_version', '?')[:12])}"
        + (f" · data {_E(tags['window_start'])} .. {_E(tags['window_end'])}" if tags.get("window_end") else "")
        + (f"<br>trained: {_E(tags['trained_because'])}" if tags.get("trained_because") else "")
        + (f"<br>{note}" if note else "")
        + "</div>"
        f"<p>gate: {_badge(tags.get('gate.decision'))}</p><table>{rows}</table><div>{links}</div>{extra}</div>"
    )


def _shadow_card(health: Mapping[str, Any], urls: PublicUrls) -> str:
    """The shadow's card: its version card plus since when, why, and its latest comparison with the champion on
    live labels (both models' figures on the same rows, the gain with its interval against the bar, the verdict,
    and when it proposed its promotion)."""
    m, c = health.get("shadow"), health.get("shadow_comparison")
    if not m:
        return _model_card("Shadow", None, health["dataset"], urls, empty="no shadow")
    card = {"same_as": (health.get("challenger") or {}).get("version"), "same_note": "the challenger above"}
    tags = m.get("tags") or {}
    since = (c or {}).get("since") or (tags.get("shadow.since") or "")[:10] or "?"
    note = f"shadow since {_E(since)}" + (f": {_E(tags['shadow.reason'])}" if tags.get("shadow.reason") else "")
    if not c:
        extra = '<div class="comparison"><p class="muted small">not compared with the champion yet</p></div>'
        return _model_card("Shadow", m, health["dataset"], urls, **card, note=note, extra=extra)
    window = c.get("window") or ["?", "?"]
    rows = _count(c.get("rows"))
    champion = f"champion v{c.get('champion_version')}"
    table = (
        f"<table><tr><th></th><th>shadow v{_E(str(m['version']))}</th><th>{_E(champion)}</th></tr>"
        + "".join(
            f"<tr><th>{name}</th><td>{_fmt(_num(c.get(k)))}</td><td>{_fmt(_num(c.get('champion_' + k)))}</td></tr>"
            for name, k in (("ROC AUC", "roc_auc"), ("Brier", "brier"))
        )
        + "</table>"
    )
    gains = (
        f"ROC AUC gain <b>{_signed(c.get('auc_gain'))}</b> {_interval(c.get('auc_gain_interval'))} "
        f"(needs ≥ {_signed(c.get('min_gain'))})<br>"
        f"Brier change <b>{_signed(c.get('brier_change'))}</b> {_interval(c.get('brier_change_interval'))} "
        f"(needs ≤ {_signed(c.get('max_brier_rise'))})"
    )
    proposed = c.get("proposed_on") or []
    proposal = (
        f' · <b class="proposal">proposed its promotion on {_E(proposed[-1])}</b>'
        + (f" ({len(proposed)} times since {_E(proposed[0])})" if len(proposed) > 1 else "")
        if proposed
        else ""
    )
    stored = c.get("stored") or {}
    check = (
        f"<div class='small muted'>stored shadow scores re-checked: {_E(_fmt(stored.get('days')))} days, "
        f"{_E(_count(stored.get('compared_rows')))} rows, max |Δ| {_E(_fmt(_num(stored.get('max_abs_diff')), 4))}</div>"
        if stored
        else ""
    )
    extra = (
        f'<div class="comparison"><p class="small"><b>vs the champion on live labels</b>: compared {_E(c["day"])} on '
        f"{rows} labelled rows of "
        f"{_E(str(window[0]))} .. {_E(str(window[-1]))}</p>{table}<p class='small'>{gains}</p>"
        f'<p><span title="{_E(c.get("detail") or "")}">{_verdict(c.get("verdict"))}</span>{proposal}</p>{check}</div>'
    )
    return _model_card("Shadow", m, health["dataset"], urls, **card, note=note, extra=extra)


def _gate(health: Mapping[str, Any], urls: PublicUrls) -> str:
    g = health.get("last_gate")
    if not g:
        return '<p class="muted">No gate decision yet.</p>'
    r = g["report"]
    champion = f"v{r['champion_version']}" if r.get("champion_version") else "none (first model)"
    checks = "".join(
        f"<tr><td>{_E(c['name'])}</td><td>{_E(_fmt(c.get('value'), 4))}</td><td>{_E(_fmt(c.get('threshold'), 4))}</td>"
        f"<td>{_badge(c.get('verdict'))}</td><td class='small'>{_E(c.get('detail') or '')}</td></tr>"
        for c in r.get("checks", [])
    )
    return (
        f'<p id="last-gate">v{_E(str(g["version"]))} against champion {_E(champion)}: {_badge(r.get("decision"))} '
        f"<span class='muted small'>decided {_E(r.get('decided_at') or '')}</span> · "
        f"{_a(urls.report(g['html']), 'gate report')} · {_a(urls.report(g['json']), 'gate.json')}</p>"
        "<table><tr><th>check</th><th>value</th><th>threshold</th><th>verdict</th><th>detail</th></tr>"
        f"{checks}</table>"
    )


def _history(health: Mapping[str, Any], urls: PublicUrls) -> str:
    entries = health["history"]
    if not entries:
        return '<p class="muted">No promotion, rejection or rollback yet.</p>'

    def v(x: str | None) -> str:
        return f"v{x}" if x else "none"

    rows = "".join(
        f"<tr><td>{e['seq']}</td><td>{_E(e['when'][:19].replace('T', ' '))}</td><td>{_badge(e['action'])}</td>"
        f"<td>{_a(urls.model_card(health['dataset'], e['version']), 'v' + e['version'])}</td>"
        f"<td>{_E(_move(e))}</td>"
        f"<td>{_E(e.get('approver') or '–')}</td><td class='small'>{_run_link(health['dataset'], e, urls)}</td>"
        f"<td class='small'>{_E(e.get('reason') or '')}</td>"
        f"<td>{_a(urls.mlflow_run(e['run_id']) if e.get('run_id') else None, 'audit run', external=True)}</td></tr>"
        for e in reversed(entries)
    )
    return (
        '<table id="history"><tr><th>#</th><th>when (UTC)</th><th>action</th><th>version</th><th>champion</th>'
        f"<th>approver</th><th>DAG run</th><th>reason</th><th></th></tr>{rows}</table>"
    )


def _run_link(dataset: str, e: Mapping[str, Any], urls: PublicUrls) -> str:
    """The DAG run of an audit entry as a link (rollbacks run in <ds>_rollback, the rest in <ds>_train)."""
    if not e.get("dag_run"):
        return "–"
    dag_id = f"{dataset}_rollback" if e.get("action") == "rollback" else f"{dataset}_train"
    return _a(urls.dag_run(dag_id, e["dag_run"]), e["dag_run"])


def _folded(items: list[str], keep: int = 8) -> str:
    """A list showing its first ``keep`` items, the rest folded under "n more"."""
    if len(items) <= keep:
        return "".join(items)
    rest = f"<li><details><summary>{len(items) - keep} more</summary><ul>{''.join(items[keep:])}</ul></details></li>"
    return "".join(items[:keep]) + rest


def _move(e: Mapping[str, Any]) -> str:
    """What an audit entry did to the champion ("v1 → v2"; a rejection leaves it: "stays v1")."""
    frm, to = (f"v{x}" if x else "none" for x in (e.get("from_version"), e.get("to_version")))
    return f"stays {frm}" if e.get("action") == "reject" or frm == to else f"{frm} → {to}"


def _monitoring_table(health: Mapping[str, Any], urls: PublicUrls) -> str:
    rows = []
    for p in reversed(health["monitoring"]):
        m, d = p["metrics"], p.get("decision") or {}
        if d.get("retrain"):
            verdict = '<span class="badge fail">retrain requested</span>'
        elif d.get("alert"):
            verdict = f'<span class="badge warn">alert ({_E(str(d.get("blocked_by")))})</span>'
        elif d:
            verdict = '<span class="badge pass">ok</span>'
        else:
            verdict = '<span class="muted">not decided</span>'
        links = " · ".join(
            x
            for x in (
                _a(urls.report(p["html"]) if p.get("html") else None, "Evidently"),
                _a(urls.mlflow_run(p["mlflow_run_id"]) if p.get("mlflow_run_id") else None, "MLflow", external=True),
                _a(urls.report(p["decision_json"]) if p.get("decision_json") else None, "decision"),
            )
            if x
        )
        rows.append(
            f"<tr><td>{_E(p['day'])}</td><td>v{_E(str(p.get('model_version')))}</td>"
            + "".join(
                f"<td>{_E(_fmt(m.get(k)))}</td>"
                for k in ("roc_auc", "brier", "prediction_drift", "weighted_drift", "drift_share")
            )
            + f"<td>{_shadow_cell(m.get('shadow'), d.get('propose_shadow'))}</td>"
            + f"<td>{verdict}<div class='small'>{_E(' | '.join(d.get('reasons') or []))}</div></td>"
            + f"<td>{links}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<details open><summary>Monitoring runs and decisions</summary><table id="monitoring">'
        "<tr><th>day</th><th>model</th><th>ROC AUC</th><th>Brier</th><th>prediction drift</th>"
        "<th>weighted drift</th><th>drift share</th><th>shadow vs champion</th><th>decision</th><th>reports</th></tr>"
        + "".join(rows)
        + "</table></details>"
    )


def _shadow_cell(s: Any, proposed: Any) -> str:
    """A monitoring day's shadow comparison: version, verdict, ROC AUC gain with its interval (the monitor's
    detail as tooltip), and the promotion it proposed."""
    if not isinstance(s, Mapping):
        return '<span class="muted">–</span>'
    out = (
        f'<span title="{_E(s.get("detail") or "")}">v{_E(str(s.get("version")))} {_verdict(s.get("verdict"))}</span>'
        f"<div class='small'>ROC AUC {_signed(s.get('auc_gain'))} {_interval(s.get('auc_gain_interval'))}</div>"
    )
    if proposed:
        out += f'<div class="small"><b>proposed v{_E(str(proposed))}\'s promotion</b></div>'
    return out


def _reports(health: Mapping[str, Any], urls: PublicUrls) -> str:
    ds = health["dataset"]
    gates = _folded(
        [
            f"<li>{_a(urls.report(g['html']), 'v' + g['version'])} {_badge(g.get('decision'))} "
            f"{_a(urls.model_card(ds, g['version']), 'card')} "
            f"<span class='small muted'>{_E(', '.join(g.get('failed') or []))}</span></li>"
            for g in health["gate_reports"]
        ]
    )
    drift = _folded(
        [f"<li>{_a(urls.report(p['html']), p['day'])}</li>" for p in reversed(health["monitoring"]) if p.get("html")]
    )
    docs = _folded(
        [
            f"<li>{_a(urls.report(d['docs']), d['day']) if d.get('docs') else _E(d['day'])} "
            f"{_badge(d.get('status'))}"
            + (
                f" <span class='small muted'>{d['rows_quarantined']} rows quarantined</span>"
                if d.get("rows_quarantined")
                else ""
            )
            + "</li>"
            for d in health["data_docs"]
        ]
    )
    empty = '<li class="muted">none yet</li>'
    return (
        f'<div class="cards" id="reports">'
        f'<div class="card"><h3>Gate reports</h3><ul>{gates or empty}</ul></div>'
        f'<div class="card"><h3>Evidently drift reports</h3><ul>{drift or empty}</ul></div>'
        f'<div class="card"><h3>GX Data Docs</h3><ul>{docs or empty}</ul></div></div>'
    )


def _features(health: Mapping[str, Any]) -> str:
    """The feature catalog (feature_store.catalog): freshness of the online store, then every feature."""
    cat = health.get("features")
    if not cat:
        return '<p class="muted">not available</p>'
    o = cat["online"]
    fresh = (
        f"days {_E(o['first_day'])} … {_E(o['last_day'])} ({o['days']}), last written {_E(o['last_materialized_at'])}"
        if o["days"]
        else "nothing materialized yet"
    )
    rows = "".join(
        f"<tr><td><b>{_E(f['name'])}</b></td><td>{_E(f['dtype'])}</td><td>{_E(f['kind'])}</td>"
        f"<td>{_E(f['definition'])}<div class='small muted'>{_E(f['description'])}</div></td>"
        f"<td>{_E(', '.join(f['used_by']) or '-')}</td></tr>"
        for f in cat["features"]
    )
    return (
        f"<p class='small'>Online store: {_E(o['store'])}, view <code>{_E(o['view'])}</code>: {fresh}. "
        f"Entity keys: {_E(', '.join(cat['entity_keys']))}; request fields: "
        f"{_E(', '.join(cat['request_fields']) or 'none')}.</p>"
        "<table><tr><th>feature</th><th>dtype</th><th>kind</th><th>definition</th><th>used by</th></tr>"
        f"{rows}</table>"
    )


def render_page(health: Mapping[str, Any], datasets: Sequence[str], urls: PublicUrls) -> str:
    """The whole page for one dataset; ``datasets`` feeds the navigation between datasets."""
    ds = health["dataset"]
    nav = " ".join(
        f'<a href="{_E(urls.health(d))}" class="{"current" if d == ds else ""}">{_E(d)}</a>' for d in datasets
    )
    errors = health.get("errors") or {}
    err_html = (
        '<div class="errors"><b>Some parts could not be read:</b><ul>'
        + "".join(f"<li>{_E(k)}: {_E(v)}</li>" for k, v in errors.items())
        + "</ul></div>"
        if errors
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Model health: {_E(ds)}</title><style>{CSS}</style></head>
<body>
<nav class="small">datasets: {nav}</nav>
<h1>Model health: {_E(ds)}</h1>
<p class="muted small">{_E(health.get("description") or "")}</p>
{err_html}
<h2>Champion, challenger and shadow</h2>
<div class="cards">{_model_card("Champion", health.get("champion"), ds, urls)}
{_model_card("Challenger", health.get("challenger"), ds, urls, (health.get("champion") or {}).get("version"))}
{_shadow_card(health, urls)}</div>
<h2>Last gate decision</h2>
{_gate(health, urls)}
<h2>Promotion history</h2>
{_history(health, urls)}
<h2>Drift and performance over time</h2>
<p class="small muted">Retrain requests are marked red, alerts that were debounced or blocked orange, a shadow's
promotion proposal teal; the teal dashed line is the shadow on the same rows as the champion.
The drifted-column share is recorded but never triggers a retrain (a week of seasonal data always "drifts").</p>
{charts(health)}
{_monitoring_table(health, urls)}
<h2>Reports</h2>
{_reports(health, urls)}
<h2>Features</h2>
{_features(health)}
<p class="small muted">MLflow: {_a(urls.mlflow, urls.mlflow, external=True)} · JSON of this page:
{_a(urls.health_json(ds), "health.json")}</p>
<script>{FRAMED_LINKS_JS}</script>
</body></html>
"""
