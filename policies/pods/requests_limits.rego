# Every container requests and is limited to CPU and memory, limits equal to requests, so the
# scheduler, the namespace's ResourceQuota and the cost tool all see what it takes and it cannot
# take more. Only CPU, memory and the extended resources of the accelerator classes its tenant may
# use (`parameters.tenants[<tenant>].extended_resources`), and no more than the caps: the
# tenant's (`caps`, limits.yaml) for a step or serving pod, its `trainer_caps` (the same CPU and
# memory, and limits.yaml's trainer scratch space) for a trainer pod, the platform's own
# (`parameters.platform_pod_caps`) for its run workers and code servers. A pod takes the sum of
# its containers, or its largest init container if that is more (as the scheduler counts).
package k8s.pods.requests_limits

import data.lib.k8s
import rego.v1

# Gatekeeper and OPA read `violation`; the tests call `violations` (rules are functions of
# their input, so tests need no `with input`).
violation contains v if some v in violations(input)

violations(inp) := missing(inp) | unequal(inp) | not_quantities(inp) | unknown_resources(inp) | over_caps(inp)

missing(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	some kind in ["requests", "limits"]
	some resource in resource_names(c) | {"cpu", "memory"}
	not c.resources[kind][resource]
	msg := sprintf("container '%v' has no %v %v", [c.name, resource, kind])
}

# Kubernetes quantities (resource.Quantity), so units.parse never fails on one.
quantity_pattern := `^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$`

is_quantity(q) if is_number(q)

is_quantity(q) if {
	is_string(q)
	regex.match(quantity_pattern, q)
}

amount(q) := q if is_number(q)

else := units.parse(q)

resource_names(c) := {name |
	some kind in ["requests", "limits"]
	some name
	_ = object.get(c, ["resources", kind], {})[name]
}

not_quantities(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	some kind in ["requests", "limits"]
	some name
	q := object.get(c, ["resources", kind], {})[name]
	not is_quantity(q)
	msg := sprintf("container '%v' %v %v=%v, which is not a Kubernetes quantity", [c.name, kind, name, q])
}

unequal(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	some name in resource_names(c)
	requested := c.resources.requests[name]
	limited := c.resources.limits[name]
	is_quantity(requested)
	is_quantity(limited)
	amount(requested) != amount(limited)
	msg := sprintf("container '%v' requests %v %v but is limited to %v: limits equal requests", [c.name, requested, name, limited])
}

# A trainer pod's scratch volume is bounded as ephemeral storage too; it has no GPUs.
allowed_resources(inp) := {"cpu", "memory", "ephemeral-storage"} if {
	k8s.is_trainer(inp.review.object)
} else := {"cpu", "memory"} | {r | some r in object.get(k8s.tenant_parameters(inp), "extended_resources", [])}

unknown_resources(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	some name in resource_names(c)
	not name in allowed_resources(inp)
	msg := sprintf("container '%v' asks for %v, which is not cpu, memory or the resource of an accelerator class its tenant may use (%v)", [c.name, name, object.get(k8s.tenant_parameters(inp), "extended_resources", [])])
}

# Steps and model servers are the tenant's; run workers and code servers are sized by the
# platform.
tenant_sized(obj) if k8s.is_serving(obj)

tenant_sized(obj) if k8s.pod_labels(obj)["app.kubernetes.io/component"] == "step_worker"

caps(inp) := object.get(k8s.tenant_parameters(inp), "trainer_caps", {}) if k8s.is_trainer(inp.review.object)

else := object.get(k8s.tenant_parameters(inp), "caps", {}) if tenant_sized(inp.review.object)

else := object.get(inp, ["parameters", "platform_pod_caps"], {})

app_containers(obj) := array.concat(object.get(k8s.pod_spec(obj), "containers", []), k8s.model(obj))

# What the scheduler reserves for the pod: its containers together, or its largest init
# container. Memory reads in Gi. (Inline, and no computed strings in messages: rego-cpp mangles
# strings passed through function arguments.)
over_caps(inp) := {{"msg": sprintf("pod requests %vGi of memory, more than the %v it may have", [total / 1073741824, cap])} |
	some total
	cap := pod_totals(inp).memory[total]
} | {{"msg": sprintf("pod requests %v of %v, more than the %v it may have", [total, name, cap])} |
	some name
	name != "memory"
	some total
	cap := pod_totals(inp)[name][total]
}

# resource -> {total requested by the pod: its cap}, for each resource above its cap.
pod_totals(inp) := {name: {total: cap} |
	obj := inp.review.object
	k8s.pod_spec(obj)
	names := {name | some c in k8s.containers(obj); some name in resource_names(c)}
	some name in names
	app := [amount(q) | some c in app_containers(obj); q := c.resources.requests[name]; is_quantity(q)]
	init := [amount(q) | some c in object.get(k8s.pod_spec(obj), "initContainers", []); q := c.resources.requests[name]; is_quantity(q)]
	total := max(array.concat([sum(app)], init))
	cap := object.get(caps(inp), name, 0)
	total > amount(cap)
}
