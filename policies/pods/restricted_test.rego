package k8s.pods.restricted_test

import data.k8s.pods.restricted
import rego.v1

ok_ctx := {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}

pod := {"review": {"object": {"kind": "Pod", "spec": {
	"securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
	"volumes": [{"name": "tmp", "emptyDir": {}}],
	"containers": [{"name": "c", "securityContext": ok_ctx}],
}}}}


test_the_platforms_template_passes if {
	count(restricted.violations(pod)) == 0
}

test_seccomp_on_the_container_alone_passes if {
	moved := json.patch(pod, [
		{"op": "remove", "path": "/review/object/spec/securityContext/seccompProfile"},
		{"op": "add", "path": "/review/object/spec/containers/0/securityContext/seccompProfile", "value": {"type": "RuntimeDefault"}},
	])
	count(restricted.violations(moved)) == 0
}

test_no_seccomp_profile_is_refused if {
	bare := json.patch(pod, [{"op": "remove", "path": "/review/object/spec/securityContext/seccompProfile"}])
	restricted.violations(bare) == {{"msg": "container 'c' has no seccompProfile RuntimeDefault (on it or the pod)"}}
}

test_unconfined_seccomp_is_refused if {
	restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/containers/0/securityContext/seccompProfile", "value": {"type": "Unconfined"}}])) == {{"msg": "container 'c' sets seccompProfile 'Unconfined', not RuntimeDefault"}}
}

test_default_proc_mount_passes if {
	count(restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/containers/0/securityContext/procMount", "value": "Default"}]))) == 0
}

test_unmasked_proc_mount_is_refused if {
	restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/containers/0/securityContext/procMount", "value": "Unmasked"}])) == {{"msg": "container 'c' sets procMount 'Unmasked', not Default"}}
}

test_selinux_level_alone_passes if {
	count(restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/securityContext/seLinuxOptions", "value": {"level": "s0:c123,c456"}}]))) == 0
}

test_selinux_type_is_refused if {
	restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/securityContext/seLinuxOptions", "value": {"type": "spc_t"}}])) == {{"msg": "pod sets SELinux type 'spc_t'"}}
}

test_sysctls_are_refused if {
	restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/securityContext/sysctls", "value": [{"name": "kernel.msgmax", "value": "1"}]}])) == {{"msg": "pod sets sysctls [\"kernel.msgmax\"]"}}
}

test_non_zero_groups_pass if {
	count(restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/securityContext/supplementalGroups", "value": [10001]}]))) == 0
}

test_run_as_group_zero_is_refused if {
	restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/containers/0/securityContext/runAsGroup", "value": 0}])) == {{"msg": "container 'c' sets runAsGroup 0"}}
}

test_fs_group_zero_is_refused if {
	restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/securityContext/fsGroup", "value": 0}])) == {{"msg": "pod sets fsGroup 0"}}
}

test_supplemental_group_zero_is_refused if {
	restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/securityContext/supplementalGroups", "value": [0]}])) == {{"msg": "pod adds supplemental group 0"}}
}

test_keeping_capabilities_is_refused if {
	restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/containers/0/securityContext/capabilities", "value": {"drop": ["NET_RAW"]}}])) == {{"msg": "container 'c' does not drop ALL capabilities"}}
}

test_allowed_volume_types_pass if {
	count(restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/volumes/-", "value": {"name": "cfg", "configMap": {"name": "x"}}}]))) == 0
}

test_other_volume_types_are_refused if {
	restricted.violations(json.patch(pod, [{"op": "add", "path": "/review/object/spec/volumes/-", "value": {"name": "nfs", "nfs": {"server": "10.0.0.1", "path": "/"}}}])) == {{"msg": "volume 'nfs' is a nfs volume, which the restricted profile does not allow"}}
}

test_apparmor_runtime_default_passes if {
	annotated := json.patch(pod, [
		{"op": "add", "path": "/review/object/spec/securityContext/appArmorProfile", "value": {"type": "RuntimeDefault"}},
		{"op": "add", "path": "/review/object/metadata", "value": {"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "runtime/default", "seccomp.security.alpha.kubernetes.io/pod": "runtime/default"}}},
	])
	count(restricted.violations(annotated)) == 0
}

test_apparmor_unconfined_is_refused_on_pod_and_container if {
	unconfined := json.patch(pod, [
		{"op": "add", "path": "/review/object/spec/securityContext/appArmorProfile", "value": {"type": "Unconfined"}},
		{"op": "add", "path": "/review/object/spec/containers/0/securityContext/appArmorProfile", "value": {"type": "Unconfined"}},
	])
	restricted.violations(unconfined) == {
		{"msg": "pod sets appArmorProfile 'Unconfined', not RuntimeDefault"},
		{"msg": "container 'c' sets appArmorProfile 'Unconfined', not RuntimeDefault"},
	}
}

test_apparmor_and_seccomp_annotations_other_than_the_default_are_refused if {
	annotated := json.patch(pod, [{"op": "add", "path": "/review/object/metadata", "value": {"annotations": {
		"container.apparmor.security.beta.kubernetes.io/c": "unconfined",
		"seccomp.security.alpha.kubernetes.io/pod": "unconfined",
		"container.seccomp.security.alpha.kubernetes.io/c": "localhost/any",
	}}}])
	restricted.violations(annotated) == {
		{"msg": "pod annotation container.apparmor.security.beta.kubernetes.io/c is 'unconfined', not runtime/default"},
		{"msg": "pod annotation seccomp.security.alpha.kubernetes.io/pod is 'unconfined', not runtime/default"},
		{"msg": "pod annotation container.seccomp.security.alpha.kubernetes.io/c is 'localhost/any', not runtime/default"},
	}
}

test_annotations_of_a_jobs_pod_template_are_judged if {
	job := {"review": {"object": {"kind": "Job", "spec": {"template": {
		"metadata": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
		"spec": pod.review.object.spec,
	}}}}}
	restricted.violations(job) == {{"msg": "pod annotation seccomp.security.alpha.kubernetes.io/pod is 'unconfined', not runtime/default"}}
}

test_host_process_is_refused if {
	host := json.patch(pod, [
		{"op": "add", "path": "/review/object/spec/securityContext/windowsOptions", "value": {"hostProcess": true}},
		{"op": "add", "path": "/review/object/spec/containers/0/securityContext/windowsOptions", "value": {"hostProcess": true}},
	])
	restricted.violations(host) == {
		{"msg": "pod sets windowsOptions.hostProcess"},
		{"msg": "container 'c' sets windowsOptions.hostProcess"},
	}
}

test_host_process_false_passes if {
	not_host := json.patch(pod, [{"op": "add", "path": "/review/object/spec/securityContext/windowsOptions", "value": {"hostProcess": false}}])
	count(restricted.violations(not_host)) == 0
}
