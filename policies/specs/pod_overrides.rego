# A tenant's pod overrides (`k8s:` in its YAML) cannot ask for privileges, host access, another
# identity or another place: dagster-k8s merges them into every step pod as written.
package mlplat.specs.pod_overrides

import rego.v1

violation contains v if some v in violations(input)

# dagster-k8s accepts both spellings of each field.
forbidden_pod := {
	"host_network": "host networking", "hostNetwork": "host networking",
	"host_pid": "the host's PID namespace", "hostPID": "the host's PID namespace",
	"host_ipc": "the host's IPC namespace", "hostIPC": "the host's IPC namespace",
	"service_account_name": "another service account", "serviceAccountName": "another service account",
	"service_account": "another service account", "serviceAccount": "another service account",
	"automount_service_account_token": "a Kubernetes API token", "automountServiceAccountToken": "a Kubernetes API token",
	"node_name": "a node of its choosing", "nodeName": "a node of its choosing",
}

violations(inp) := pod_fields(inp) | host_paths(inp) | security(inp) | pod_security(inp)


pod_fields(inp) := {{"msg": msg, "file": inp.file} |
	some field
	what := forbidden_pod[field]
	object.get(inp.tenant.k8s.pod_spec_config, field, null) != null
	msg := sprintf("k8s.pod_spec_config.%v asks for %v", [field, what])
}

host_paths(inp) := {{"msg": msg, "file": inp.file} |
	some volume in object.get(inp.tenant.k8s.pod_spec_config, "volumes", [])
	some key in ["host_path", "hostPath"]
	volume[key]
	msg := sprintf("k8s.pod_spec_config.volumes: volume '%v' asks for a host path", [volume.name])
}

container_ctx(inp) := object.union(
	object.get(inp.tenant.k8s.container_config, "security_context", {}),
	object.get(inp.tenant.k8s.container_config, "securityContext", {}),
)

escalating := {
	"privileged": true,
	"allow_privilege_escalation": true, "allowPrivilegeEscalation": true,
	"read_only_root_filesystem": false, "readOnlyRootFilesystem": false,
	"run_as_non_root": false, "runAsNonRoot": false,
	"run_as_user": 0, "runAsUser": 0,
}

security(inp) := {{"msg": msg, "file": inp.file} |
	ctx := container_ctx(inp)
	some field
	bad := escalating[field]
	ctx[field] == bad
	msg := sprintf("k8s.container_config.security_context.%v: %v is not allowed", [field, bad])
} | {{"msg": msg, "file": inp.file} |
	ctx := container_ctx(inp)
	caps := object.get(ctx, "capabilities", {})
	count(object.get(caps, "add", [])) > 0
	msg := sprintf("k8s.container_config.security_context.capabilities.add: %v is not allowed", [caps.add])
} | {{"msg": msg, "file": inp.file} |
	some key in ["ports"]
	some port in object.get(inp.tenant.k8s.container_config, key, [])
	some host in ["host_port", "hostPort"]
	port[host]
	msg := sprintf("k8s.container_config.ports: host port %v is not allowed", [port[host]])
}

pod_security(inp) := {{"msg": msg, "file": inp.file} |
	pod_spec := inp.tenant.k8s.pod_spec_config
	ctx := object.union(object.get(pod_spec, "security_context", {}), object.get(pod_spec, "securityContext", {}))
	some field in ["run_as_non_root", "runAsNonRoot", "run_as_user", "runAsUser"]
	ctx[field] == escalating[field]
	msg := sprintf("k8s.pod_spec_config.security_context.%v: %v is not allowed", [field, ctx[field]])
}
