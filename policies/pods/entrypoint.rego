# Dagster's pods run only the platform's entry points (`parameters.entrypoints`: the argv
# prefixes `dagster api execute_step`, `execute_run`, `grpc`), never a command of anyone's
# choosing. A model's predictor runs its serving runtime's own entry point: no command or args.
# A trainer pod runs exactly the platform's runner (`parameters.trainer_entrypoint`, no extra
# argument: the runner reads everything from the Pipes context).
package k8s.pods.entrypoint

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := dagster_entrypoint_violations(inp) | serving_entrypoint_violations(inp) | trainer_entrypoint_violations(inp)

container_argv(c) := array.concat(object.get(c, "command", []), object.get(c, "args", []))

is_platform_entrypoint(inp, c) if {
	some prefix in object.get(inp, ["parameters", "entrypoints"], [])
	count(prefix) > 0
	array.slice(container_argv(c), 0, count(prefix)) == prefix
}

dagster_entrypoint_violations(inp) := {{"msg": msg} |
	obj := inp.review.object
	not k8s.is_serving(obj)
	not k8s.is_trainer(obj)
	some c in k8s.containers(obj)
	not is_platform_entrypoint(inp, c)
	msg := sprintf("container '%v' runs %v, not one of the platform's entry points", [c.name, container_argv(c)])
}

serving_entrypoint_violations(inp) := {{"msg": msg} |
	obj := inp.review.object
	obj.kind == "InferenceService"
	some c in k8s.containers(obj)
	count(container_argv(c)) > 0
	msg := sprintf("container '%v' runs %v instead of its serving runtime", [c.name, container_argv(c)])
}

trainer_entrypoint_violations(inp) := {{"msg": msg} |
	obj := inp.review.object
	k8s.is_trainer(obj)
	some c in k8s.containers(obj)
	want := object.get(inp, ["parameters", "trainer_entrypoint"], [])
	container_argv(c) != want
	msg := sprintf("container '%v' runs %v, not the platform's trainer runner %v", [c.name, container_argv(c), want])
}
