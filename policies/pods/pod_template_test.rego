package k8s.pods.pod_template_test

import data.k8s.pods.pod_template
import rego.v1

params := {"tenants": {"ridehail": {"containers": ["dagster", "ridehail"]}}}

job := {"parameters": params, "review": {"object": {"kind": "Job", "spec": {"template": {"metadata": {"labels": {"mlplat/tenant": "ridehail"}}, "spec": {
	"automountServiceAccountToken": false,
	"serviceAccountName": "ridehail-runner",
	"restartPolicy": "Never",
	"imagePullSecrets": [],
	"securityContext": {"runAsNonRoot": true},
	"volumes": [{"name": "tmp", "emptyDir": {}}],
	"containers": [{"name": "dagster", "image": "registry.mlplat.example/mlplat:1", "args": ["dagster", "api", "execute_step"], "env": [], "envFrom": [], "resources": {}, "securityContext": {}, "volumeMounts": [], "imagePullPolicy": "IfNotPresent"}],
}}}}}}


test_the_platforms_template_passes if {
	count(pod_template.violations(job)) == 0
}

test_api_server_defaults_pass if {
	defaulted := json.patch(job, [
		{"op": "add", "path": "/review/object/spec/template/spec/dnsPolicy", "value": "ClusterFirst"},
		{"op": "add", "path": "/review/object/spec/template/spec/schedulerName", "value": "default-scheduler"},
		{"op": "add", "path": "/review/object/spec/template/spec/terminationGracePeriodSeconds", "value": 30},
	])
	count(pod_template.violations(defaulted)) == 0
}

test_host_aliases_are_refused if {
	pod_template.violations(json.patch(job, [{"op": "add", "path": "/review/object/spec/template/spec/hostAliases", "value": [{"ip": "10.0.0.1", "hostnames": ["postgres.mlplat.internal"]}]}])) == {{"msg": "pod sets hostAliases, which the platform's pod template does not have"}}
}

test_share_process_namespace_is_refused if {
	pod_template.violations(json.patch(job, [{"op": "add", "path": "/review/object/spec/template/spec/shareProcessNamespace", "value": true}])) == {{"msg": "pod sets shareProcessNamespace, which the platform's pod template does not have"}}
}

test_affinity_is_refused if {
	pod_template.violations(json.patch(job, [{"op": "add", "path": "/review/object/spec/template/spec/affinity", "value": {"nodeAffinity": {}}}])) == {{"msg": "pod sets affinity, which the platform's pod template does not have"}}
}

test_node_name_is_refused if {
	pod_template.violations(json.patch(job, [{"op": "add", "path": "/review/object/spec/template/spec/nodeName", "value": "control-plane-1"}])) == {{"msg": "pod sets nodeName, which the platform's pod template does not have"}}
}

test_container_field_outside_the_template_is_refused if {
	pod_template.violations(json.patch(job, [{"op": "add", "path": "/review/object/spec/template/spec/containers/0/workingDir", "value": "/"}])) == {{"msg": "container 'dagster' sets workingDir, which the platform's pod template does not have"}}
}

isvc := {"review": {"object": {"kind": "InferenceService", "spec": {"predictor": {
	"serviceAccountName": "ridehail-serving",
	"minReplicas": 1,
	"maxReplicas": 3,
	"model": {"modelFormat": {"name": "mlflow"}, "protocolVersion": "v2", "storageUri": "s3://x"},
}}}}}

test_a_predictor_with_its_component_fields_passes if {
	count(pod_template.violations(isvc)) == 0
}

test_model_fields_on_a_step_container_are_refused if {
	pod_template.violations(json.patch(job, [{"op": "add", "path": "/review/object/spec/template/spec/containers/0/storageUri", "value": "s3://x"}])) == {{"msg": "container 'dagster' sets storageUri, which the platform's pod template does not have"}}
}

step_container := job.review.object.spec.template.spec.containers[0]

test_a_second_container_running_the_entry_point_is_refused if {
	second := object.union(step_container, {"name": "sidecar"})
	pod_template.violations(json.patch(job, [{"op": "add", "path": "/review/object/spec/template/spec/containers/-", "value": second}])) == {
		{"msg": "pod has 2 containers; the platform's pod template has exactly one"},
		{"msg": "container 'sidecar' is not the platform's (its tenant's pods have one of [\"dagster\", \"ridehail\"])"},
	}
}

test_a_code_server_named_after_its_location_passes if {
	server := object.union(step_container, {"name": "ridehail"})
	count(pod_template.violations(json.patch(job, [{"op": "replace", "path": "/review/object/spec/template/spec/containers/0", "value": server}]))) == 0
}

test_a_renamed_container_is_refused if {
	renamed := object.union(step_container, {"name": "shell"})
	pod_template.violations(json.patch(job, [{"op": "replace", "path": "/review/object/spec/template/spec/containers/0", "value": renamed}])) == {{"msg": "container 'shell' is not the platform's (its tenant's pods have one of [\"dagster\", \"ridehail\"])"}}
}

test_init_and_ephemeral_containers_on_dagster_pods_are_refused if {
	pod_template.violations(json.patch(job, [
		{"op": "add", "path": "/review/object/spec/template/spec/initContainers", "value": [step_container]},
		{"op": "add", "path": "/review/object/spec/template/spec/ephemeralContainers", "value": [step_container]},
	])) == {
		{"msg": "pod sets initContainers, which the platform's pod template does not have"},
		{"msg": "pod sets ephemeralContainers, which the platform's pod template does not have"},
	}
}

test_a_predictor_container_beside_the_model_is_refused if {
	pod_template.violations(json.patch(isvc, [{"op": "add", "path": "/review/object/spec/predictor/containers", "value": [{"name": "sidecar"}]}])) == {{"msg": "predictor adds container 'sidecar'; the platform serves only its model"}}
}

kserve_pod := {"review": {"object": {"kind": "Pod", "metadata": {"labels": {"serving.kserve.io/inferenceservice": "ridehail-churn"}}, "spec": {
	"containers": [{"name": "kserve-container"}, {"name": "queue-proxy"}],
	"initContainers": [{"name": "storage-initializer"}],
}}}}

test_the_pods_kserve_creates_pass if {
	count(pod_template.violations(kserve_pod)) == 0
}

test_a_container_kserve_does_not_add_is_refused if {
	pod_template.violations(json.patch(kserve_pod, [{"op": "add", "path": "/review/object/spec/initContainers/-", "value": {"name": "fetch"}}])) == {{"msg": "serving pod has container 'fetch', which KServe does not add"}}
}

test_a_kserve_container_twice_is_refused if {
	pod_template.violations(json.patch(kserve_pod, [{"op": "add", "path": "/review/object/spec/containers/-", "value": {"name": "kserve-container"}}])) == {{"msg": "serving pod has container 'kserve-container' more than once"}}
}
