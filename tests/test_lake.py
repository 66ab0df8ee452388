"""The lake's snapshot contract, on a local disk and on a real S3 API server on loopback."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from platform_assets.resources.lake import POINTER, LakeResource
from platform_assets.tenancy.isolation import IsolationError

T1 = pa.table({"id": [1, 2, 3], "x": [0.1, 0.2, 0.3]})
T2 = pa.table({"id": [4, 5], "x": [0.4, 0.5]})


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path) -> LakeResource:
    if request.param == "local":
        return LakeResource(root=str(tmp_path / "lake"))
    bucket = request.getfixturevalue("s3_bucket")
    return LakeResource(root=f"s3://{bucket}/lake")


def test_write_commits_a_versioned_snapshot(lake):
    first = lake.write("payments", "sources", "tx", T1)
    assert first.version and len(first.version) == 16
    assert first.uri.endswith(f"payments/sources/tx/{first.version}.parquet")
    assert lake.current("payments", "sources", "tx") == first
    assert lake.read("payments", "sources", "tx").equals(T1)
    second = lake.write("payments", "sources", "tx", T2)
    assert second.version != first.version
    assert lake.read("payments", "sources", "tx").equals(T2)
    # The old version stays readable by version: snapshots are immutable.
    assert lake.read("payments", "sources", "tx", first.version).equals(T1)
    assert lake.snapshot("payments", "sources", "tx", first.version).uri == first.uri
    assert lake.names("payments", "sources") == ["tx"]


def test_the_version_is_the_content_hash(lake):
    a = lake.write("payments", "sources", "tx", T1)
    b = lake.write("payments", "features", "tx", T1)
    assert a.version == b.version
    assert lake.write("payments", "sources", "tx", T2).version != a.version
    # The same content again is the same snapshot: not rewritten, first written at `a`.
    assert lake.write("payments", "sources", "tx", T1) == a
    assert lake.current("payments", "sources", "tx") == a


def test_a_staged_snapshot_is_not_current_until_committed(lake):
    first = lake.write("payments", "sources", "tx", T1)
    staged = lake.write("payments", "sources", "tx", T2, commit=False)
    assert lake.current("payments", "sources", "tx") == first
    assert lake.read("payments", "sources", "tx").equals(T1)
    lake.commit(staged)
    assert lake.current("payments", "sources", "tx").version == staged.version
    assert lake.read("payments", "sources", "tx").equals(T2)


def test_a_failed_write_leaves_the_previous_version(lake):
    first = lake.write("payments", "sources", "tx", T1)

    # Parquet has no interval type: pyarrow fails inside the write.
    unwritable = pa.table({"id": [1], "gap": pa.array([(1, 2, 3)], pa.month_day_nano_interval())})
    with pytest.raises(pa.ArrowNotImplementedError):
        lake.write("payments", "sources", "tx", unwritable)
    assert lake.current("payments", "sources", "tx") == first
    assert lake.read("payments", "sources", "tx").equals(T1)
    fs, base = lake.filesystem()
    files = fs.get_file_info(pafs.FileSelector(f"{base}/payments/sources/tx"))
    assert sorted(f.base_name for f in files) == sorted([POINTER, f"{first.version}.parquet"])


def test_reading_an_asset_never_written_names_it(lake):
    with pytest.raises(FileNotFoundError, match="payments/sources/tx has no committed snapshot"):
        lake.current("payments", "sources", "tx")
    with pytest.raises(FileNotFoundError, match="materialize payments/sources/tx first"):
        lake.read("payments", "sources", "tx")


def test_a_missing_version_names_the_snapshot(lake):
    lake.write("payments", "sources", "tx", T1)
    with pytest.raises(FileNotFoundError, match=r"payments/sources/tx@00000000deadbeef"):
        lake.snapshot("payments", "sources", "tx", "00000000deadbeef")
    with pytest.raises(ValueError, match="a version is 16 hex digits"):
        lake.read("payments", "sources", "tx", "../../growth/x")


def test_prune_keeps_the_current_snapshot_and_recent_ones(tmp_path):
    lake = LakeResource(root=str(tmp_path / "lake"))
    old = lake.write("payments", "sources", "tx", T1)
    current = lake.write("payments", "sources", "tx", T2)
    recent = lake.write("payments", "sources", "tx", pa.table({"id": [9]}), commit=False)
    csv = lake.attach(old, "csv", b"id\n1\n")
    when = (datetime.now(UTC) - timedelta(days=91)).timestamp()
    for path in (old.uri, current.uri, csv):  # 91 days old; the current one stays all the same
        os.utime(path, (when, when))
    deleted = lake.prune()
    assert [(s.version, s.name) for s in deleted] == [(old.version, "tx")]
    assert not os.path.exists(old.uri) and not os.path.exists(csv)
    assert lake.current("payments", "sources", "tx").version == current.version
    assert lake.snapshot("payments", "sources", "tx", recent.version)
    with pytest.raises(FileNotFoundError, match=f"tx@{old.version} does not exist.*pruned"):
        lake.read("payments", "sources", "tx", old.version)
    assert lake.prune() == []


def test_prune_on_s3(s3_bucket):
    lake = LakeResource(root=f"s3://{s3_bucket}/lake")
    old = lake.write("growth", "features", "f", T1)
    current = lake.write("growth", "features", "f", T2)
    assert lake.prune() == []  # both were written seconds ago
    # S3 keeps its own modification times, so age the snapshots by moving the cutoff instead.
    deleted = lake.prune(retention_days=0)
    assert [s.version for s in deleted] == [old.version]
    assert lake.current("growth", "features", "f") == current
    with pytest.raises(FileNotFoundError, match=f"f@{old.version}"):
        lake.read("growth", "features", "f", old.version)


@pytest.mark.parametrize("days", [-1, float("nan")])
def test_prune_refuses_a_bad_retention(tmp_path, days):
    with pytest.raises(ValueError, match="retention_days must be a number >= 0"):
        LakeResource(root=str(tmp_path)).prune(days)


def test_s3_snapshots_live_in_the_bucket(s3_bucket, s3_endpoint):
    import boto3

    lake = LakeResource(root=f"s3://{s3_bucket}/lake")
    snap = lake.write("ridehail", "sources", "trips", T1)
    assert snap.uri == f"s3://{s3_bucket}/lake/ridehail/sources/trips/{snap.version}.parquet"
    keys = {
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=s3_bucket)[
            "Contents"
        ]
    }
    assert keys == {
        f"lake/ridehail/sources/trips/{snap.version}.parquet",
        "lake/ridehail/sources/trips/current.json",
    }


def test_s3_endpoint_and_credentials_from_resource_config(s3_bucket, s3_endpoint, monkeypatch):
    """Endpoint in config, credentials as dg.EnvVar under names of the platform's choosing."""
    import dagster as dg

    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("LAKE_KEY", "mlplat-test")
    monkeypatch.setenv("LAKE_SECRET", "mlplat-test-secret")
    lake = LakeResource(
        root=f"s3://{s3_bucket}/lake",
        endpoint_url=s3_endpoint,
        access_key_id=dg.EnvVar("LAKE_KEY"),
        secret_access_key=dg.EnvVar("LAKE_SECRET"),
    )
    assert "mlplat-test-secret" not in repr(lake)
    snap = lake.write("growth", "sources", "events", T1)
    assert lake.read("growth", "sources", "events").equals(T1)
    assert lake.s3_endpoint() == s3_endpoint
    assert "secret" not in snap.uri


