# Pods are the platform's template: only the fields it renders (and those the API server fills
# in on admission) may be set. Anything else (hostAliases, shareProcessNamespace, affinity,
# nodeName, ephemeral containers, a container's workingDir, ...) is refused by name.
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

violations(inp) := extra_pod_fields(inp) | extra_container_fields(inp)

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
