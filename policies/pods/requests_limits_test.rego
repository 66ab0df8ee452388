package k8s.pods.requests_limits_test

import data.k8s.pods.requests_limits
import rego.v1

full := {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}

job(resources) := {"review": {"object": {
	"kind": "Job",
	"spec": {"template": {"spec": {"containers": [{"name": "step", "resources": resources}]}}},
}}}

test_requests_and_limits_pass if {
	count(requests_limits.violations(job(full))) == 0
}

test_missing_cpu_limit_is_named if {
	requests_limits.violations(job({"requests": full.requests, "limits": {"memory": "1Gi"}})) == {{"msg": "container 'step' has no cpu limits"}}
}

test_no_resources_at_all if {
	count(requests_limits.violations(job({}))) == 4
}

isvc(resources) := {"review": {"object": {
	"kind": "InferenceService",
	"spec": {"predictor": {"model": {"modelFormat": {"name": "mlflow"}, "resources": resources}}},
}}}

test_model_container_with_requests_and_limits_passes if {
	count(requests_limits.violations(isvc(full))) == 0
}

test_model_container_without_cpu_limit_is_named_as_kserve_runs_it if {
	requests_limits.violations(isvc({"requests": full.requests, "limits": {"memory": "1Gi"}})) == {{"msg": "container 'kserve-container' has no cpu limits"}}
}

test_predictor_containers_are_judged_too if {
	sidecar := json.patch(isvc(full), [{"op": "add", "path": "/review/object/spec/predictor/containers", "value": [{"name": "sidecar"}]}])
	count(requests_limits.violations(sidecar)) == 4
}
