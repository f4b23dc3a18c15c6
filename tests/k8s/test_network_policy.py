"""Who may talk to whom, as the NetworkPolicies in the built kustomizations decide it.

A small evaluator of NetworkPolicy semantics (networking.k8s.io/v1: a pod is isolated for a
direction once any policy selecting it names that direction; a connection needs the source's
egress and the destination's ingress allowed; peers by pod, namespace or ipBlock; ports by number
or by the destination pod's port name) answers concrete questions: can a training step reach the
object store, can anyone else push to the Pushgateway, and so on.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest
from manifests import NAMESPACE, find, matches


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels + named ports) or, with only `ip`, an address outside."""

    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    ip: str | None = None

    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


TRAINING = Endpoint(
    NAMESPACE,
    {"app.kubernetes.io/name": "plateau-lstm", "app.kubernetes.io/component": "training"},
    {"metrics": 9464},
)
# A worker of a multi-worker run (TFJob): a training pod with the DAG's mark and TF's port.
TFJOB_WORKER = Endpoint(
    NAMESPACE,
    {**TRAINING.labels, "plateau-lstm/distribution": "multi-worker"},
    {"metrics": 9464, "tfjob-port": 2222},
)
# The same labels in another namespace: not one of ours.
FOREIGN_WORKER = Endpoint("team-x", TFJOB_WORKER.labels, TFJOB_WORKER.ports)
PUSHGATEWAY = Endpoint(
    NAMESPACE,
    {"app.kubernetes.io/name": "pushgateway", "app.kubernetes.io/part-of": "plateau-lstm"},
    {"http": 9091},
)
UNLABELLED = Endpoint(NAMESPACE, {"app": "something-else"})
KUBE_DNS = Endpoint("kube-system", {"k8s-app": "kube-dns"}, {"dns": 53})
PROMETHEUS = Endpoint("monitoring", {"app.kubernetes.io/name": "prometheus"})
AIRFLOW_WORKER = Endpoint("airflow", {"component": "worker"})
OTHER_TEAM = Endpoint("team-x", {"app.kubernetes.io/name": "prometheus"})
MINIO = Endpoint("minio", {"app.kubernetes.io/name": "minio"}, {"api": 9000})
S3_PLACEHOLDER = Endpoint(ip="192.0.2.10")
INTERNET = Endpoint(ip="203.0.113.7")
KUBE_API = Endpoint(ip="10.96.0.1")


def _peer_matches(peer: dict[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except") or []
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], other.namespace_labels()):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or matches(peer["podSelector"], other.labels)


def _port_matches(rule_ports: list[dict] | None, port: int, protocol: str, dst: Endpoint) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            wanted = dst.ports.get(wanted)
            if wanted is None:
                continue
        if wanted <= port <= entry.get("endPort", wanted):
            return True
    return False


