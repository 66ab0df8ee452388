"""A new file in a tenant's inbox starts its pipeline (issue #23 item 3): one run per new,
complete version of a Source's file, on a local and an S3 lake, held back over budget."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import dagster as dg
import pytest
import yaml

from platform_assets.cost.budget import budget_status
from platform_assets.data.generator import generate
from platform_assets.sources import component
from platform_assets.sources.component import INBOX_FILE_TAG, file_version
from platform_assets.sources.sensors import SETTLE_SECONDS, inbox_sensor
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.limits import limits_for
from platform_assets.tenancy.runs import REASON_TAG
from tests.cost.conftest import grant_override, record_step
from tests.platform_sandbox import DEMO_DEFS, sandbox

pytestmark = pytest.mark.materialize

TRIPS = dg.AssetKey(["ridehail", "sources", "trips"])
# Short, so that the tests wait for real rather than fake the clock.
SETTLE = 1.0


@dataclass
class Inbox:
    """ridehail with `trips` read from `trips.csv` in its inbox and `on_new_file: true`, and its
    sensor built with a short settle time, ticked as the daemon would (cursor carried over)."""

    defs: dg.Definitions
    instance: dg.DagsterInstance
    sensor: dg.SensorDefinition
    file: Path  # the local inbox file (on S3: where the test's copy is staged)
    cursor: str | None = None

    def tick(self) -> dg.SkipReason | list[dg.RunRequest]:
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            repository_def=self.defs.get_repository_def(),
            resources=self.defs.resources,
        ) as context:
            result = self.sensor(context)
            self.cursor = context.cursor
        return result

    def requests(self) -> list[dg.RunRequest]:
        result = self.tick()
        return [] if isinstance(result, dg.SkipReason) else list(result)

    def settled(self, data: bytes) -> dg.RunRequest:
        """Deliver `data` whole and tick until it has settled: the one run it starts."""
        _deliver(self.file, data)
        assert not self.requests()  # first seen: not yet known to be complete
        _settle()
        (request,) = self.requests()
        return request

    def rows_read(self, request: dg.RunRequest) -> int:
        """Run the request's source step; the rows it read."""
        result = self.run_source(request)
        assert result.success
        [event] = result.get_asset_materialization_events()
        return event.materialization.metadata["dagster/row_count"].value

    def run_source(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """The request's source step, with the request's tags, as its run would execute it."""
        return (
            self.defs.resolve_job_def("ridehail_pipeline")
            .get_subset(asset_selection={TRIPS})
            .execute_in_process(
                instance=self.instance,
                tags=dict(request.tags),
                raise_on_error=False,
                resources=self.defs.resources,
            )
        )


def _watch_trips(root: Path) -> None:
    path = root / "ridehail" / "sources" / "trips" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    del doc["attributes"]["generator"]
    doc["attributes"]["path"] = "trips.csv"
    doc["attributes"]["on_new_file"] = True
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def trips_csv() -> bytes:
    return generate("ridehail.trips").to_csv(index=False).encode()


@pytest.fixture
def watched(monkeypatch, platform_home, instance) -> Iterator[Inbox]:
    with sandbox(monkeypatch) as (root, build):
        _watch_trips(root)
        defs = build()
        spec = load_all(root)["ridehail"].sources["trips"]
        inbox = Path(defs.resources["lake"].root) / "ridehail" / "inbox"
        inbox.mkdir(parents=True)
        sensor = inbox_sensor("ridehail", [spec], settle_seconds=SETTLE)
        yield Inbox(defs, instance, sensor, inbox / "trips.csv")


def _deliver(path: Path, data: bytes) -> None:
    """Deliver a file whole, as a careful writer does: written beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _settle() -> None:
    time.sleep(SETTLE + 0.1)


def test_the_sensor_is_the_tenants_running_one_with_the_platform_settle_time(watched):
    sensor = watched.defs.resolve_sensor_def("ridehail_inbox")
    assert sensor.job_name == "ridehail_pipeline"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert SETTLE_SECONDS == 30
    # The demo's tenants watch no file, so they have no inbox sensor.
    assert "payments_inbox" not in {s.name for s in watched.defs.sensors}


def test_a_new_file_starts_one_run_and_the_same_file_none(watched, trips_csv):
    result = watched.tick()
    assert result.skip_message == "no new file in ridehail's inbox (trips.csv)"

    _deliver(watched.file, trips_csv)
    # First seen: not yet known to be complete.
    assert watched.tick().skip_message == "waiting for trips.csv to stay unchanged for 1 s"
    _settle()
    (request,) = watched.requests()
    version = file_version(watched.file.stat())
    assert request.run_key == f"trips:{version}"
    assert request.job_name is None  # the sensor's own job, the tenant pipeline
    assert request.tags == {
        "tenant": "ridehail",
        REASON_TAG: "new file trips.csv in ridehail's inbox (source trips)",
        INBOX_FILE_TAG: f"trips:{version}",
    }
    selected = {k.to_user_string() for k in request.asset_selection}
    assert {
        "ridehail/sources/trips",
        "ridehail/features/driver_stats",
        "ridehail/features/zone_demand",
        "ridehail/training_sets/driver_churn",
        "ridehail/models/driver_churn",
        "ridehail/evaluation_reports/driver_churn",
    } <= selected
    # Not the other source, nor the cost asset the pipeline leaves out.
    assert "ridehail/sources/driver_churn_labels" not in selected
    assert "ridehail/cost" not in selected

    # The same file: no run, however long it sits there.
    _settle()
    assert watched.tick().skip_message == "no new file in ridehail's inbox (trips.csv)"

    # The run reads that file, whole.
    assert watched.rows_read(request) == len(generate("ridehail.trips"))


def test_a_replaced_file_starts_one_more_run(watched, trips_csv):
    first = watched.settled(trips_csv)
    second = watched.settled(generate("ridehail.trips").head(500).to_csv(index=False).encode())
    assert second.run_key != first.run_key
    assert second.tags[INBOX_FILE_TAG] == f"trips:{file_version(watched.file.stat())}"
    _settle()
    assert not watched.requests()
    assert watched.rows_read(second) == 500


def test_a_half_written_file_waits_until_it_stops_changing(watched, trips_csv):
    third = len(trips_csv) // 3
    with watched.file.open("wb") as writer:
        writer.write(trips_csv[:third])
        writer.flush()
        assert not watched.requests()
        # Longer than the settle time since first seen, but it changed: it waits again.
        _settle()
        writer.write(trips_csv[third : 2 * third])
        writer.flush()
        assert watched.tick().skip_message == "waiting for trips.csv to stay unchanged for 1 s"
        writer.write(trips_csv[2 * third :])
    assert not watched.requests()
    _settle()
    (request,) = watched.requests()
    assert request.tags[INBOX_FILE_TAG] == f"trips:{file_version(watched.file.stat())}"
    assert watched.rows_read(request) == len(generate("ridehail.trips"))


def test_the_step_refuses_a_file_written_again_after_the_sensor_saw_it(watched, trips_csv):
    request = watched.settled(trips_csv)
    seen = request.tags[INBOX_FILE_TAG].removeprefix("trips:")
    # A writer starts again (in place) before the run reads the file.
    with watched.file.open("ab") as writer:
        writer.write(trips_csv.splitlines(keepends=True)[1][:20])
    now = file_version(watched.file.stat())

    result = watched.run_source(request)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert (
        f"source ridehail/trips: {watched.file} changed after the inbox sensor saw it complete "
        f"(version {seen}, now {now}); not read, as it may be half-written: the sensor requests "
        "a run for the new file once it has settled"
    ) in failure.step_failure_data.error.cause.message
    lake = watched.defs.resources["lake"]
    with pytest.raises(FileNotFoundError):
        lake.current("ridehail", "sources", "trips")  # nothing was snapshotted

    # That version gets its own run once settled.
    assert not watched.requests()
    _settle()
    (again,) = watched.requests()
    assert again.tags[INBOX_FILE_TAG] == f"trips:{now}"


def test_a_file_written_while_it_is_read_is_refused(tmp_path, monkeypatch, trips_csv):
    lake = tmp_path / "lake"
    file = lake / "ridehail" / "inbox" / "trips.csv"
    file.parent.mkdir(parents=True)
    file.write_bytes(trips_csv)
    before = file_version(file.stat())
    spec = load_all(DEMO_DEFS)["ridehail"].sources["trips"]
    spec = spec.model_copy(update={"generator": None, "path": "trips.csv"})
    read = component.read_source

    def read_while_written(*args):
        rows = read(*args)
        with file.open("ab") as writer:  # a writer appends while the step reads
            writer.write(b"t9999999,d0001")
        return rows

    monkeypatch.setattr(component, "read_source", read_while_written)
    with pytest.raises(RuntimeError) as excinfo:
        component.load_source(str(lake), "ridehail", spec)
    assert str(excinfo.value) == (
        f"source ridehail/trips: {file} changed while it was read (version {before}, then "
        f"{file_version(file.stat())}): something is still writing it; run again once it is "
        "complete"
    )


def test_over_budget_the_file_waits_and_runs_once_allowed(
    watched, trips_csv, monkeypatch, tmp_path
):
    record_step(watched.instance, "ridehail", limits_for("ridehail").budget.monthly_usd + 1)
    _deliver(watched.file, trips_csv)
    assert watched.tick().skip_message.startswith("waiting for trips.csv")  # no budget asked yet
    _settle()
    result = watched.tick()
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == budget_status(watched.instance, "ridehail").message
    assert "over budget, new runs are not launched" in result.skip_message
    assert watched.tick().skip_message == result.skip_message  # still pending, not dropped

    grant_override(monkeypatch, tmp_path / "limits.yaml", "ridehail")
    (request,) = watched.requests()  # settled already: no new wait
    assert request.tags[INBOX_FILE_TAG] == f"trips:{file_version(watched.file.stat())}"
    assert not watched.requests()


# S3: an object is visible only once its upload has completed


@pytest.fixture
def watched_s3(monkeypatch, platform_home, instance, s3_bucket, s3_endpoint) -> Iterator[Inbox]:
    monkeypatch.setenv("MLPLAT_LAKE_URI", f"s3://{s3_bucket}/lake")
    with sandbox(monkeypatch) as (root, build):
        _watch_trips(root)
        defs = build()
        spec = load_all(root)["ridehail"].sources["trips"]
        # The production settle time: on S3 nothing waits for it.
        sensor = inbox_sensor("ridehail", [spec])
        yield Inbox(defs, instance, sensor, Path("lake/ridehail/inbox/trips.csv"))


def test_on_s3_a_new_object_starts_one_run_as_soon_as_it_is_visible(
    watched_s3, s3_bucket, s3_endpoint, trips_csv
):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    key = str(watched_s3.file)
    assert watched_s3.tick().skip_message == "no new file in ridehail's inbox (trips.csv)"

    # A multipart upload in progress is no object yet: nothing to see until it completes.
    upload = s3.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=1, Body=trips_csv)
    assert watched_s3.tick().skip_message == "no new file in ridehail's inbox (trips.csv)"
    s3.complete_multipart_upload(
        Bucket=s3_bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    (request,) = watched_s3.requests()
    head = s3.head_object(Bucket=s3_bucket, Key=key)
    etag = head["ETag"].strip('"')
    version = f"{etag}-{int(head['LastModified'].timestamp())}"
    assert request.run_key == f"trips:{version}"
    assert request.tags[REASON_TAG] == "new file trips.csv in ridehail's inbox (source trips)"
    assert not watched_s3.requests()

    assert watched_s3.rows_read(request) == len(generate("ridehail.trips"))

    # Replaced: one more run.
    fewer = generate("ridehail.trips").head(500)
    s3.put_object(Bucket=s3_bucket, Key=key, Body=fewer.to_csv(index=False).encode())
    (second,) = watched_s3.requests()
    assert second.run_key != request.run_key
    assert not watched_s3.requests()


def test_on_a_versioned_bucket_the_version_id_is_the_files_version(
    watched_s3, s3_bucket, s3_endpoint, trips_csv
):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    key = str(watched_s3.file)
    ids = []
    # The same content put twice is two versions: each gets its run.
    for _ in range(2):
        ids.append(s3.put_object(Bucket=s3_bucket, Key=key, Body=trips_csv)["VersionId"])
        (request,) = watched_s3.requests()
        assert request.run_key == f"trips:v{ids[-1]}"
    assert ids[0] != ids[1]
    assert not watched_s3.requests()
