"""pip-audit of the installed environment (the lock), where its vulnerability service answers.

Exit 1 when a vulnerability is known. When the service cannot be reached or knows none of our packages (here
PyPI's JSON API answers "not found" for every package: a plain pip-audit run then prints "No known
vulnerabilities found", a false all-clear), print ``pip-audit NOT RUN: <why>`` and exit 0 — or exit 2 with
``MLOPS_REQUIRE_AUDIT=1``, for CI that must not pass without an audit. No offline advisory database is on the
registries this machine reaches (``safety-db`` is a 2021 snapshot: it would miss five years of advisories and
so be another false all-clear). Service: MLOPS_PIP_AUDIT_SERVICE (``pypi`` default, or ``osv``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def not_run(why: str) -> int:
    """Say the audit did not happen; fail only when the environment demands an audit."""
    required = os.environ.get("MLOPS_REQUIRE_AUDIT") == "1"
    print(f"pip-audit NOT RUN: {why}" + (" (MLOPS_REQUIRE_AUDIT=1: failing)" if required else ""))
    return 2 if required else 0


def main() -> int:
    service = os.environ.get("MLOPS_PIP_AUDIT_SERVICE", "pypi")
    cmd = [
        "pip-audit",
        "--vulnerability-service",
        service,
        "--skip-editable",
        "--progress-spinner",
        "off",
        "-f",
        "json",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return not_run(f"the {service} vulnerability service did not answer within 600 s")
    try:
        deps = json.loads(proc.stdout)["dependencies"]
    except (json.JSONDecodeError, KeyError):
        return not_run(f"the {service} vulnerability service is not reachable:\n{proc.stderr.strip()[-1500:]}")
    audited = [d for d in deps if "skip_reason" not in d]
    if not audited:
        reason = deps[0]["skip_reason"] if deps else "no dependencies listed"
        return not_run(f"the {service} service audited none of {len(deps)} packages (e.g. {reason})")
    vulnerable = [d for d in audited if d.get("vulns")]
    for d in vulnerable:
        for v in d["vulns"]:
            print(f"{d['name']} {d['version']}: {v['id']} (fixed in {', '.join(v.get('fix_versions', [])) or '-'})")
    skipped = len(deps) - len(audited)
    print(f"pip-audit ({service}): {len(audited)} packages audited, {skipped} skipped, {len(vulnerable)} vulnerable")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
