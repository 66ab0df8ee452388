# Pods are the platform's template: only the fields it renders (and those the API server fills
# in on admission) may be set. Anything else (hostAliases, shareProcessNamespace, affinity,
# nodeName, ephemeral containers, a container's workingDir, ...) is refused by name.
# Its containers too: Dagster's pods (steps, run workers, code servers) have exactly one, named
# as the platform names it (`parameters.tenants[<tenant>].containers`: `dagster` for steps and
# run workers, the location's name for its code server) and no init containers; an
# InferenceService only its `model`; the pods KServe creates for one only KServe's own; a trainer
# pod exactly one, named `parameters.trainer_container`.
package k8s.pods.pod_template

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

# Dagster's step and run pods as dagster-k8s renders them, plus the API server's defaults.
template_pod_fields := {
	"containers", "volumes", "securityContext", "serviceAccountName", "serviceAccount",
	"automountServiceAccountToken", "restartPolicy", "imagePullSecrets", "nodeSelector",
	"tolerations", "priorityClassName", "priority", "preemptionPolicy",
	"terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "schedulerName",
	"enableServiceLinks",
}

# KServe's predictor: a pod spec extended with its component fields; the pods KServe creates
# for it carry its storage initializer as an init container.
template_serving_fields := {
	"model", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency",
	"timeout", "canaryTrafficPercent", "labels", "annotations", "initContainers",
}

template_container_fields := {
	"name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "resources",
	"securityContext", "volumeMounts", "ports", "readinessProbe", "livenessProbe", "startupProbe",
	"terminationMessagePath", "terminationMessagePolicy",
}

template_model_fields := {"modelFormat", "protocolVersion", "storageUri", "runtime"}

allowed_pod_fields(obj) := template_pod_fields | template_serving_fields if k8s.is_serving(obj)

else := template_pod_fields

allowed_container_fields(obj) := template_container_fields | template_model_fields if k8s.is_serving(obj)

else := template_container_fields

violations(inp) := extra_pod_fields(inp) | extra_container_fields(inp) | dagster_container_violations(inp) | serving_container_violations(inp)

# What KServe (and Knative, in serverless mode) put in a predictor's pods.
serving_containers := {"kserve-container", "queue-proxy"}

serving_init_containers := {"storage-initializer"}

dagster_container_violations(inp) := {{"msg": msg} |
	obj := inp.review.object
	not k8s.is_serving(obj)
	found := object.get(k8s.pod_spec(obj), "containers", [])
	count(found) != 1
	msg := sprintf("pod has %v containers; the platform's pod template has exactly one", [count(found)])
} | {{"msg": msg} |
	obj := inp.review.object
	not k8s.is_serving(obj)
	some c in object.get(k8s.pod_spec(obj), "containers", [])
	names := container_names(inp)
	not c.name in names
	msg := sprintf("container '%v' is not the platform's (its tenant's pods have one of %v)", [c.name, names])
}

container_names(inp) := [object.get(inp, ["parameters", "trainer_container"], "")] if {
	k8s.is_trainer(inp.review.object)
} else := object.get(k8s.tenant_parameters(inp), "containers", [])

serving_container_violations(inp) := {{"msg": msg} |
	obj := inp.review.object
	obj.kind == "InferenceService"
	some c in object.get(obj.spec.predictor, "containers", [])
	msg := sprintf("predictor adds container '%v'; the platform serves only its model", [c.name])
} | {{"msg": msg} |
	obj := inp.review.object
	obj.kind != "InferenceService"
	k8s.is_serving(obj)
	some field in ["containers", "initContainers"]
	some c in object.get(k8s.pod_spec(obj), field, [])
	not kserve_container(field, c.name)
	msg := sprintf("serving pod has container '%v', which KServe does not add", [c.name])
} | {{"msg": msg} |
	obj := inp.review.object
	obj.kind != "InferenceService"
	k8s.is_serving(obj)
	some field in ["containers", "initContainers"]
	some name in {c.name | some c in object.get(k8s.pod_spec(obj), field, [])}
	count([c | some c in object.get(k8s.pod_spec(obj), field, []); c.name == name]) > 1
	msg := sprintf("serving pod has container '%v' more than once", [name])
}

kserve_container(field, name) if {
	field == "containers"
	name in serving_containers
}

kserve_container(field, name) if {
	field == "initContainers"
	name in serving_init_containers
}

extra_pod_fields(inp) := {{"msg": msg} |
	obj := inp.review.object
	spec := k8s.pod_spec(obj)
	some field
	_ = spec[field]
	not field in allowed_pod_fields(obj)
	msg := sprintf("pod sets %v, which the platform's pod template does not have", [field])
}

extra_container_fields(inp) := {{"msg": msg} |
	obj := inp.review.object
	some c in k8s.containers(obj)
	some field
	_ = c[field]
	not field in allowed_container_fields(obj)
	msg := sprintf("container '%v' sets %v, which the platform's pod template does not have", [c.name, field])
}
