# The Pod Security "restricted" profile, beyond what the other pod policies check: seccomp
# RuntimeDefault (and no seccomp annotation saying otherwise), AppArmor only RuntimeDefault (field
# or annotation), no Windows HostProcess, the default /proc mount, no SELinux type, user or role,
# no sysctls, no group 0, every capability dropped, and only the volume types the profile allows.
package k8s.pods.restricted

import data.lib.k8s
import rego.v1

violation contains v if some v in violations(input)

violations(inp) := seccomp_violations(inp) | seccomp_annotation_violations(inp) | apparmor_violations(inp) | apparmor_annotation_violations(inp) | host_process_violations(inp) | proc_mount_violations(inp) | selinux_violations(inp) | sysctl_violations(inp) | group_violations(inp) | capability_drop_violations(inp) | volume_type_violations(inp)

pod_security_ctx(inp) := object.get(k8s.pod_spec(inp.review.object), "securityContext", {})

# Containers and the pod itself, each with its security context and a name for messages.
security_contexts(inp) := array.concat(
	[{"what": "pod", "ctx": pod_security_ctx(inp)}],
	[{"what": sprintf("container '%v'", [c.name]), "ctx": object.get(c, "securityContext", {})} | some c in k8s.containers(inp.review.object)],
)

seccomp_violations(inp) := {{"msg": msg} |
	k8s.pod_spec(inp.review.object)
	not object.get(pod_security_ctx(inp), ["seccompProfile", "type"], "") == "RuntimeDefault"
	some c in k8s.containers(inp.review.object)
	not c.securityContext.seccompProfile.type == "RuntimeDefault"
	msg := sprintf("container '%v' has no seccompProfile RuntimeDefault (on it or the pod)", [c.name])
} | {{"msg": msg} |
	some item in security_contexts(inp)
	profile := item.ctx.seccompProfile.type
	profile != "RuntimeDefault"
	msg := sprintf("%v sets seccompProfile '%v', not RuntimeDefault", [item.what, profile])
}

# The annotations Kubernetes read before the fields (seccomp until 1.27, AppArmor until 1.30):
# only the runtime's default profile.
seccomp_annotation_violations(inp) := {{"msg": msg} |
	annotations := k8s.pod_annotations(inp.review.object)
	some key
	value := annotations[key]
	is_seccomp_annotation(key)
	value != "runtime/default"
	msg := sprintf("pod annotation %v is '%v', not runtime/default", [key, value])
}

is_seccomp_annotation(key) if key == "seccomp.security.alpha.kubernetes.io/pod"

is_seccomp_annotation(key) if startswith(key, "container.seccomp.security.alpha.kubernetes.io/")

apparmor_annotation_violations(inp) := {{"msg": msg} |
	annotations := k8s.pod_annotations(inp.review.object)
	some key
	value := annotations[key]
	startswith(key, "container.apparmor.security.beta.kubernetes.io/")
	value != "runtime/default"
	msg := sprintf("pod annotation %v is '%v', not runtime/default", [key, value])
}

apparmor_violations(inp) := {{"msg": msg} |
	some item in security_contexts(inp)
	profile := item.ctx.appArmorProfile.type
	profile != "RuntimeDefault"
	msg := sprintf("%v sets appArmorProfile '%v', not RuntimeDefault", [item.what, profile])
}

host_process_violations(inp) := {{"msg": sprintf("%v sets windowsOptions.hostProcess", [item.what])} |
	some item in security_contexts(inp)
	item.ctx.windowsOptions.hostProcess == true
}

proc_mount_violations(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	mount := c.securityContext.procMount
	mount != "Default"
	msg := sprintf("container '%v' sets procMount '%v', not Default", [c.name, mount])
}

selinux_violations(inp) := {{"msg": msg} |
	some item in security_contexts(inp)
	some field in ["type", "user", "role"]
	value := item.ctx.seLinuxOptions[field]
	msg := sprintf("%v sets SELinux %v '%v'", [item.what, field, value])
}

sysctl_violations(inp) := {{"msg": msg} |
	found := object.get(pod_security_ctx(inp), "sysctls", [])
	count(found) > 0
	msg := sprintf("pod sets sysctls %v", [[s.name | some s in found]])
}

group_violations(inp) := {{"msg": sprintf("%v sets runAsGroup 0", [item.what])} |
	some item in security_contexts(inp)
	item.ctx.runAsGroup == 0
} | {{"msg": "pod sets fsGroup 0"} |
	pod_security_ctx(inp).fsGroup == 0
} | {{"msg": "pod adds supplemental group 0"} |
	some group in object.get(pod_security_ctx(inp), "supplementalGroups", [])
	group == 0
}

capability_drop_violations(inp) := {{"msg": msg} |
	some c in k8s.containers(inp.review.object)
	not "ALL" in object.get(c, ["securityContext", "capabilities", "drop"], [])
	msg := sprintf("container '%v' does not drop ALL capabilities", [c.name])
}

# The volume types the restricted profile allows.
restricted_volume_kinds := {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}

volume_type_violations(inp) := {{"msg": msg} |
	some volume in object.get(k8s.pod_spec(inp.review.object), "volumes", [])
	some kind
	volume[kind]
	kind != "name"
	not kind in restricted_volume_kinds
	msg := sprintf("volume '%v' is a %v volume, which the restricted profile does not allow", [volume.name, kind])
}
