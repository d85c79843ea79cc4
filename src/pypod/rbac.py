"""The minimal RBAC a pypod user (or a driver pod's service account) needs, as data."""

from __future__ import annotations

from typing import Any

# What `pypod` does in a namespace: run Jobs, watch their pods and events, read logs,
# exec (REPL attach, sync) and port-forward. Worker pods need create/delete on pods; a
# K8sCluster patches its driver pod's annotations with the dashboard's port.
# Queued runs read Kueue's LocalQueues and Workloads, and their positions from the
# visibility API; without those rights they still run, with less said while waiting.
RULES: list[dict[str, Any]] = [
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete", "patch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods/exec", "pods/portforward"], "verbs": ["create", "get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues", "workloads"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["visibility.kueue.x-k8s.io"], "resources": ["localqueues/pendingworkloads"], "verbs": ["get"]},
    # `--pvc` looks its claims up first; `pypod data` creates a missing one, and keeps each
    # fetch's URLs in a Secret that its Job owns.
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["create", "get", "list"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch", "delete"]},
]


def role_objects(namespace: str, subject_kind: str, subject_name: str, name: str = "pypod") -> list[dict[str, Any]]:
    """A Role with RULES and a RoleBinding granting it to a User or ServiceAccount."""
    subject: dict[str, Any] = {"kind": subject_kind, "name": subject_name}
    if subject_kind == "ServiceAccount":
        subject["namespace"] = namespace
    else:
        subject["apiGroup"] = "rbac.authorization.k8s.io"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [subject],
        },
    ]
