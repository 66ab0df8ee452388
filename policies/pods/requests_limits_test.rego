package k8s.pods.requests_limits_test

import data.k8s.pods.requests_limits
import rego.v1

full := {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}

params := {
	"tenants": {"t": {"caps": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}, "extended_resources": ["nvidia.com/gpu"], "trainer_caps": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "512Mi"}}},
	"platform_pod_caps": {"cpu": "500m", "memory": "1Gi"},
}

step_labels := {"mlplat/tenant": "t", "app.kubernetes.io/component": "step_worker"}

job_of(containers, labels) := {"parameters": params, "review": {"object": {
	"kind": "Job",
	"spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": containers}}},
}}}

job(resources) := job_of([{"name": "step", "resources": resources}], step_labels)

# Amounts as rule values: rego-cpp quotes string literals passed as function arguments in
# sprintf, which a real input never is.
both(amounts) := {"requests": amounts, "limits": amounts}

at_caps := {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}

huge := {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"}

three_cpus := {"cpu": "3", "memory": "1Gi"}

amd := {"cpu": "1", "memory": "1Gi", "amd.com/gpu": "1"}

not_a_quantity := {"cpu": "1", "memory": "2 GiB"}

run_worker_sized := {"cpu": "500m", "memory": "1Gi"}

four_cpus := {"cpu": "4", "memory": "1Gi"}

eight_cpus := {"cpu": "8", "memory": "1Gi"}

test_requests_and_limits_pass if {
	count(requests_limits.violations(job(full))) == 0
}

test_missing_cpu_limit_is_named if {
	requests_limits.violations(job({"requests": full.requests, "limits": {"memory": "1Gi"}})) == {{"msg": "container 'step' has no cpu limits"}}
}

test_no_resources_at_all if {
	count(requests_limits.violations(job({}))) == 4
}

test_limits_above_requests_are_refused if {
	requests_limits.violations(job({"requests": full.requests, "limits": {"cpu": "2", "memory": "1Gi"}})) == {{"msg": "container 'step' requests 1 cpu but is limited to 2: limits equal requests"}}
}

test_equal_amounts_in_other_units_pass if {
	count(requests_limits.violations(job({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1000m", "memory": "1024Mi"}}))) == 0
}

test_a_quantity_that_is_none_is_refused if {
	violations := requests_limits.violations(job(both(not_a_quantity)))
	{"msg": "container 'step' requests memory=2 GiB, which is not a Kubernetes quantity"} in violations
}

test_within_the_tenants_caps_with_its_gpu_passes if {
	count(requests_limits.violations(job(both(at_caps)))) == 0
}

test_above_the_tenants_caps_is_refused if {
	requests_limits.violations(job(both(huge))) == {
		{"msg": "pod requests 64 of cpu, more than the 4 it may have"},
		{"msg": "pod requests 512Gi of memory, more than the 16Gi it may have"},
		{"msg": "pod requests 8 of nvidia.com/gpu, more than the 1 it may have"},
	}
}

test_containers_count_together_against_the_caps if {
	two := [{"name": "a", "resources": both(three_cpus)}, {"name": "b", "resources": both(three_cpus)}]
	requests_limits.violations(job_of(two, step_labels)) == {{"msg": "pod requests 6 of cpu, more than the 4 it may have"}}
}

test_an_extended_resource_of_no_allowed_accelerator_class_is_refused if {
	requests_limits.violations(job(both(amd))) == {
		{"msg": "container 'step' asks for amd.com/gpu, which is not cpu, memory or the resource of an accelerator class its tenant may use ([\"nvidia.com/gpu\"])"},
		{"msg": "pod requests 1 of amd.com/gpu, more than the 0 it may have"},
	}
}

test_a_run_worker_gets_the_platforms_caps_not_the_tenants if {
	worker := {"mlplat/tenant": "t", "app.kubernetes.io/component": "run_worker"}
	count(requests_limits.violations(job_of([{"name": "dagster", "resources": both(run_worker_sized)}], worker))) == 0
	requests_limits.violations(job_of([{"name": "dagster", "resources": both(four_cpus)}], worker)) == {{"msg": "pod requests 4 of cpu, more than the 500m it may have"}}
}

test_a_pod_of_no_known_tenant_may_have_nothing if {
	unknown := json.patch(job(full), [{"op": "remove", "path": "/parameters"}])
	requests_limits.violations(unknown) == {
		{"msg": "pod requests 1 of cpu, more than the 0 it may have"},
		{"msg": "pod requests 1Gi of memory, more than the 0 it may have"},
	}
}

isvc(resources) := {"parameters": params, "review": {"object": {
	"kind": "InferenceService",
	"metadata": {"labels": {"mlplat/tenant": "t"}},
	"spec": {"predictor": {"model": {"modelFormat": {"name": "mlflow"}, "resources": resources}}},
}}}

test_model_container_with_requests_and_limits_passes if {
	count(requests_limits.violations(isvc(full))) == 0
}

test_model_container_without_cpu_limit_is_named_as_kserve_runs_it if {
	{"msg": "container 'kserve-container' has no cpu limits"} in requests_limits.violations(isvc({"requests": full.requests, "limits": {"memory": "1Gi"}}))
}

test_a_model_above_the_tenants_caps_is_refused if {
	requests_limits.violations(isvc(both(eight_cpus))) == {{"msg": "pod requests 8 of cpu, more than the 4 it may have"}}
}

test_predictor_containers_are_judged_too if {
	sidecar := json.patch(isvc(full), [{"op": "add", "path": "/review/object/spec/predictor/containers", "value": [{"name": "sidecar"}]}])
	count(requests_limits.violations(sidecar)) == 4
}

trainer_labels := {"mlplat/tenant": "t", "mlplat/role": "trainer"}

trainer_sized := {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "512Mi"}

trainer_too_much_scratch := {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "1Gi"}

trainer_with_a_gpu := {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "512Mi", "nvidia.com/gpu": "1"}

test_a_trainer_gets_its_scratch_space_within_its_caps if {
	count(requests_limits.violations(job_of([{"name": "trainer", "resources": both(trainer_sized)}], trainer_labels))) == 0
}

test_a_trainer_over_its_scratch_cap_is_refused if {
	requests_limits.violations(job_of([{"name": "trainer", "resources": both(trainer_too_much_scratch)}], trainer_labels)) == {{"msg": "pod requests 1073741824 of ephemeral-storage, more than the 512Mi it may have"}}
}

test_a_trainer_has_no_gpu if {
	count(requests_limits.violations(job_of([{"name": "trainer", "resources": both(trainer_with_a_gpu)}], trainer_labels))) > 0
}

test_a_step_asks_for_no_ephemeral_storage if {
	count(requests_limits.violations(job(both(trainer_sized)))) > 0
}
