"""The lake: atomic partitions (manifest last), idempotent rewrites, readers that skip unfinished ones."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from include.mlops.storage import MANIFEST, Lake, LakeError, date_partition


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"carrier": ["UA", "AA", "B6"], "distance": [1400.0, 1089.0, 944.0], "flight": [1545, 1141, 725]}
    )


def test_write_and_read_roundtrip(lake, frame):
    m = lake.write_partition("raw", "flights", "date=2013-01-01", {"flights": frame}, source="test", run_id="r1")
    assert m.rows == 3
    assert lake.partitions("raw", "flights") == ["date=2013-01-01"]
    pd.testing.assert_frame_equal(lake.read_table("raw", "flights", "date=2013-01-01", "flights"), frame)
    stored = json.loads(lake.fs.cat_file(f"{lake.partition_path('raw', 'flights', 'date=2013-01-01')}/{MANIFEST}"))
    assert stored["rows"] == 3
    assert stored["run_id"] == "r1"
    assert stored["files"]["flights"]["schema"]["distance"] == "float64"


def test_rewrite_with_same_data_is_identical(lake, frame):
    a = lake.write_partition("validated", "flights", "date=2013-01-01", {"flights": frame}, source="s", run_id="r")
    files_a = sorted(lake.fs.ls(lake.partition_path("validated", "flights", "date=2013-01-01")))
    b = lake.write_partition(
        "validated", "flights", "date=2013-01-01", {"flights": frame.copy()}, source="s", run_id="r"
    )
    assert a.as_dict() == b.as_dict()
    assert sorted(lake.fs.ls(lake.partition_path("validated", "flights", "date=2013-01-01"))) == files_a


def test_rewrite_with_new_data_replaces_old_files(lake, frame):
    lake.write_partition("validated", "flights", "date=2013-01-01", {"flights": frame}, source="s")
    m = lake.write_partition("validated", "flights", "date=2013-01-01", {"flights": frame.head(1)}, source="s")
    base = lake.partition_path("validated", "flights", "date=2013-01-01")
    names = sorted(p.rsplit("/", 1)[-1] for p in lake.fs.ls(base))
    assert names == sorted([MANIFEST, m.files["flights"].path])
    assert len(lake.read_table("validated", "flights", "date=2013-01-01", "flights")) == 1


def test_crash_between_data_and_manifest_leaves_no_visible_partition(lake, frame, monkeypatch):
    real_put = lake._atomic_put

    def crash_on_manifest(target, data):
        if target.endswith(MANIFEST):
            raise KeyboardInterrupt("killed before the manifest")
        real_put(target, data)

    monkeypatch.setattr(lake, "_atomic_put", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        lake.write_partition("raw", "flights", "date=2013-01-02", {"flights": frame}, source="s")
    assert lake.fs.exists(lake.partition_path("raw", "flights", "date=2013-01-02"))  # data files are there
    assert lake.partitions("raw", "flights") == []
    assert lake.manifest("raw", "flights", "date=2013-01-02") is None
    with pytest.raises(LakeError, match="does not exist"):
        lake.read_table("raw", "flights", "date=2013-01-02", "flights")


def test_crash_during_rewrite_keeps_previous_version_readable(lake, frame, monkeypatch):
    lake.write_partition("validated", "flights", "date=2013-01-03", {"flights": frame}, source="s")
    real_put = lake._atomic_put
    monkeypatch.setattr(
        lake,
        "_atomic_put",
        lambda t, d: (_ for _ in ()).throw(OSError("disk gone")) if t.endswith(MANIFEST) else real_put(t, d),
    )
    with pytest.raises(OSError, match="disk gone"):
        lake.write_partition("validated", "flights", "date=2013-01-03", {"flights": frame.head(1)}, source="s")
    pd.testing.assert_frame_equal(lake.read_table("validated", "flights", "date=2013-01-03", "flights"), frame)


def test_readers_skip_manifest_less_partitions(lake, frame):
    lake.write_partition("raw", "flights", "date=2013-01-01", {"flights": frame}, source="s")
    stray = lake.partition_path("raw", "flights", "date=2013-01-05")
    lake.fs.makedirs(stray, exist_ok=True)
    lake.fs.pipe_file(f"{stray}/flights-abc.parquet", b"half written")
    assert lake.partitions("raw", "flights") == ["date=2013-01-01"]


def test_blobs_are_kept_byte_for_byte(lake, frame):
    lake.write_partition(
        "raw", "flights", "date=2013-01-01", {"flights": frame}, source="s", blobs={"upload.csv": b"\xff\xfe bad"}
    )
    assert lake.read_blob("raw", "flights", "date=2013-01-01", "upload.csv") == b"\xff\xfe bad"


def test_garbage_object_columns_still_land(lake):
    df = pd.DataFrame({"distance": [1.0, "far", None]})
    m = lake.write_partition("raw", "flights", "date=2013-01-01", {"flights": df}, source="s")
    assert m.rows == 3


def test_delete_partition(lake, frame):
    lake.write_partition("quarantine", "flights", "date=2013-01-01", {"flights": frame}, source="s")
    lake.delete_partition("quarantine", "flights", "date=2013-01-01")
    assert lake.partitions("quarantine", "flights") == []


@pytest.mark.parametrize(
    ("zone", "dataset", "partition", "problem"),
    [
        ("nowhere", "flights", "date=2013-01-01", "unknown zone"),
        ("raw", "flights", "../etc", "key=value"),
        ("raw", "..", "date=2013-01-01", "invalid lake path"),
    ],
)
def test_bad_paths_are_refused(lake, frame, zone, dataset, partition, problem):
    with pytest.raises(LakeError, match=problem):
        lake.write_partition(zone, dataset, partition, {"flights": frame}, source="s")


def test_date_partition():
    assert date_partition("2013-01-01T00:00:00") == "date=2013-01-01"


def test_raw_is_append_only_and_every_version_stays_readable(lake, frame):
    """Issue 21, class 7: a later upload of a day never deletes the raw data an earlier version pointed to."""
    part = "date=2013-01-01"
    first = lake.write_partition("raw", "flights", part, {"flights": frame}, source="s", blobs={"upload.csv": b"a,b\n"})
    second = lake.write_partition("raw", "flights", part, {}, source="s", blobs={"upload.csv": b"garbage"})
    assert lake.manifest("raw", "flights", part).sha256 == second.sha256 != first.sha256
    kept = lake.manifest_version("raw", "flights", part, first.sha256)
    assert kept == first
    pd.testing.assert_frame_equal(lake.read_version(kept, "flights"), frame)
    base = lake.partition_path("raw", "flights", part)
    assert lake.fs.cat_file(f"{base}/{kept.files['upload.csv'].path}") == b"a,b\n"
    assert lake.read_blob("raw", "flights", part, "upload.csv") == b"garbage"
    assert lake.manifest_version("raw", "flights", part, "0" * 64) is None
    with pytest.raises(LakeError, match="append-only"):
        lake.delete_partition("raw", "flights", part)
    with pytest.raises(LakeError, match="versions are kept in"):
        lake.manifest_version("validated", "flights", part, first.sha256)
