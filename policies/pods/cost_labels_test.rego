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