def test_the_nightly_retention_job_prunes_with_the_platform_retention(tmp_path, instance):
    from platform_assets.storage.retention import lake_retention, lake_retention_schedule

    lake = LakeResource(root=str(tmp_path / "lake"), retention_days=30)
    old = lake.write("ridehail", "features", "f", T1)
    lake.write("ridehail", "features", "f", T2)
    when = (datetime.now(UTC) - timedelta(days=31)).timestamp()
    os.utime(old.uri, (when, when))
    result = lake_retention.execute_in_process(resources={"lake": lake}, instance=instance)
    assert result.output_for_node("prune_lake") == 1
    assert not os.path.exists(old.uri)
    assert lake_retention_schedule.default_status.value == "RUNNING"


def test_any_fsspec_filesystem(tmp_path):
    """A scheme pyarrow has no filesystem for goes through fsspec (here its memory store)."""
    lake = LakeResource(root=f"memory://{tmp_path.name}/lake")
    first = lake.write("growth", "sources", "events", T1)
    assert first.uri.startswith("memory://")
    assert f"{tmp_path.name}/lake/growth/sources/events/{first.version}.parquet" in first.uri
    staged = lake.write("growth", "sources", "events", T2, commit=False)
    assert lake.read("growth", "sources", "events").equals(T1)
    lake.commit(staged)
    assert lake.read("growth", "sources", "events").equals(T2)


