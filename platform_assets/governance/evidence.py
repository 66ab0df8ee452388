"""What a promotion decision is judged on, read only from the platform's own records.

The chain, every link of it a record the platform wrote itself in the Dagster event log:

    evaluation report materialization (made by a step of a run; metrics, model version,
      `model_run_id`)
    -> the model materialization of that version in run `model_run_id` (MLflow run id,
       training-set data version, the artifact's content hash)
    -> the Dagster run record of that run (who launched it)
    -> the training-set materialization the model step read (its input event pointer)
    -> the check evaluations of the run that built that training set, and of the runs that built
       the feature views it read.

MLflow tags are written for people; nothing here reads them. A runless event (the UI's "report
event" action, the GraphQL mutation) is never evidence: it belongs to no run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from platform_assets.governance.identity import Identity, trained_by
from platform_assets.tenancy.catalog import TenantCatalog, check_model_refs
from platform_assets.tenancy.specs import ModelSpec

# Metadata the evaluation report step writes and the evidence reader needs.
EVALUATION_FIELDS = ("registered_model", "model_version", "metrics", "model_run_id")
MODEL_FIELDS = (
    "registered_model",
    "model_version",
    "mlflow_run_id",
    "training_set_version",
    "artifact_sha256",
)
POINTER_TAG = "dagster/input_event_pointer/"
# Ids per batched query: well under SQLite's bound-parameter limit.
BATCH = 500


class EvidenceError(ValueError):
    """The platform's records do not establish what a promotion needs; says which record."""


@dataclass
class Evidence:
    registered_model: str
    model_version: int
    metrics: dict[str, float]
    evaluation: dict[str, Any]  # storage id and run id of the evaluation report materialization
    training_run_id: str
    mlflow_run_id: str
    artifact_sha256: str  # the content hash the model step recorded; loaders verify against it
    training_set: dict[str, Any]
    checks: dict[str, dict[str, Any]]
    data_versions: dict[str, str]
    launched_by: Identity | None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "checks": self.checks,
            "evaluation": self.evaluation,
            "dagster_run_id": self.training_run_id,
            "mlflow_run_id": self.mlflow_run_id,
            "artifact_sha256": self.artifact_sha256,
            "model_version": self.model_version,
            "training_set_version": self.training_set.get("data_version"),
            "training_set": self.training_set,
            "data_versions": self.data_versions,
            "launched_by": self.launched_by.name if self.launched_by else "automation",
            "launched_by_identity": self.launched_by.source if self.launched_by else "none",
        }


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def missing_fields(md: dict, wanted: tuple[str, ...]) -> list[str]:
    return [f for f in wanted if f not in md]


def value(md: dict, name: str) -> Any:
    v = md[name]
    return v.value if hasattr(v, "value") else v


