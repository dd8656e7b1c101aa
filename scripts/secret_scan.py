"""Scan a tree for committed secrets: private keys, AWS keys, tokens and passwords assigned literal values,
Fernet keys, JWT secrets. Exit 1 and list every finding (file:line: rule) when one is found.

    python scripts/secret_scan.py [ROOT]      # default: the repository; files git tracks (or all, outside git)

A finding is a literal value: references (``${VAR}``, ``$VAR``, ``os.environ[...]``, ``{{ ... }}``), empty
values and obvious placeholders (``changeme``, ``<...>``, ``xxx``) are not secrets. Known false positives are
listed in ALLOWLIST with the reason (docs/security.md explains each).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RULES: dict[str, re.Pattern[str]] = {
    "private_key": re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    "aws_access_key_id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "aws_secret_access_key": re.compile(r"(?i)aws_?secret_?access_?key\s*[:=]\s*[\"']?(?P<value>[A-Za-z0-9/+=]{40})\b"),
    "fernet_key": re.compile(r"(?i)fernet_?key\s*[:=]\s*[\"']?(?P<value>[A-Za-z0-9_-]{43}=)"),
    "jwt_secret": re.compile(r"(?i)jwt_?secret\w*\s*[:=]\s*[\"']?(?P<value>[^\s\"'#,}]{8,})"),
    "password_or_token": re.compile(
        r"(?i)\b\w*(?:password|passwd|secret|token|api_?key)\w*\s*[:=]\s*[\"'](?P<value>[^\"'\s]{6,})[\"']"
    ),
    # unquoted values (YAML, .env, ini, shell): only in config files, where code identifiers do not occur
    "config_password_or_token": re.compile(
        r"(?i)^\s*(?:export\s+|-\s+)?[\w.-]*(?:password|passwd|secret|token|api_?key)[\w.-]*\s*[:=]\s*"
        r"(?P<value>[^\s\"'#]{6,})\s*(?:#.*)?$"
    ),
    "url_with_password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:(?P<value>[^@\s/]{3,})@[^\s]+"),
    "jwt_token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}

# Values that are references or placeholders, never secrets.
_NOT_A_VALUE = re.compile(
    r"""^(?:\$\{?[A-Za-z_][A-Za-z0-9_]*.*|\{\{.*|<[^>]*>|changeme|change-me|xxx+|\*+|example\w*|dummy\w*|none|null|
    pass(?:word)?|secret|(?:not[-_]a|invalid|wrong|bad|fake)[-_\w]*|
    (?:os\.)?environ.*|getenv.*|secrets\..*|self\..*|f?["']?\{.*)$""",
    re.IGNORECASE | re.VERBOSE,
)

# (path glob, rule, text the line contains): why it is not a secret is in docs/security.md.
ALLOWLIST: list[tuple[str, str, str]] = [
    # a path to the file Airflow reads passwords from, not a password
    ("docker-compose.yaml", "config_password_or_token", "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"),
    # this scanner's own tests plant fake secrets in a temp dir; the patterns live in their source
    ("tests/reliability/test_security.py", "*", ""),
]

CONFIG_SUFFIXES = {".yaml", ".yml", ".env", ".ini", ".cfg", ".conf", ".toml", ".sh", ".properties"}
CONFIG_NAMES = {"Dockerfile", ".env.example", "Makefile"}

SKIP_SUFFIXES = {".png", ".jpg", ".gif", ".ico", ".parquet", ".zip", ".gz", ".db", ".sqlite", ".pyc", ".whl"}
SKIP_NAMES = {"requirements.lock"}  # hashes and pins only


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.excerpt}"


def files(root: Path) -> list[Path]:
    """The files git tracks under ``root`` (plus untracked, not ignored ones), or every file outside git."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
        ).stdout
        return [root / p for p in out.decode().split("\0") if p]
    except (subprocess.CalledProcessError, FileNotFoundError):
        return [p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts]


def _allowed(rel: str, rule: str, line: str) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(rel, g) and r in ("*", rule) and text in line for g, r, text in ALLOWLIST)


def _redact(line: str, value: str | None) -> str:
    line = line.strip()
    if value and len(value) > 4:
        line = line.replace(value, value[:2] + "…")
    return line[:160]


def scan(root: Path) -> list[Finding]:
    """Every finding under ``root``."""
    found = []
    for path in files(root):
        if path.suffix.lower() in SKIP_SUFFIXES or path.name in SKIP_NAMES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(root).as_posix()
        config = path.suffix.lower() in CONFIG_SUFFIXES or path.name in CONFIG_NAMES or path.name.startswith(".env")
        rules = {r: p for r, p in RULES.items() if config or r != "config_password_or_token"}
        for n, line in enumerate(text.splitlines(), start=1):
            for rule, pattern in rules.items():
                for m in pattern.finditer(line):
                    value = m.groupdict().get("value")
                    if value is not None and _NOT_A_VALUE.match(value):
                        continue
                    if not _allowed(rel, rule, line):
                        found.append(Finding(rel, n, rule, _redact(line, value)))
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else ROOT
    found = scan(root)
    for f in found:
        print(f)
    print(f"secret scan of {root}: {len(found)} finding(s) in {len(files(root))} files", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
