package k8s.pods.tenant_placement_test

import data.k8s.pods.tenant_placement
import rego.v1

# Fixtures are whole literals: rego-cpp formats strings passed through function arguments
# with their quotes in sprintf.
params := {"tenants": {
	"ridehail": {"namespace": "tenant-ridehail", "service_account": "ridehail-runner", "serving_service_account": "ridehail-serving", "trainer_service_account": "ridehail-trainer"},
	"platform": {"namespace": "mlplat", "service_account": "mlplat-runner"},
}}

job := {"parameters": params, "review": {"object": {
	"kind": "Job",
	"metadata": {"namespace": "tenant-ridehail"},
	"spec": {"template": {
		"metadata": {"labels": {"mlplat/tenant": "ridehail"}},
		"spec": {"serviceAccountName": "ridehail-runner", "containers": [{"name": "c"}]},
	}},
}}}

test_own_namespace_and_account_pass if {
	count(tenant_placement.violations(job)) == 0
}

test_wrong_namespace_is_refused if {
	moved := json.patch(job, [{"op": "replace", "path": "/review/object/metadata/namespace", "value": "mlplat"}])
	tenant_placement.violations(moved) == {{"msg": "pod of tenant 'ridehail' is in namespace 'mlplat', not its own 'tenant-ridehail'"}}
}

test_wrong_service_account_is_refused if {
	other := json.patch(job, [{"op": "replace", "path": "/review/object/spec/template/spec/serviceAccountName", "value": "growth-runner"}])
	tenant_placement.violations(other) == {{"msg": "pod of tenant 'ridehail' uses service account 'growth-runner', not its own 'ridehail-runner'"}}
}

test_unknown_tenant_is_refused if {
	stranger := json.patch(job, [{"op": "replace", "path": "/review/object/spec/template/metadata/labels/mlplat~1tenant", "value": "nobody"}])
	tenant_placement.violations(stranger) == {{"msg": "pod is labelled for tenant 'nobody', which the platform does not know"}}
}

test_gatekeeper_namespace_beside_the_object_counts if {
	pod := json.remove(job, ["review/object/metadata"])
	review := json.patch(pod, [{"op": "add", "path": "/review/namespace", "value": "tenant-ridehail"}])
	count(tenant_placement.violations(review)) == 0
}

test_unlabelled_pod_is_refused if {
	bare := json.remove(job, ["review/object/spec/template/metadata/labels"])
	tenant_placement.violations(bare) == {{"msg": "pod has no mlplat/tenant label"}}
}

isvc := {"parameters": params, "review": {"object": {
	"kind": "InferenceService",
	"metadata": {"namespace": "tenant-ridehail", "labels": {"mlplat/tenant": "ridehail"}},
	"spec": {"predictor": {"serviceAccountName": "ridehail-serving", "model": {"modelFormat": {"name": "mlflow"}}}},
}}}

test_inferenceservice_in_own_namespace_with_own_account_passes if {
	count(tenant_placement.violations(isvc)) == 0
}

test_inferenceservice_with_another_account_is_refused if {
	other := json.patch(isvc, [{"op": "replace", "path": "/review/object/spec/predictor/serviceAccountName", "value": "growth-runner"}])
	tenant_placement.violations(other) == {{"msg": "pod of tenant 'ridehail' uses service account 'growth-runner', not its own 'ridehail-serving'"}}
}

test_predictor_label_decides_the_tenant if {
	relabelled := json.patch(isvc, [{"op": "add", "path": "/review/object/spec/predictor/labels", "value": {"mlplat/tenant": "nobody"}}])
	tenant_placement.violations(relabelled) == {{"msg": "pod is labelled for tenant 'nobody', which the platform does not know"}}
}

test_serving_pod_as_the_runner_is_refused if {
	runner := json.patch(isvc, [{"op": "replace", "path": "/review/object/spec/predictor/serviceAccountName", "value": "ridehail-runner"}])
	tenant_placement.violations(runner) == {{"msg": "pod of tenant 'ridehail' uses service account 'ridehail-runner', not its own 'ridehail-serving'"}}
}

test_step_pod_as_the_serving_account_is_refused if {
	serving := json.patch(job, [{"op": "replace", "path": "/review/object/spec/template/spec/serviceAccountName", "value": "ridehail-serving"}])
	tenant_placement.violations(serving) == {{"msg": "pod of tenant 'ridehail' uses service account 'ridehail-serving', not its own 'ridehail-runner'"}}
}

platform_isvc := {"parameters": params, "review": {"object": {
	"kind": "InferenceService",
	"metadata": {"namespace": "mlplat", "labels": {"mlplat/tenant": "platform"}},
	"spec": {"predictor": {"serviceAccountName": "mlplat-runner", "model": {"modelFormat": {"name": "mlflow"}}}},
}}}

test_a_tenant_without_a_serving_account_serves_nothing if {
	tenant_placement.violations(platform_isvc) == {{"msg": "pod serves a model for 'platform', which has no serving service account"}}
}

test_no_service_account_is_refused if {
	bare := json.patch(job, [{"op": "remove", "path": "/review/object/spec/template/spec/serviceAccountName"}])
	tenant_placement.violations(bare) == {{"msg": "pod of tenant 'ridehail' names no service account (Kubernetes gives it the namespace's default), not its own 'ridehail-runner'"}}
}

trainer := json.patch(job, [
	{"op": "add", "path": "/review/object/spec/template/metadata/labels/mlplat~1role", "value": "trainer"},
	{"op": "replace", "path": "/review/object/spec/template/spec/serviceAccountName", "value": "ridehail-trainer"},
])

trainer_as_runner := json.patch(trainer, [{"op": "replace", "path": "/review/object/spec/template/spec/serviceAccountName", "value": "ridehail-runner"}])

test_trainer_pod_as_the_trainer_account_passes if {
	count(tenant_placement.violations(trainer)) == 0
}

test_trainer_pod_as_the_runner_is_refused if {
	tenant_placement.violations(trainer_as_runner) == {{"msg": "pod of tenant 'ridehail' uses service account 'ridehail-runner', not its own 'ridehail-trainer'"}}
}

test_step_pod_as_the_trainer_account_is_refused if {
	other := json.patch(job, [{"op": "replace", "path": "/review/object/spec/template/spec/serviceAccountName", "value": "ridehail-trainer"}])
	tenant_placement.violations(other) == {{"msg": "pod of tenant 'ridehail' uses service account 'ridehail-trainer', not its own 'ridehail-runner'"}}
}
