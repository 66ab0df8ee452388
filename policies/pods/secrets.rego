# A pod reads only its own tenant's Secrets (`parameters.tenants[<tenant>]`): `env_from` the
# Secrets it may read whole (envFrom, secret volumes), `secret_keys` the single keys it may read
# as env (name -> keys), such as Dagster's storage password. A trainer pod reads none.
package k8s.pods.secrets

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := env_from_violations(inp) | env_key_violations(inp) | secret_volume_violations(inp)

whole_secrets(inp) := [] if k8s.is_trainer(inp.review.object)

else := object.get(k8s.tenant_parameters(inp), "env_from", [])

env_from_violations(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	some source in object.get(c, "envFrom", [])
	name := source.secretRef.name
	not name in whole_secrets(inp)
	msg := sprintf("container '%v' reads Secret '%v' (envFrom), not one of its tenant's %v", [c.name, name, whole_secrets(inp)])
}

secret_key_allowed(inp, ref) if {
	not k8s.is_trainer(inp.review.object)
	ref.key in object.get(k8s.tenant_parameters(inp), ["secret_keys", ref.name], [])
}

secret_key_allowed(inp, ref) if ref.name in whole_secrets(inp)

env_key_violations(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	some env in object.get(c, "env", [])
	ref := env.valueFrom.secretKeyRef
	not secret_key_allowed(inp, ref)
	msg := sprintf("container '%v' reads key '%v' of Secret '%v', which its tenant may not read", [c.name, ref.key, ref.name])
}

volume_secret_names(volume) := [volume.secret.secretName] if volume.secret

else := [s.secret.name | some s in object.get(volume, ["projected", "sources"], []); s.secret]

secret_volume_violations(inp) := {{"msg": msg} |
	some volume in object.get(k8s.pod_spec(inp.review.object), "volumes", [])
	some name in volume_secret_names(volume)
	not name in whole_secrets(inp)
	msg := sprintf("volume '%v' mounts Secret '%v', not one of its tenant's %v", [volume.name, name, whole_secrets(inp)])
}
