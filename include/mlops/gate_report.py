"""How a gate report looks: Markdown (the approval e-mail, the task log) and a self-contained HTML page.

Kept apart from :mod:`include.mlops.evaluation`, whose gate is a pure function over metrics: this module only
renders a :class:`~include.mlops.evaluation.GateReport` that the gate already decided. Every check shows its name,
value, interval (when the gate measured one), threshold and verdict.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.evaluation import Check, GateReport

_VERDICT_STYLE = {"pass": "color:#1b7f3b", "fail": "color:#b3261e;font-weight:bold", "skip": "color:#777"}  # nosec B105


def fmt(v: Any) -> str:
    """A value as the report shows it: '-' for None, yes/no, floats to 4 decimals without trailing zeros."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def interval_text(check: Check) -> str:
    """``[low, high]`` of a check's interval, or '-'."""
    if check.interval is None:
        return "-"
    low, high = check.interval
    return f"[{fmt(low)}, {fmt(high)}]"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def window_text(window: dict[str, Any]) -> str:
    if not window:
        return "-"
    rows = f", {window['rows']} rows" if "rows" in window else ""
    return f"{window.get('start', '?')} .. {window.get('end', '?')}{rows}"


def _metric_keys(a: dict[str, float], b: dict[str, float] | None) -> list[str]:
    return list(dict.fromkeys([*a, *(b or {})]))


def _slice_rows(slices: dict[str, dict[str, dict[str, Any]]]) -> list[list[Any]]:
    return [
        [col, value, s.get("rows"), s.get("roc_auc"), s.get("champion_roc_auc"), s.get("gated")]
        for col, values in slices.items()
        for value, s in values.items()
    ]


def _banner(report: GateReport, sep: str) -> str:
    return "PASSED" if report.passed else f"REJECTED{sep}{', '.join(report.failed)}"


def render_markdown(report: GateReport) -> str:
    """A Markdown summary: verdict, alerts, checks (with intervals), metrics and slices."""
    r = report
    banner = "PASSED" if r.passed else f"REJECTED ({', '.join(r.failed)})"
    lines = [
        f"# Gate report: {r.dataset} v{r.challenger_version}",
        "",
        f"**Decision: {banner}**",
        "",
        f"- challenger: v{r.challenger_version}",
        f"- champion: {'v' + r.champion_version if r.champion_version else 'none (first model)'}",
        f"- window: {window_text(r.window)}",
        f"- decided at: {r.decided_at}",
    ]
    lines += [f"- **alert**: {_md(a)}" for a in r.alerts]
    lines += [
        "",
        "## Checks",
        "",
        "| check | value | interval | threshold | verdict | detail |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.name} | {fmt(c.value)} | {interval_text(c)} | {fmt(c.threshold)} | {c.verdict.upper()} | "
        f"{_md(c.detail)} |"
        for c in r.checks
    ]
    lines += ["", "## Metrics on the window", "", "| metric | challenger | champion |", "|---|---|---|"]
    for k in _metric_keys(r.challenger_metrics, r.champion_metrics):
        lines.append(f"| {k} | {fmt(r.challenger_metrics.get(k))} | {fmt((r.champion_metrics or {}).get(k))} |")
    if r.slices:
        lines += ["", "## Slices", "", "| column | value | rows | challenger AUC | champion AUC | gated |"]
        lines.append("|---|---|---|---|---|---|")
        for row in _slice_rows(r.slices):
            lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def render_html(report: GateReport) -> str:
    """A self-contained HTML page: verdict banner, alerts, checks table, metrics and slice tables."""
    e, r = html.escape, report
    colour = "#1b7f3b" if r.passed else "#b3261e"
    checks = "".join(
        f"<tr><td>{e(c.name)}</td><td>{e(fmt(c.value))}</td><td>{e(interval_text(c))}</td>"
        f"<td>{e(fmt(c.threshold))}</td>"
        f'<td style="{_VERDICT_STYLE[c.verdict]}">{c.verdict.upper()}</td><td>{e(c.detail)}</td></tr>'
        for c in r.checks
    )
    metrics = "".join(
        f"<tr><td>{e(k)}</td><td>{e(fmt(r.challenger_metrics.get(k)))}</td>"
        f"<td>{e(fmt((r.champion_metrics or {}).get(k)))}</td></tr>"
        for k in _metric_keys(r.challenger_metrics, r.champion_metrics)
    )
    slices = "".join("<tr>" + "".join(f"<td>{e(fmt(v))}</td>" for v in row) + "</tr>" for row in _slice_rows(r.slices))
    alerts = "".join(f'<p class="alert">Alert: {e(a)}</p>' for a in r.alerts)
    champion = f"v{e(r.champion_version)}" if r.champion_version else "none (first model)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Gate report: {e(r.dataset)} v{e(str(r.challenger_version))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
.banner {{ background: {colour}; color: white; padding: 1rem 1.5rem; font-size: 1.4rem; border-radius: 6px; }}
.alert {{ background: #fff4e5; border-left: 4px solid #e08a00; padding: .5rem 1rem; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .7rem; text-align: left; }}
th {{ background: #f3f3f3; }}
</style></head><body>
<h1>Gate report: {e(r.dataset)} v{e(str(r.challenger_version))}</h1>
<div class="banner">{e(_banner(r, ": "))}</div>
{alerts}
<p>Challenger v{e(str(r.challenger_version))} &middot; champion {champion} &middot;
window {e(window_text(r.window))} &middot; decided at {e(r.decided_at)}</p>
<h2>Checks</h2>
<table><tr><th>check</th><th>value</th><th>interval</th><th>threshold</th><th>verdict</th><th>detail</th></tr>{checks}</table>
<h2>Metrics on the window</h2>
<table><tr><th>metric</th><th>challenger</th><th>champion</th></tr>{metrics}</table>
<h2>Slices</h2>
<table><tr><th>column</th><th>value</th><th>rows</th><th>challenger AUC</th><th>champion AUC</th><th>gated</th></tr>
{slices}</table>
</body></html>
"""
