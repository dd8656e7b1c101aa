"""Security: no secret in the repository (scripts/secret_scan.py, which also catches secrets planted in a temp
dir), bandit clean against its documented baseline (docs/security.md), and a real `airflow api-server` refusing
unauthenticated requests to the REST API and to the model-health plugin while a token gets through.
Path traversal in `source_uri` is in test_corrupt_input.py; compose secrets in tests/unit/test_compose.py."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.reliability

sys.path.insert(0, str(REPO / "scripts"))
import secret_scan  # noqa: E402


def test_repository_has_no_secrets():
    proc = subprocess.run([sys.executable, "scripts/secret_scan.py"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert "0 finding(s)" in proc.stderr


def _planted() -> dict[str, str]:
    """One file per rule, each holding a made-up secret built at run time (so this file holds none)."""
    rnd = secrets.token_urlsafe
    b64 = secrets.token_urlsafe(32)[:43] + "="
    key_id = "AKIA" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ234567") for _ in range(16))
    return {
        "key.pem": "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIE" + rnd(40) + "\n",
        "aws.py": f'AWS_KEY_ID = "{key_id}"\n',
        "aws.cfg": "aws_secret_access_key = " + secrets.token_hex(20) + "\n",
        "airflow.env": "AIRFLOW__CORE__FERNET_KEY=" + b64 + "\n",
        "jwt.yaml": "jwt_secret: " + rnd(48) + "\n",
        "settings.py": f'db_password = "{rnd(12)}"\n',
        "compose.yaml": "    POSTGRES_PASSWORD: " + rnd(12) + "\n",
        "conn.md": f"postgresql://airflow:{rnd(10)}@db:5432/airflow\n",
        "token.txt": "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiJhZG1pbiJ9." + rnd(30) + "\n",
    }


EXPECTED_RULES = {
    "key.pem": "private_key",
    "aws.py": "aws_access_key_id",
    "aws.cfg": "aws_secret_access_key",
    "airflow.env": "fernet_key",
    "jwt.yaml": "jwt_secret",
    "settings.py": "password_or_token",
    "compose.yaml": "config_password_or_token",
    "conn.md": "url_with_password",
    "token.txt": "jwt_token",
}


def test_scan_catches_planted_secrets_and_ignores_references(tmp_path):
    for name, text in _planted().items():
        (tmp_path / name).write_text(text)
    (tmp_path / "clean.yaml").write_text(
        "AIRFLOW__API_AUTH__JWT_SECRET: ${AIRFLOW_JWT_SECRET:?set it in .env}\n"
        "password: ${POSTGRES_PASSWORD}\n"
        "AIRFLOW__CORE__FERNET_KEY: '{{ var.fernet }}'\n"
    )
    (tmp_path / "clean.py").write_text('token = os.environ["API_TOKEN"]\npassword = getpass()\n')
    found = secret_scan.scan(tmp_path)
    by_file = {}
    for f in found:
        by_file.setdefault(f.path, set()).add(f.rule)
    for name, rule in EXPECTED_RULES.items():
        assert rule in by_file.get(name, set()), (name, by_file.get(name))
    assert "clean.yaml" not in by_file
    assert "clean.py" not in by_file
    # the command line fails on them, and never prints a whole secret
    proc = subprocess.run([sys.executable, str(REPO / "scripts/secret_scan.py"), str(tmp_path)], capture_output=True)
    assert proc.returncode == 1
    settings = (tmp_path / "settings.py").read_text().split('"')[1]
    assert settings not in proc.stdout.decode()


def test_bandit_finds_nothing_beyond_the_documented_baseline():
    bandit = str(REPO / ".venv" / "bin" / "bandit") if (REPO / ".venv/bin/bandit").exists() else "bandit"
    cmd = [bandit, "-q", "-c", "pyproject.toml", "-r", "include", "dags", "plugins", "scripts"]
    proc = subprocess.run([*cmd, "-b", "docs/bandit-baseline.json"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    # every baselined finding is explained in docs/security.md
    baseline = json.loads((REPO / "docs/bandit-baseline.json").read_text())["results"]
    doc = (REPO / "docs/security.md").read_text()
    for r in baseline:
        assert r["test_id"] in doc, r
        assert r["filename"] in doc, r


# -- the api-server ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_server(airflow_db, tmp_path_factory):
    """A real `airflow api-server` (SimpleAuthManager, one user with a known password) with the repo's plugins."""
    from tests.ui.conftest import _start_api_server, _stop, _wait_ready

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path_factory.mktemp("api-server")
    password = secrets.token_urlsafe(16)
    proc = _start_api_server(home, port, password, {})
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}", home / "api-server.log")
        yield {"url": f"http://127.0.0.1:{port}", "password": password}
    finally:
        _stop(proc)


def _request(url: str, *, token: str | None = None, data: dict | None = None) -> int:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


PROTECTED = [
    ("/api/v2/dags", None),
    ("/api/v2/dags/flights_ingest/dagRuns", {"logical_date": None, "conf": {"source_uri": "/etc/passwd"}}),
    ("/api/v2/connections", None),
    ("/api/v2/variables", None),
    ("/api/v2/config", None),
    ("/mlops/api/health/flights", None),
    ("/mlops/reports/gate/flights/v1/gate.json", None),
]


@pytest.mark.parametrize(("path", "data"), PROTECTED, ids=[p for p, _ in PROTECTED])
def test_api_refuses_requests_without_a_valid_token(api_server, path, data):
    assert _request(api_server["url"] + path, data=data) == 401
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9." + secrets.token_urlsafe(32)
    assert _request(api_server["url"] + path, token=forged, data=data) in (401, 403)


def test_a_token_for_the_configured_user_gets_through(api_server):
    from tests.ui.conftest import USER

    req = urllib.request.Request(
        api_server["url"] + "/auth/token",
        data=json.dumps({"username": USER, "password": api_server["password"]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        token = json.loads(r.read())["access_token"]
    assert _request(api_server["url"] + "/api/v2/dags", token=token) == 200
    wrong = {"username": USER, "password": "wrong-" + secrets.token_hex(4)}
    assert _request(api_server["url"] + "/auth/token", data=wrong) == 401


def _pip_audit_with(tmp_path, stdout: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """scripts/pip_audit.py with ``pip-audit`` on PATH answering ``stdout`` (what the real one prints here when
    its service knows none of our packages, or a finding)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "pip-audit"
    tool.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\n")
    tool.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    return subprocess.run(
        [sys.executable, "scripts/pip_audit.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path, **env},
    )


def test_an_audit_that_audited_nothing_says_not_run_and_fails_when_required(tmp_path):
    nothing = json.dumps({"dependencies": [{"name": "pandas", "version": "2.3.3", "skip_reason": "not found"}]})
    proc = _pip_audit_with(tmp_path, nothing, {"MLOPS_REQUIRE_AUDIT": "0"})
    assert proc.returncode == 0
    assert proc.stdout.startswith("pip-audit NOT RUN: ")
    proc = _pip_audit_with(tmp_path, nothing, {"MLOPS_REQUIRE_AUDIT": "1"})
    assert proc.returncode == 2, proc.stdout
    assert "MLOPS_REQUIRE_AUDIT=1: failing" in proc.stdout
    found = {"name": "pandas", "version": "2.3.3", "vulns": [{"id": "PYSEC-0000-1", "fix_versions": ["9"]}]}
    proc = _pip_audit_with(tmp_path, json.dumps({"dependencies": [found]}), {})
    assert proc.returncode == 1
    assert "pandas 2.3.3: PYSEC-0000-1" in proc.stdout
