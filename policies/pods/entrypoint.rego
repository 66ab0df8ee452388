# Dagster's pods run only the platform's entry points (`parameters.entrypoints`: the argv
# prefixes `dagster api execute_step`, `execute_run`, `grpc`), never a command of anyone's
# choosing. A model's predictor runs its serving runtime's own entry point: no command or args.
package k8s.pods.entrypoint

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := dagster_entrypoint_violations(inp) | serving_entrypoint_violations(inp)

container_argv(c) := array.concat(object.get(c, "command", []), object.get(c, "args", []))

is_platform_entrypoint(inp, c) if {
	some prefix in object.get(inp, ["parameters", "entrypoints"], [])
	count(prefix) > 0
	array.slice(container_argv(c), 0, count(prefix)) == prefix
}

dagster_entrypoint_violations(inp) := {{"msg": msg} |
	obj := inp.review.object
	not k8s.is_serving(obj)
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
