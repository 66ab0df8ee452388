package k8s.pods.allowed_registries_test

import data.k8s.pods.allowed_registries
import rego.v1

pod := {"parameters": {"registries": ["registry.mlplat.example/"]}, "review": {"object": {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "registry.mlplat.example/mlplat:1"}]}}}}

test_platform_registry_passes if {
	count(allowed_registries.violations(pod)) == 0
}

test_other_registry_is_refused if {
	evil := json.patch(pod, [{"op": "replace", "path": "/review/object/spec/containers/0/image", "value": "docker.io/evil:latest"}])
	allowed_registries.violations(evil) == {{"msg": "container 'c' uses image 'docker.io/evil:latest', not from [\"registry.mlplat.example/\"]"}}
}

isvc := {"parameters": {"registries": ["registry.mlplat.example/"]}, "review": {"object": {"kind": "InferenceService", "spec": {"predictor": {"model": {"modelFormat": {"name": "mlflow"}}}}}}}

test_model_container_without_image_runs_the_serving_runtime if {
	count(allowed_registries.violations(isvc)) == 0
}

test_model_container_image_from_elsewhere_is_refused if {
	evil := json.patch(isvc, [{"op": "add", "path": "/review/object/spec/predictor/model/image", "value": "docker.io/evil:latest"}])
	allowed_registries.violations(evil) == {{"msg": "container 'kserve-container' uses image 'docker.io/evil:latest', not from [\"registry.mlplat.example/\"]"}}
}
