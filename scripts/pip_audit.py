"""pip-audit of the installed environment (the lock), where its vulnerability service answers.

Exit 1 when a vulnerability is known; exit 0 with ``pip-audit SKIPPED`` when the service cannot be reached or
knows none of our packages (here PyPI's JSON API answers "not found" for every package: a plain pip-audit
run then prints "No known vulnerabilities found", which would be a false all-clear). Service:
MLOPS_PIP_AUDIT_SERVICE (``pypi`` default, or ``osv``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


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
        print(f"pip-audit SKIPPED: the {service} vulnerability service did not answer within 600 s")
        return 0
    try:
        deps = json.loads(proc.stdout)["dependencies"]
    except (json.JSONDecodeError, KeyError):
        print(
            f"pip-audit SKIPPED: the {service} vulnerability service is not reachable:\n{proc.stderr.strip()[-1500:]}"
        )
        return 0
    audited = [d for d in deps if "skip_reason" not in d]
    if not audited:
        reason = deps[0]["skip_reason"] if deps else "no dependencies listed"
        print(f"pip-audit SKIPPED: the {service} service audited none of {len(deps)} packages (e.g. {reason})")
        return 0
    vulnerable = [d for d in audited if d.get("vulns")]
    for d in vulnerable:
        for v in d["vulns"]:
            print(f"{d['name']} {d['version']}: {v['id']} (fixed in {', '.join(v.get('fix_versions', [])) or '-'})")
    skipped = len(deps) - len(audited)
    print(f"pip-audit ({service}): {len(audited)} packages audited, {skipped} skipped, {len(vulnerable)} vulnerable")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
