package k8s.pods.trainer_pod_test

import data.k8s.pods.trainer_pod
import rego.v1

params := {
	"trainer_env": ["DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"],
	"tenants": {"ridehail": {"trainer_image": "registry.mlplat.example/mlplat-trainer-ridehail:"}},
}

pipes := [{"name": "DAGSTER_PIPES_CONTEXT", "value": "e30="}, {"name": "DAGSTER_PIPES_MESSAGES", "value": "e30="}]

container := {"name": "trainer", "image": "registry.mlplat.example/mlplat-trainer-ridehail:0123abcd", "env": pipes}

scratch := {"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}

pod(c, volumes, role) := {"parameters": params, "review": {"object": {"kind": "Pod", "metadata": {"labels": {"mlplat/tenant": "ridehail", "mlplat/role": role}}, "spec": {"activeDeadlineSeconds": 900, "volumes": volumes, "containers": [c]}}}}

test_the_platforms_trainer_pod_passes if {
	count(trainer_pod.violations(pod(container, [scratch], "trainer"))) == 0
}

test_another_tenants_trainer_image_is_refused if {
	c := object.union(container, {"image": "registry.mlplat.example/mlplat-trainer-payments:0123abcd"})
	trainer_pod.violations(pod(c, [scratch], "trainer")) == {{"msg": "container 'trainer' uses image 'registry.mlplat.example/mlplat-trainer-payments:0123abcd', not its tenant's trainer image 'registry.mlplat.example/mlplat-trainer-ridehail:<env key>'"}}
}

test_extra_env_is_refused if {
	c := object.union(container, {"env": array.concat(pipes, [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}])})
	trainer_pod.violations(pod(c, [scratch], "trainer")) == {{"msg": "container 'trainer' sets env AWS_ACCESS_KEY_ID; a trainer pod has only the Pipes bootstrap [\"DAGSTER_PIPES_CONTEXT\", \"DAGSTER_PIPES_MESSAGES\"]"}}
}

test_a_pipes_variable_read_from_elsewhere_is_refused if {
	c := object.union(container, {"env": [{"name": "DAGSTER_PIPES_CONTEXT", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}}}]})
	count(trainer_pod.violations(pod(c, [scratch], "trainer"))) == 1
}

test_env_from_is_refused if {
	c := object.union(container, {"envFrom": [{"configMapRef": {"name": "dagster-pipeline-env"}}]})
	trainer_pod.violations(pod(c, [scratch], "trainer")) == {{"msg": "container 'trainer' reads envFrom; a trainer pod reads no Secret or ConfigMap"}}
}

test_an_unbounded_scratch_volume_is_refused if {
	trainer_pod.violations(pod(container, [{"name": "tmp", "emptyDir": {}}], "trainer")) == {{"msg": "volume 'tmp' is not a size-limited emptyDir, the only volume a trainer pod has"}}
}

test_no_deadline_is_refused if {
	p := pod(container, [scratch], "trainer")
	no_deadline := json.remove(p, ["review/object/spec/activeDeadlineSeconds"])
	trainer_pod.violations(no_deadline) == {{"msg": "trainer pod sets no activeDeadlineSeconds"}}
}

test_other_pods_are_not_judged_here if {
	count(trainer_pod.violations(pod(object.union(container, {"envFrom": [{"secretRef": {"name": "s"}}]}), [], "step"))) == 0
}
