package k8s.pods.pod_template_test

import data.k8s.pods.pod_template
import rego.v1

job := {"review": {"object": {"kind": "Job", "spec": {"template": {"spec": {
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
