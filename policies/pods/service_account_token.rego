# Only Dagster's run worker talks to the Kubernetes API (it creates its steps' Jobs), so only it
# mounts its service account's token. Every other pod says automountServiceAccountToken: false
# and projects no token of its own.
package k8s.pods.service_account_token

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := automount_violations(inp) | projected_token_violations(inp)

automount_violations(inp) := {{"msg": "pod does not set automountServiceAccountToken: false"} |
	obj := inp.review.object
	spec := k8s.pod_spec(obj)
	not k8s.is_run_worker(obj)
	not spec.automountServiceAccountToken == false
}

projected_token_violations(inp) := {{"msg": msg} |
	obj := inp.review.object
	not k8s.is_run_worker(obj)
	some volume in object.get(k8s.pod_spec(obj), "volumes", [])
	some source in object.get(volume, ["projected", "sources"], [])
	source.serviceAccountToken
	msg := sprintf("volume '%v' projects a service account token", [volume.name])
}
