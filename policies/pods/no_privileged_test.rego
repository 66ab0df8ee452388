package k8s.pods.no_privileged_test

import data.k8s.pods.no_privileged
import rego.v1

pod(ctx) := {"review": {"object": {"kind": "Pod", "spec": {"containers": [{"name": "c", "securityContext": ctx}]}}}}

test_unprivileged_passes if {
	count(no_privileged.violations(pod({"privileged": false}))) == 0
}

test_missing_security_context_passes if {
	count(no_privileged.violations({"review": {"object": {"kind": "Pod", "spec": {"containers": [{"name": "c"}]}}}})) == 0
}

test_privileged_is_refused if {
	no_privileged.violations(pod({"privileged": true})) == {{"msg": "container 'c' is privileged"}}
}

test_added_capabilities_are_refused if {
	count(no_privileged.violations(pod({"capabilities": {"add": ["NET_ADMIN"]}}))) == 1
}

test_privileged_model_container_is_refused if {
	isvc := {"review": {"object": {"kind": "InferenceService", "spec": {"predictor": {"model": {"securityContext": {"privileged": true}}}}}}}
	no_privileged.violations(isvc) == {{"msg": "container 'kserve-container' is privileged"}}
}
