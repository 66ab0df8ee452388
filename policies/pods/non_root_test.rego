package k8s.pods.non_root_test

import data.k8s.pods.non_root
import rego.v1

pod(pod_ctx, c_ctx) := {"review": {"object": {"kind": "Pod", "spec": {
	"securityContext": pod_ctx,
	"containers": [{"name": "c", "securityContext": c_ctx}],
}}}}

test_pod_level_non_root_passes if {
	count(non_root.violations(pod({"runAsNonRoot": true, "runAsUser": 10001}, {}))) == 0
}

test_container_level_non_root_passes if {
	count(non_root.violations(pod({}, {"runAsNonRoot": true}))) == 0
}

test_unset_is_refused if {
	non_root.violations(pod({}, {})) == {{"msg": "container 'c' may run as root (set runAsNonRoot: true)"}}
}

test_container_overriding_pod_is_refused if {
	count(non_root.violations(pod({"runAsNonRoot": true}, {"runAsNonRoot": false}))) == 1
}

test_uid_zero_is_refused if {
	non_root.violations(pod({"runAsNonRoot": true}, {"runAsUser": 0})) == {{"msg": "container 'c' runs as UID 0"}}
}

isvc(pod_ctx, c_ctx) := {"review": {"object": {"kind": "InferenceService", "spec": {"predictor": {
	"securityContext": pod_ctx,
	"model": {"modelFormat": {"name": "mlflow"}, "securityContext": c_ctx},
}}}}}

test_predictor_level_non_root_passes if {
	count(non_root.violations(isvc({"runAsNonRoot": true}, {}))) == 0
}

test_model_container_unset_is_refused if {
	non_root.violations(isvc({}, {})) == {{"msg": "container 'kserve-container' may run as root (set runAsNonRoot: true)"}}
}

test_predictor_uid_zero_is_refused if {
	non_root.violations(isvc({"runAsNonRoot": true, "runAsUser": 0}, {})) == {{"msg": "container 'kserve-container' runs as UID 0"}}
}
