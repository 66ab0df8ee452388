# A tenant's pod runs in that tenant's namespace with that tenant's service account: its runner
# account for Dagster's pods, its serving account (bound to no role) for the pods that serve its
# champions, its trainer account (bound to no role) for its trainer pods (`parameters.tenants`:
# tenant -> {namespace, service_account, serving_service_account, trainer_service_account}).
package k8s.pods.tenant_placement

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := unlabelled(inp) | unknown(inp) | namespace(inp) | account(inp) | unserved(inp)

tenant_of(inp) := k8s.pod_labels(inp.review.object)["mlplat/tenant"]

tenants(inp) := object.get(inp, ["parameters", "tenants"], {})

unlabelled(inp) := {{"msg": "pod has no mlplat/tenant label"} |
	k8s.pod_spec(inp.review.object)
	not tenant_of(inp)
}

unknown(inp) := {{"msg": msg} |
	tenant := tenant_of(inp)
	not tenants(inp)[tenant]
	msg := sprintf("pod is labelled for tenant '%v', which the platform does not know", [tenant])
}

namespace(inp) := {{"msg": msg} |
	tenant := tenant_of(inp)
	want := tenants(inp)[tenant].namespace
	# Gatekeeper passes a new Pod's namespace beside the object.
	got := object.get(inp.review.object, ["metadata", "namespace"], object.get(inp.review, "namespace", ""))
	got != want
	msg := sprintf("pod of tenant '%v' is in namespace '%v', not its own '%v'", [tenant, got, want])
}

account(inp) := {{"msg": msg} |
	tenant := tenant_of(inp)
	want := own_account(inp, tenant)
	got := k8s.pod_spec(inp.review.object).serviceAccountName
	got != want
	msg := sprintf("pod of tenant '%v' uses service account '%v', not its own '%v'", [tenant, got, want])
} | {{"msg": msg} |
	# No literal default in the message: rego-cpp would print it with its quotes unescaped.
	tenant := tenant_of(inp)
	want := own_account(inp, tenant)
	spec := k8s.pod_spec(inp.review.object)
	not spec.serviceAccountName
	msg := sprintf("pod of tenant '%v' names no service account (Kubernetes gives it the namespace's default), not its own '%v'", [tenant, want])
}

own_account(inp, tenant) := tenants(inp)[tenant].serving_service_account if {
	k8s.is_serving(inp.review.object)
} else := tenants(inp)[tenant].trainer_service_account if {
	k8s.is_trainer(inp.review.object)
} else := tenants(inp)[tenant].service_account if {
	not k8s.is_serving(inp.review.object)
	not k8s.is_trainer(inp.review.object)
}

# A tenant the platform gave no serving account (the platform itself) serves no model.
unserved(inp) := {{"msg": msg} |
	tenant := tenant_of(inp)
	tenants(inp)[tenant]
	k8s.is_serving(inp.review.object)
	not tenants(inp)[tenant].serving_service_account
	msg := sprintf("pod serves a model for '%v', which has no serving service account", [tenant])
}