class EvidenceReader:
    """Reads evidence from one Dagster instance; caches what cannot change (a run's events)."""

    def __init__(self, instance: dg.DagsterInstance, keys):
        self.instance = instance
        self.keys = keys
        self._runs: dict[str, list[dg.EventLogRecord]] = {}
        self._run_rows: dict[str, dg.DagsterRun] = {}
        self._by_storage_id: dict[int, dg.EventLogRecord] = {}
        self._cache: dict[tuple[str, int], Evidence] = {}

    # --- batched reads ------------------------------------------------------------------------

    def prefetch(self, records: Iterable[dg.EventLogRecord]) -> None:
        """Read ahead, in a few batched queries, what `gather` needs for these evaluation events:
        the records of the runs they name (one query each, kept), those runs' run records (one
        query) and the materializations their steps read (one query per link of the chain).
        `gather` then reads the same records from the caches; it never depends on this."""
        run_ids = set()
        for record in records:
            md = record.asset_materialization.metadata if record.asset_materialization else {}
            if record.run_id and "model_run_id" in md and value(md, "model_run_id"):
                run_ids.add(str(value(md, "model_run_id")))
        self._prefetch_runs(run_ids)
        for run_id in run_ids:
            self.run_records(run_id)
        # The model's step read the training set, whose step read the feature views.
        linked = [r for run_id in run_ids for r in self.run_records(run_id)]
        for _ in range(2):
            linked = self._prefetch_pointers(linked)

    def _prefetch_runs(self, run_ids: set[str]) -> None:
        missing = sorted(run_ids - self._run_rows.keys())
        for start in range(0, len(missing), BATCH):
            for run in self.instance.get_runs(
                dg.RunsFilter(run_ids=missing[start : start + BATCH])
            ):
                self._run_rows[run.run_id] = run

    def _prefetch_pointers(self, records: list[dg.EventLogRecord]) -> list[dg.EventLogRecord]:
        """Resolve the input event pointers of these materializations in batched queries; returns
        the materializations found."""
        wanted: set[int] = set()
        for record in records:
            if record.asset_materialization is None:
                continue
            for tag, pointer in (record.asset_materialization.tags or {}).items():
                if tag.startswith(POINTER_TAG) and pointer.isdigit():
                    wanted.add(int(pointer))
        missing = sorted(wanted - self._by_storage_id.keys())
        for start in range(0, len(missing), BATCH):
            for record in self.instance.event_log_storage.get_event_records(
                dg.EventRecordsFilter(
                    event_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
                    storage_ids=missing[start : start + BATCH],
                ),
                limit=BATCH,
            ):
                self._by_storage_id[record.storage_id] = record
        return [self._by_storage_id[i] for i in wanted if i in self._by_storage_id]

    # --- single links ---------------------------------------------------------------------------

    def evaluation_record(self, tenant: str, model: str, version: int) -> dg.EventLogRecord:
        """The newest evaluation report materialization of `version` made by a run."""
        key = dg.AssetKey([tenant, "evaluation_reports", model])
        registered, cursor = f"{tenant}.{model}", None
        while True:
            page = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key), limit=200, cursor=cursor, ascending=False
            )
            for record in page.records:
                md = record.asset_materialization.metadata
                if (
                    record.run_id
                    and "model_version" in md
                    and value(md, "registered_model") == registered
                    and int(value(md, "model_version")) == version
                ):
                    return record
            if not page.has_more:
                raise EvidenceError(
                    f"{registered} v{version}: no evaluation report of this version was "
                    f"materialized by a run (asset {key.to_user_string()})"
                )
            cursor = page.cursor

    def check_evaluation_record(self, record: dg.EventLogRecord, registered: str) -> dict:
        """The evaluation report's metadata, if the record can be evidence at all."""
        where = f"evaluation report event {record.storage_id}"
        if not record.run_id:
            raise EvidenceError(
                f"{where} for {registered} was reported outside a run (a runless event); only "
                "the evaluation step's own materialization counts"
            )
        md = dict(record.asset_materialization.metadata)
        missing = missing_fields(md, EVALUATION_FIELDS)
        if missing:
            raise EvidenceError(f"{where} has no {', '.join(missing)} metadata")
        if value(md, "registered_model") != registered:
            raise EvidenceError(
                f"{where} is for {value(md, 'registered_model')!r}, not {registered!r}"
            )
        if record.event_log_entry.step_key is None:
            raise EvidenceError(f"{where} was not written by a step of run {record.run_id}")
        return md

    def run_records(self, run_id: str) -> list[dg.EventLogRecord]:
        """A finished run's materializations and check evaluations, read once: one query gives
        the model, the training set it was trained on and their checks when one run built all."""
        if run_id not in self._runs:
            records = self.instance.get_records_for_run(
                run_id,
                of_type={
                    dg.DagsterEventType.ASSET_MATERIALIZATION,
                    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                },
            ).records
            self._runs[run_id] = records
        return self._runs[run_id]

    def checks_of_run(self, run_id: str) -> dict[tuple[str, str], bool]:
        """(asset key, check name) -> passed, for the check evaluations a run recorded (the last
        evaluation of a check within the run wins)."""
        out: dict[tuple[str, str], bool] = {}
        for r in self.run_records(run_id):
            if r.event_log_entry.dagster_event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                continue
            evaluation = r.event_log_entry.dagster_event.event_specific_data
            out[(evaluation.asset_key.to_user_string(), evaluation.check_name)] = bool(
                evaluation.passed
            )
        return out

    def materialization(self, key: dg.AssetKey, storage_id: int) -> dg.EventLogRecord | None:
        """The materialization an input event pointer names. Pointers are asset-index storage
        ids, which on SQLite differ from the ids of a run's own event records: never mix them.
        Read by id alone, as `prefetch` reads them in bulk, so both paths see the same record
        (an asset wipe hides history from the UI; what a model was trained on still stands).
        From the event log storage: the instance's method of the same name warns for
        materializations, but `fetch_materializations` cannot read ids of several assets."""
        record = self._by_storage_id.get(storage_id)
        if record is None:
            found = self.instance.event_log_storage.get_event_records(
                dg.EventRecordsFilter(
                    event_type=dg.DagsterEventType.ASSET_MATERIALIZATION,
                    storage_ids=[storage_id],
                ),
                limit=1,
            )
            record = found[0] if found else None
            if record is not None:
                self._by_storage_id[storage_id] = record
        if record is None or record.asset_key != key or record.asset_materialization is None:
            return None
        return record

    def input_record(self, record: dg.EventLogRecord, key: dg.AssetKey) -> dg.EventLogRecord | None:
        """The materialization of `key` that the step which wrote `record` read."""
        pointer = (record.asset_materialization.tags or {}).get(
            f"{POINTER_TAG}{key.to_user_string()}"
        )
        if not pointer or not pointer.isdigit():
            return None
        return self.materialization(key, int(pointer))

    # --- the whole chain ------------------------------------------------------------------------

    def gather(
        self,
        catalog: TenantCatalog,
        spec: ModelSpec,
        version: int,
        record: dg.EventLogRecord | None = None,
    ) -> Evidence:
        tenant = catalog.tenant.name
        registered = f"{tenant}.{spec.name}"
        if record is None and (registered, version) in self._cache:
            return self._cache[(registered, version)]
        if record is None:
            record = self.evaluation_record(tenant, spec.name, version)
        md = self.check_evaluation_record(record, registered)
        if int(value(md, "model_version")) != version:
            raise EvidenceError(
                f"evaluation report event {record.storage_id} is for v{value(md, 'model_version')}"
                f", not v{version}"
            )
        model_run_id = str(value(md, "model_run_id") or "")
        model_key = dg.AssetKey([tenant, "models", spec.name])
        model_record = (
            next(
                (
                    r
                    for r in self.run_records(model_run_id)
                    if r.event_log_entry.dagster_event_type
                    == dg.DagsterEventType.ASSET_MATERIALIZATION
                    and r.asset_key == model_key
                    and "model_version" in r.asset_materialization.metadata
                    and _int(value(r.asset_materialization.metadata, "model_version")) == version
                ),
                None,
            )
            if model_run_id
            else None
        )
        if model_record is None:
            raise EvidenceError(
                f"{registered} v{version}: run {model_run_id or '<none>'} named by evaluation "
                f"report event {record.storage_id} did not materialize "
                f"{model_key.to_user_string()} as this version"
            )
        model_md = dict(model_record.asset_materialization.metadata)
        missing = missing_fields(model_md, MODEL_FIELDS)
        if missing:
            raise EvidenceError(
                f"model event {model_record.storage_id} has no {', '.join(missing)} metadata"
            )
        run = self._run_rows.get(model_run_id) or self.instance.get_run_by_id(model_run_id)
        if run is None:
            raise EvidenceError(f"{registered} v{version}: no run record for run {model_run_id}")
        launched_by = trained_by(
            self.keys, run.tags, run.job_name, run.run_config, run.parent_run_id or ""
        )

        ts_key = dg.AssetKey([tenant, "training_sets", spec.name])
        ts_record = self.input_record(model_record, ts_key)
        problems: list[str] = []
        training_set: dict[str, Any] = {}
        data_versions: dict[str, str] = {}
        if ts_record is None:
            problems.append(
                f"model event {model_record.storage_id} names no {ts_key.to_user_string()} "
                "materialization it was trained on"
            )
        else:
            ts_md = ts_record.asset_materialization.metadata
            ts_version = (ts_record.asset_materialization.tags or {}).get("dagster/data_version")
            training_set = {
                "storage_id": ts_record.storage_id,
                "run_id": ts_record.run_id,
                "data_version": value(ts_md, "data_version") if "data_version" in ts_md else None,
            }
            if ts_version:
                data_versions[ts_key.to_user_string()] = ts_version
            trained_on = value(model_md, "training_set_version")
            if training_set["data_version"] not in (None, trained_on):
                problems.append(
                    f"model event {model_record.storage_id} says training set {trained_on} but "
                    f"the materialization it read is {training_set['data_version']}"
                )
        checks = self._checks(catalog, spec, ts_key, ts_record, data_versions)
        evidence = Evidence(
            registered_model=registered,
            model_version=version,
            metrics={k: float(v) for k, v in value(md, "metrics").items()},
            evaluation={"storage_id": record.storage_id, "run_id": record.run_id},
            training_run_id=model_run_id,
            mlflow_run_id=value(model_md, "mlflow_run_id"),
            artifact_sha256=str(value(model_md, "artifact_sha256")),
            training_set=training_set,
            checks=checks,
            data_versions=data_versions,
            launched_by=launched_by,
            problems=problems,
        )
        self._cache[(registered, version)] = evidence
        return evidence

    def _checks(
        self,
        catalog: TenantCatalog,
        spec: ModelSpec,
        ts_key: dg.AssetKey,
        ts_record: dg.EventLogRecord | None,
        data_versions: dict[str, str],
    ) -> dict[str, dict[str, Any]]:
        """Each required check's result in the run that built what the model was trained on; a
        check that run did not evaluate counts as not passed."""
        required = spec.promotion.required_checks
        wanted: list[tuple[dg.AssetKey, str, dg.EventLogRecord | None]] = []
        if "training_set" in required:
            wanted.append((ts_key, "expectations", ts_record))
        if "leakage" in required:
            wanted.append((ts_key, "leakage", ts_record))
        if "feature_views" in required:
            for owner, fs in check_model_refs(catalog, spec).values():
                key = dg.AssetKey([owner, "features", fs.name])
                built = self.input_record(ts_record, key) if ts_record is not None else None
                if built is not None:
                    version = (built.asset_materialization.tags or {}).get("dagster/data_version")
                    if version:
                        data_versions[key.to_user_string()] = version
                wanted.append((key, "expectations", built))
        out = {}
        for key, check, built in wanted:
            name = f"{key.to_user_string()}:{check}"
            if built is None or not built.run_id:
                out[name] = {"passed": False, "run_id": None, "why": "no materialization read"}
                continue
            passed = self.checks_of_run(built.run_id).get((key.to_user_string(), check))
            out[name] = {
                "passed": bool(passed),
                "run_id": built.run_id,
                **({} if passed is not None else {"why": "not evaluated in that run"}),
            }
        return out
