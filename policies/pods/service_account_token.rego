# Only Dagster's run worker (it creates its steps' Jobs) and a model step that launches a trainer
# pod (PipesK8sClient creates it) talk to the Kubernetes API, so only they mount their service
# account's token. Every other pod, trainer pods first, says automountServiceAccountToken: false
# and projects no token of its own.
package k8s.pods.service_account_token

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := automount_violations(inp) | projected_token_violations(inp)

automount_violations(inp) := {{"msg": "pod does not set automountServiceAccountToken: false"} |
	obj := inp.review.object
	spec := k8s.pod_spec(obj)
	not talks_to_the_api(obj)
	not spec.automountServiceAccountToken == false
}

projected_token_violations(inp) := {{"msg": msg} |
	obj := inp.review.object
	not talks_to_the_api(obj)
	some volume in object.get(k8s.pod_spec(obj), "volumes", [])
	some source in object.get(volume, ["projected", "sources"], [])
	source.serviceAccountToken
	msg := sprintf("volume '%v' projects a service account token", [volume.name])
}

talks_to_the_api(obj) if k8s.is_run_worker(obj)

talks_to_the_api(obj) if k8s.launches_trainer(obj)
