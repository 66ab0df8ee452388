package k8s.pods.read_only_root_fs_test

import data.k8s.pods.read_only_root_fs
import rego.v1

pod(c) := {"review": {"object": {"kind": "Pod", "spec": {"containers": [c]}}}}

test_read_only_passes if {
	count(read_only_root_fs.violations(pod({"name": "c", "securityContext": {"readOnlyRootFilesystem": true}}))) == 0
}

test_writable_is_refused if {
	read_only_root_fs.violations(pod({"name": "c"})) == {{"msg": "container 'c' does not set readOnlyRootFilesystem: true"}}
}

test_listed_container_may_write if {
	count(read_only_root_fs.violations(object.union(pod({"name": "c"}), {"parameters": {"writable_root_containers": ["c"]}}))) == 0
}

test_writable_model_container_is_refused if {
	isvc := {"review": {"object": {"kind": "InferenceService", "spec": {"predictor": {"model": {"securityContext": {"readOnlyRootFilesystem": false}}}}}}}
	read_only_root_fs.violations(isvc) == {{"msg": "container 'kserve-container' does not set readOnlyRootFilesystem: true"}}
}