def test_s3_credentials_reach_the_lake_as_env_var_references(monkeypatch, platform_home):
    """The deployment's resources name the secret's variable; its value is in no config."""
    import dagster as dg

    from platform_assets.resources.deployment import resources_for

    monkeypatch.setenv("MLPLAT_LAKE_URI", "s3://bucket/lake")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    lake = resources_for("local")["lake"]
    assert lake.secret_access_key == dg.EnvVar("AWS_SECRET_ACCESS_KEY")
    assert "s3cr3t-value" not in repr(lake) and "AKIAEXAMPLE" not in repr(lake)


def test_append_only_log_batches_read_back_together(lake):
    assert lake.batches("payments", "serving", "fraud_detector") is None
    lake.append("payments", "serving", "fraud_detector", T1)
    uri = lake.append("payments", "serving", "fraud_detector", T2)
    assert "/payments/serving/fraud_detector/log/" in uri
    table = lake.batches("payments", "serving", "fraud_detector")
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3, 4, 5]
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert lake.batches("payments", "serving", "fraud_detector", since=tomorrow) is None
    # A log is not a snapshot: snapshot retention never touches it, `names` does not list it.
    assert lake.prune(retention_days=0) == []
    assert lake.names("payments", "serving") == []
    assert lake.batches("payments", "serving", "fraud_detector").num_rows == 5


def test_log_days_older_than_the_retention_period_are_pruned(lake):
    lake.append("payments", "serving", "fraud_detector", T1)
    # Today's batches are kept until today is more than the period ago (0 days: tomorrow).
    assert lake.prune_logs(retention_days=0) == []
    old_day = f"{datetime.now(UTC) - timedelta(days=91):%Y-%m-%d}"
    fs, base = lake.filesystem()
    folder = f"{base}/payments/serving/fraud_detector/log/{old_day}"
    if lake.is_local:
        fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(f"{folder}/000000-old.parquet") as out:
        pq.write_table(T2, out)
    assert lake.batches("payments", "serving", "fraud_detector").num_rows == 5
    deleted = lake.prune_logs()
    assert [u.rsplit("/", 2)[-2:] for u in deleted] == [[old_day, "000000-old.parquet"]]
    assert lake.batches("payments", "serving", "fraud_detector").num_rows == 3
    assert lake.prune_logs() == []


def test_append_refuses_another_tenants_prefix(lake):
    with pytest.raises(IsolationError, match="outside tenant 'ridehail''s prefix"):
        lake.append("ridehail", "serving", "../../payments/serving/x", T1)


def test_a_batch_appended_again_is_the_same_object_and_logs_list_in_batch_time(lake):
    """What makes a retried append exactly-once: a batch id and time name one object."""
    early = datetime(2026, 3, 1, 10, 0, 0, 1, tzinfo=UTC)
    late = early + timedelta(seconds=1)
    # Landed out of order: a listing follows the batches' times, not when they landed.
    first = lake.append("payments", "serving", "fraud_detector", T2, batch="b" * 12, at=late)
    lake.append("payments", "serving", "fraud_detector", T1, batch="a" * 12, at=early)
    again = lake.append("payments", "serving", "fraud_detector", T2, batch="b" * 12, at=late)
    assert again == first
    files = lake.log_files("payments", "serving", "fraud_detector")
    assert [f.rsplit("/", 2)[-2:] for f in files] == [
        ["2026-03-01", f"100000000001-{'a' * 12}.parquet"],
        ["2026-03-01", f"100001000001-{'b' * 12}.parquet"],
    ]
    table = lake.batches("payments", "serving", "fraud_detector")
    assert table.column("id").to_pylist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch": "../x"}, r"batch id '\.\./x' is not 12-32 hex"),
        ({"batch": "ABCDEF012345"}, "is not 12-32 hex"),
        ({"at": datetime(2026, 3, 1)}, "batch time 2026-03-01 00:00:00 has no time zone"),
    ],
)
def test_append_refuses_a_bad_batch_name(tmp_path, kwargs, message):
    lake = LakeResource(root=str(tmp_path / "lake"))
    with pytest.raises(ValueError, match=message):
        lake.append("payments", "serving", "fraud_detector", T1, **kwargs)
    assert lake.log_files("payments", "serving", "fraud_detector") == []
