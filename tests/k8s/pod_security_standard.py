"""The restricted Pod Security Standard, written out check by check.

Follows the "Restricted" profile (which includes "Baseline") as the Pod Security admission
controller enforces it at version `latest` (kubernetes.io/docs/concepts/security/
pod-security-standards; k8s.io/pod-security-admission/policy). Each violation is one line that
names the check, the field and the value, like the admission controller's own message.

Example:

    violations = restricted_violations(pod["metadata"], pod["spec"])
    assert not violations, "\\n".join(violations)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Baseline "Capabilities": the container runtime's default set may be added back.
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Baseline "Sysctls": the namespaced, safe set.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)
# Baseline "SELinux": the container types a pod may ask for.
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
# Restricted "Volume Types": only these sources.
RESTRICTED_VOLUME_SOURCES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SECURE_SECCOMP = frozenset({"RuntimeDefault", "Localhost"})
SECURE_APPARMOR = frozenset({"RuntimeDefault", "Localhost"})
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def restricted_violations(metadata: dict[str, Any] | None, spec: dict[str, Any]) -> list[str]:
    """Every way a pod (its metadata and spec) breaks the restricted Pod Security Standard.

    Args:
        metadata: the pod's (or pod template's) metadata; its annotations are checked.
            Defaults to none when None.
        spec: the PodSpec.

    Returns:
        One line per violation; empty when the pod is admitted into a namespace labelled
        `pod-security.kubernetes.io/enforce: restricted`.
    """
    metadata = metadata or {}
    pod_context = spec.get("securityContext") or {}
    containers = list(_containers(spec))
    violations: list[str] = []
    add = violations.append

    # --- Baseline -------------------------------------------------------------------------
    if (pod_context.get("windowsOptions") or {}).get("hostProcess"):
        add("windowsHostProcess: spec.securityContext.windowsOptions.hostProcess=true")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            add(f"hostNamespaces: spec.{field}=true")
    for where, container in containers:
        context = container.get("securityContext") or {}
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            add(f"windowsHostProcess: {where}.securityContext.windowsOptions.hostProcess=true")
        if context.get("privileged"):
            add(f"privileged: {where}.securityContext.privileged=true")
        added = set((context.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            add(
                f"capabilities: {where} adds {sorted(added - BASELINE_CAPABILITIES)} "
                "beyond the runtime's default set"
            )
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                add(f"hostPorts: {where} port {port.get('name', '')} hostPort={port['hostPort']}")
        proc_mount = context.get("procMount")
        if proc_mount not in (None, "Default"):
            add(f"procMount: {where}.securityContext.procMount={proc_mount}")
        seccomp = (context.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined":
            add(f"seccompProfile: {where}.securityContext.seccompProfile.type=Unconfined")
        apparmor = (context.get("appArmorProfile") or {}).get("type")
        if apparmor is not None and apparmor not in SECURE_APPARMOR:
            add(f"appArmorProfile: {where}.securityContext.appArmorProfile.type={apparmor}")
        violations.extend(_selinux_violations(f"{where}.securityContext", context))
        for probe_or_hook, handler in _handlers(container):
            if handler.get("host"):
                add(f"hostProbesAndLifecycleHooks: {where}.{probe_or_hook}.host={handler['host']}")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            add(f"hostPathVolumes: spec.volumes[{volume.get('name')}] is a hostPath")
    pod_apparmor = (pod_context.get("appArmorProfile") or {}).get("type")
    if pod_apparmor is not None and pod_apparmor not in SECURE_APPARMOR:
        add(f"appArmorProfile: spec.securityContext.appArmorProfile.type={pod_apparmor}")
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            add(f"appArmorProfile: metadata.annotations[{key}]={value}")
    violations.extend(_selinux_violations("spec.securityContext", pod_context))
    if (pod_context.get("seccompProfile") or {}).get("type") == "Unconfined":
        add("seccompProfile: spec.securityContext.seccompProfile.type=Unconfined")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            add(f"sysctls: spec.securityContext.sysctls {sysctl.get('name')} is not a safe sysctl")

    # --- Restricted -----------------------------------------------------------------------
    for volume in spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= RESTRICTED_VOLUME_SOURCES:
            add(
                f"restrictedVolumes: spec.volumes[{volume.get('name')}] uses "
                f"{sorted(sources - RESTRICTED_VOLUME_SOURCES)}"
            )
    pod_non_root = pod_context.get("runAsNonRoot") is True
    if pod_context.get("runAsUser") == 0:
        add("runAsUser: spec.securityContext.runAsUser=0")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECURE_SECCOMP:
        add(f"seccompProfile: spec.securityContext.seccompProfile.type={pod_seccomp}")
    for where, container in containers:
        context = container.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            add(
                f"allowPrivilegeEscalation: {where}.securityContext"
                ".allowPrivilegeEscalation != false"
            )
        non_root = context.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            add(f"runAsNonRoot: neither spec.securityContext nor {where} sets runAsNonRoot=true")
        if context.get("runAsUser") == 0:
            add(f"runAsUser: {where}.securityContext.runAsUser=0")
        seccomp = (context.get("seccompProfile") or {}).get("type")
        if seccomp is None and pod_seccomp is None:
            add(f"seccompProfile: neither spec.securityContext nor {where} sets a seccompProfile")
        elif seccomp is not None and seccomp not in SECURE_SECCOMP:
            add(f"seccompProfile: {where}.securityContext.seccompProfile.type={seccomp}")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            add(f"capabilities: {where}.securityContext.capabilities.drop lacks ALL")
        extra = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            add(f"capabilities: {where} adds {sorted(extra)}; only NET_BIND_SERVICE may be added")
    return violations


def _containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in _CONTAINER_LISTS:
        for container in spec.get(kind) or []:
            yield f"spec.{kind}[{container.get('name')}]", container


def _handlers(container: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        for action in ("httpGet", "tcpSocket"):
            handler = (container.get(probe) or {}).get(action)
            if handler:
                yield f"{probe}.{action}", handler
    for hook in ("postStart", "preStop"):
        for action in ("httpGet", "tcpSocket"):
            handler = ((container.get("lifecycle") or {}).get(hook) or {}).get(action)
            if handler:
                yield f"lifecycle.{hook}.{action}", handler


def _selinux_violations(where: str, context: dict[str, Any]) -> list[str]:
    options = context.get("seLinuxOptions") or {}
    violations = []
    if options.get("type", "") not in SELINUX_TYPES:
        violations.append(f"seLinuxOptions: {where}.seLinuxOptions.type={options['type']}")
    for field in ("user", "role"):
        if options.get(field):
            violations.append(f"seLinuxOptions: {where}.seLinuxOptions.{field} is set")
    return violations
