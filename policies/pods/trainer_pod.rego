# A trainer pod (a team's own training code, models/trainers/pod.py) is the platform's trainer
# template and nothing else, beyond what every pod policy checks: its tenant's own trainer image
# (`parameters.tenants[<tenant>].trainer_image`, a repository prefix), no env but the Dagster
# Pipes bootstrap (`parameters.trainer_env`, plain values), nothing read from a Secret or
# ConfigMap, only size-limited emptyDir volumes, and a deadline.
package k8s.pods.trainer_pod

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := image_violations(inp) | env_violations(inp) | env_from_violations(inp) | volume_violations(inp) | deadline_violations(inp)

trainers(inp) := [inp.review.object] if k8s.is_trainer(inp.review.object)

else := []

image_violations(inp) := {{"msg": msg} |
	some obj in trainers(inp)
	want := object.get(k8s.tenant_parameters(inp), "trainer_image", "")
	some c in k8s.containers(obj)
	not own_image(c, want)
	msg := sprintf("container '%v' uses image '%v', not its tenant's trainer image '%v<env key>'", [c.name, object.get(c, "image", ""), want])
}

own_image(c, want) if {
	want != ""
	startswith(c.image, want)
}

env_violations(inp) := {{"msg": msg} |
	some obj in trainers(inp)
	allowed := object.get(inp, ["parameters", "trainer_env"], [])
	some c in k8s.containers(obj)
	some env in object.get(c, "env", [])
	not plain_pipes_env(env, allowed)
	msg := sprintf("container '%v' sets env %v; a trainer pod has only the Pipes bootstrap %v", [c.name, env.name, allowed])
}

plain_pipes_env(env, allowed) if {
	env.name in allowed
	not env.valueFrom
}

env_from_violations(inp) := {{"msg": sprintf("container '%v' reads envFrom; a trainer pod reads no Secret or ConfigMap", [c.name])} |
	some obj in trainers(inp)
	some c in k8s.containers(obj)
	count(object.get(c, "envFrom", [])) > 0
}

volume_violations(inp) := {{"msg": msg} |
	some obj in trainers(inp)
	some volume in object.get(k8s.pod_spec(obj), "volumes", [])
	not volume.emptyDir.sizeLimit
	msg := sprintf("volume '%v' is not a size-limited emptyDir, the only volume a trainer pod has", [volume.name])
}

deadline_violations(inp) := {{"msg": "trainer pod sets no activeDeadlineSeconds"} |
	some obj in trainers(inp)
	not k8s.pod_spec(obj).activeDeadlineSeconds
}
