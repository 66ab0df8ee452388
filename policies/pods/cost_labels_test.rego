package k8s.pods.cost_labels_test

import data.k8s.pods.cost_labels
import rego.v1

job(labels) := {"review": {"object": {"kind": "Job", "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": []}}}}}}

all := {
	"mlplat/tenant": "ridehail",
	"mlplat/code-location": "ridehail",
	"dagster/run-id": "abc",
	"mlplat/asset": "ridehail/models/driver_churn",
	"app.kubernetes.io/component": "step_worker",
}

test_all_labels_pass if {
	count(cost_labels.violations(job(all))) == 0
}

test_step_without_asset_is_refused if {
	cost_labels.violations(job(object.remove(all, ["mlplat/asset"]))) == {{"msg": "pod has no cost-attribution label 'mlplat/asset'"}}
}

test_run_worker_needs_no_asset if {
	count(cost_labels.violations(job(object.union(object.remove(all, ["mlplat/asset"]), {"app.kubernetes.io/component": "run_worker"})))) == 0
}

test_missing_run_id_is_refused if {
	count(cost_labels.violations(job(object.remove(all, ["dagster/run-id"])))) == 1
}

test_empty_tenant_is_refused if {
	cost_labels.violations(job(object.union(all, {"mlplat/tenant": ""}))) == {{"msg": "pod has no cost-attribution label 'mlplat/tenant'"}}
}

isvc(labels) := {"review": {"object": {"kind": "InferenceService", "metadata": {"labels": labels}, "spec": {"predictor": {"model": {"modelFormat": {"name": "mlflow"}}}}}}}

serving := {"mlplat/tenant": "payments", "mlplat/code-location": "payments", "mlplat/model": "fraud_detector"}

test_serving_pod_needs_no_run_id if {
	count(cost_labels.violations(isvc(serving))) == 0
}

test_serving_pod_without_model_is_refused if {
	cost_labels.violations(isvc(object.remove(serving, ["mlplat/model"]))) == {{"msg": "pod has no cost-attribution label 'mlplat/model'"}}
}

test_predictor_labels_count_for_serving_pods if {
	split := json.patch(isvc(object.remove(serving, ["mlplat/model"])), [{"op": "add", "path": "/review/object/spec/predictor/labels", "value": {"mlplat/model": "fraud_detector"}}])
	count(cost_labels.violations(split)) == 0
}

test_pod_kserve_created_is_a_serving_pod if {
	pod := {"review": {"object": {"kind": "Pod", "metadata": {"labels": object.union(serving, {"serving.kserve.io/inferenceservice": "payments-fraud-detector"})}, "spec": {"containers": []}}}}
	count(cost_labels.violations(pod)) == 0
}
