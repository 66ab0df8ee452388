package k8s.pods.no_privilege_escalation_test

import data.k8s.pods.no_privilege_escalation
import rego.v1

pod(c) := {"review": {"object": {"kind": "Pod", "spec": {"containers": [c]}}}}

test_false_passes if {
	count(no_privilege_escalation.violations(pod({"name": "c", "securityContext": {"allowPrivilegeEscalation": false}}))) == 0
}

test_missing_is_refused if {
	no_privilege_escalation.violations(pod({"name": "c"})) == {{"msg": "container 'c' does not set allowPrivilegeEscalation: false"}}
}

test_true_is_refused if {
	count(no_privilege_escalation.violations(pod({"name": "c", "securityContext": {"allowPrivilegeEscalation": true}}))) == 1
}

test_model_container_must_set_it if {
	isvc := {"review": {"object": {"kind": "InferenceService", "spec": {"predictor": {"model": {"modelFormat": {"name": "mlflow"}}}}}}}
	no_privilege_escalation.violations(isvc) == {{"msg": "container 'kserve-container' does not set allowPrivilegeEscalation: false"}}
}
