package k8s.pods.service_account_token_test

import data.k8s.pods.service_account_token
import rego.v1

job(component, spec) := {"review": {"object": {"kind": "Job", "spec": {"template": {
	"metadata": {"labels": {"app.kubernetes.io/component": component}},
	"spec": object.union({"containers": [{"name": "c"}]}, spec),
}}}}}

token := {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "vault"}}]}}

test_step_without_a_token_passes if {
	count(service_account_token.violations(job("step_worker", {"automountServiceAccountToken": false}))) == 0
}

test_step_that_leaves_automount_to_the_account_is_refused if {
	service_account_token.violations(job("step_worker", {})) == {{"msg": "pod does not set automountServiceAccountToken: false"}}
}

test_step_that_mounts_the_token_is_refused if {
	service_account_token.violations(job("step_worker", {"automountServiceAccountToken": true})) == {{"msg": "pod does not set automountServiceAccountToken: false"}}
}

test_run_worker_mounts_its_token if {
	count(service_account_token.violations(job("run_worker", {"automountServiceAccountToken": true}))) == 0
}

test_projected_token_is_refused if {
	service_account_token.violations(job("step_worker", {"automountServiceAccountToken": false, "volumes": [token]})) == {{"msg": "volume 'token' projects a service account token"}}
}

test_projected_config_map_passes if {
	cfg := {"name": "cfg", "projected": {"sources": [{"configMap": {"name": "x"}}]}}
	count(service_account_token.violations(job("step_worker", {"automountServiceAccountToken": false, "volumes": [cfg]}))) == 0
}

launcher(labels, spec) := {"review": {"object": {"kind": "Job", "spec": {"template": {
	"metadata": {"labels": labels},
	"spec": object.union({"containers": [{"name": "c"}]}, spec),
}}}}}

test_a_step_that_launches_a_trainer_mounts_its_token if {
	labels := {"app.kubernetes.io/component": "step_worker", "mlplat/launches": "trainer"}
	count(service_account_token.violations(launcher(labels, {"automountServiceAccountToken": true}))) == 0
}

test_a_trainer_pod_mounting_a_token_is_refused if {
	labels := {"mlplat/role": "trainer", "mlplat/launches": "trainer"}
	service_account_token.violations(launcher(labels, {"automountServiceAccountToken": true})) == {{"msg": "pod does not set automountServiceAccountToken: false"}}
}

test_a_trainer_pod_projecting_a_token_is_refused if {
	labels := {"mlplat/role": "trainer"}
	service_account_token.violations(launcher(labels, {"automountServiceAccountToken": false, "volumes": [token]})) == {{"msg": "volume 'token' projects a service account token"}}
}