def _allowed(policies, subject: Endpoint, direction: str, other: Endpoint, port, protocol, dst):
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and matches(p["spec"]["podSelector"], subject.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True  # not isolated in this direction
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers is not None and not any(
                _peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers
            ):
                continue
            if _port_matches(rule.get("ports"), port, protocol, dst):
                return True
    return False


def can_connect(objects, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    policies = find(objects, "NetworkPolicy")
    egress = src.namespace is None or _allowed(policies, src, "Egress", dst, port, protocol, dst)
    ingress = dst.namespace is None or _allowed(policies, dst, "Ingress", src, port, protocol, dst)
    return egress and ingress


BASE_CASES = [
    # (source, destination, port, protocol, allowed)
    (TRAINING, KUBE_DNS, 53, "UDP", True),
    (TRAINING, KUBE_DNS, 53, "TCP", True),
    (TRAINING, KUBE_DNS, 80, "TCP", False),
    (TRAINING, S3_PLACEHOLDER, 443, "TCP", True),
    (TRAINING, S3_PLACEHOLDER, 80, "TCP", False),
    (TRAINING, INTERNET, 443, "TCP", False),
    (TRAINING, KUBE_API, 443, "TCP", False),
    (TRAINING, PUSHGATEWAY, 9091, "TCP", True),
    (TRAINING, PROMETHEUS, 9090, "TCP", False),
    (TRAINING, TRAINING, 9464, "TCP", False),
    (PROMETHEUS, TRAINING, 9464, "TCP", True),
    (PROMETHEUS, TRAINING, 8080, "TCP", False),
    (PROMETHEUS, PUSHGATEWAY, 9091, "TCP", True),
    (OTHER_TEAM, PUSHGATEWAY, 9091, "TCP", False),
    (OTHER_TEAM, TRAINING, 9464, "TCP", False),
    (AIRFLOW_WORKER, TRAINING, 9464, "TCP", False),
    (AIRFLOW_WORKER, PUSHGATEWAY, 9091, "TCP", False),
    (UNLABELLED, PUSHGATEWAY, 9091, "TCP", False),
    (UNLABELLED, INTERNET, 443, "TCP", False),
    (UNLABELLED, KUBE_DNS, 53, "UDP", False),
    (PUSHGATEWAY, INTERNET, 443, "TCP", False),
    (PUSHGATEWAY, KUBE_DNS, 53, "UDP", False),
    (PUSHGATEWAY, TRAINING, 9464, "TCP", False),
    # Multi-worker training: workers reach each other on TF's port, and only there.
    (TFJOB_WORKER, TFJOB_WORKER, 2222, "TCP", True),
    (TFJOB_WORKER, TFJOB_WORKER, 2223, "TCP", False),
    (TFJOB_WORKER, TFJOB_WORKER, 9464, "TCP", False),
    (TFJOB_WORKER, TFJOB_WORKER, 2222, "UDP", False),
    (TRAINING, TFJOB_WORKER, 2222, "TCP", False),
    (TFJOB_WORKER, TRAINING, 2222, "TCP", False),
    (UNLABELLED, TFJOB_WORKER, 2222, "TCP", False),
    (AIRFLOW_WORKER, TFJOB_WORKER, 2222, "TCP", False),
    (FOREIGN_WORKER, TFJOB_WORKER, 2222, "TCP", False),
    (TFJOB_WORKER, FOREIGN_WORKER, 2222, "TCP", False),
    (PUSHGATEWAY, TFJOB_WORKER, 2222, "TCP", False),
    # ... and keep every right of a single training pod, and no more.
    (TFJOB_WORKER, KUBE_DNS, 53, "UDP", True),
    (TFJOB_WORKER, S3_PLACEHOLDER, 443, "TCP", True),
    (TFJOB_WORKER, PUSHGATEWAY, 9091, "TCP", True),
    (PROMETHEUS, TFJOB_WORKER, 9464, "TCP", True),
    (PROMETHEUS, TFJOB_WORKER, 2222, "TCP", False),
    (TFJOB_WORKER, INTERNET, 443, "TCP", False),
    (TFJOB_WORKER, INTERNET, 2222, "TCP", False),
    (TFJOB_WORKER, KUBE_API, 443, "TCP", False),
]


def _case_id(case) -> str:
    src, dst, port, protocol, allowed = case
    name = {id(v): k for k, v in globals().items() if isinstance(v, Endpoint)}
    verdict = "allowed" if allowed else "denied"
    return f"{name[id(src)]}->{name[id(dst)]}:{port}/{protocol} {verdict}"


@pytest.mark.parametrize("case", BASE_CASES, ids=_case_id)
def test_base_traffic(base_objects, case) -> None:
    src, dst, port, protocol, allowed = case
    assert can_connect(base_objects, src, dst, port, protocol) is allowed


@pytest.mark.parametrize(
    "case",
    [
        (TRAINING, MINIO, 9000, "TCP", True),
        (TRAINING, MINIO, 9001, "TCP", False),
        (TRAINING, S3_PLACEHOLDER, 443, "TCP", False),
        (TRAINING, KUBE_DNS, 53, "UDP", True),
        (TRAINING, PUSHGATEWAY, 9091, "TCP", True),
        (OTHER_TEAM, PUSHGATEWAY, 9091, "TCP", False),
        (TFJOB_WORKER, TFJOB_WORKER, 2222, "TCP", True),
        (TFJOB_WORKER, MINIO, 9000, "TCP", True),
        (TRAINING, TFJOB_WORKER, 2222, "TCP", False),
    ],
    ids=_case_id,
)
def test_production_overlay_traffic(built, case) -> None:
    src, dst, port, protocol, allowed = case
    assert can_connect(built["production"], src, dst, port, protocol) is allowed


def test_every_pod_in_the_namespace_is_isolated_both_ways(built) -> None:
    for objects in built.values():
        (deny,) = [p for p in find(objects, "NetworkPolicy") if p["spec"]["podSelector"] == {}]
        assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert not deny["spec"].get("ingress") and not deny["spec"].get("egress")


def test_the_evaluator_sees_an_open_namespace_as_open() -> None:
    # Without any policy nothing is isolated: the cases above are denied by the policies.
    assert can_connect([], TRAINING, INTERNET, 443)
    assert can_connect([], OTHER_TEAM, PUSHGATEWAY, 9091)
