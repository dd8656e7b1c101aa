"""Manual-ingest file guard against URL chaining and the check-then-open race (docs/security.md)."""

from __future__ import annotations

import os
import uuid

import pytest

from include.mlops import sources
from include.mlops.sources import InputRefused, fetch_upload
from tests.unit.test_sources import drop, outside  # noqa: F401 (fixtures)


@pytest.fixture
def secret(outside):  # noqa: F811
    path = outside / "secret.csv"
    path.write_text("carrier\nSECRET\n")
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda d, secret: f"simplecache::file://{d}/ok.csv",
        lambda d, secret: f"file://{d}/ok.csv::file://{secret}",
        lambda d, secret: f"{d}/ok.csv::file://{secret}",
        lambda d, secret: f"blockcache::{d}/ok.csv",
        lambda d, secret: f"zip://secret.csv::file://{d}/ok.csv",
    ],
    ids=["cache-prefix", "file-chain", "path-chain", "blockcache", "zip-chain"],
)
def test_url_chaining_is_refused(spec, drop, secret, make):  # noqa: F811
    (drop / "ok.csv").write_text("carrier\nUA\n")
    with pytest.raises(InputRefused, match=r"^path_not_allowed: "):
        fetch_upload(spec, make(drop, secret))


def test_a_symlink_swapped_in_after_the_check_is_refused(spec, drop, secret, monkeypatch):  # noqa: F811
    """The race, made deterministic: the path check passes on a real file in landing, then the file becomes a
    symlink to a file outside before it is opened. What was opened is checked again, so the secret is not read."""
    target = drop / "upload.csv"
    target.write_text("carrier\nUA\n")
    check = sources._is_under
    swapped = []

    def check_then_swap(uri, roots):
        ok = check(uri, roots)
        if not swapped:
            os.replace(_symlink_to(secret, drop), target)  # atomic swap, as an attacker would do it
            swapped.append(uri)
        return ok

    monkeypatch.setattr(sources, "_is_under", check_then_swap)
    with pytest.raises(InputRefused, match=r"^path_not_allowed: .*outside the allowed roots"):
        fetch_upload(spec, str(target))
    assert swapped


def _symlink_to(target, folder):
    link = folder / f".link-{uuid.uuid4().hex}"
    link.symlink_to(target)
    return link


@pytest.mark.parametrize(
    "header",
    [
        "carrier,</script><script>alert(1)</script>",
        "carrier,<img src=x onerror=alert(1)>",
        'carrier,"a b"',
        "carrier,1x",
    ],
)
def test_a_csv_header_that_is_not_identifiers_is_refused(spec, drop, header):  # noqa: F811
    path = drop / "flights.csv"
    path.write_text(f"{header}\nUA,1\n")
    with pytest.raises(InputRefused, match=r"^bad_header: .*column names must be identifiers"):
        fetch_upload(spec, str(path))


def test_a_parquet_schema_that_is_not_identifiers_is_refused(spec, drop):  # noqa: F811
    import pandas as pd

    path = drop / "flights.parquet"
    pd.DataFrame({"carrier": ["UA"], "<svg onload=alert(1)>": [1]}).to_parquet(path)
    with pytest.raises(InputRefused, match=r"^bad_header: "):
        fetch_upload(spec, str(path))
    pd.DataFrame({"carrier": ["UA"], "dep_delay": [1]}).to_parquet(path)
    assert fetch_upload(spec, str(path))[0] == "parquet"
