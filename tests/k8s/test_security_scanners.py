"""checkov (k8s/ and the Dockerfile) and hadolint (the Dockerfile) pass, with only documented skips.

Each scanner also gets a known-bad input in the same run, to prove that it actually looks: a pass
is only worth something from a scanner that fails what it should.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from dag_pods import TFJOB_EXAMPLE
from kubeflow_schemas import pod_of
from manifests import REPO, load_documents, tool

# checkov has no checks for a TFJob (a custom resource), so the pod each of its workers runs is
# scanned as the Pod the training operator makes of it.
(_TFJOB,) = load_documents(TFJOB_EXAMPLE)
TFJOB_WORKER_POD = pod_of(_TFJOB, "Worker")
_WORKER = f"Pod.plateau-lstm.{TFJOB_WORKER_POD['metadata']['name']}"

# Every check skipped anywhere, on what, and where the reason is written. A new skip must be
# added here, in review, with its reason in the annotation or comment that makes it.
DOCUMENTED_SKIPS = {
    # Training steps are batch pods: nothing to probe (pod-template.yaml annotations, which the
    # TFJob's workers carry too).
    ("CKV_K8S_8", "Pod.plateau-lstm.plateau-lstm-step"),
    ("CKV_K8S_9", "Pod.plateau-lstm.plateau-lstm-step"),
    ("CKV_K8S_8", _WORKER),
    ("CKV_K8S_9", _WORKER),
    # Image digests: the DAG sets the training image per deployment; the Pushgateway's upstream
    # tag is pinned and its digest belongs to the copy in your registry (annotations).
    ("CKV_K8S_43", "Pod.plateau-lstm.plateau-lstm-step"),
    ("CKV_K8S_43", _WORKER),
    ("CKV_K8S_43", "Deployment.plateau-lstm.pushgateway"),
}

INSECURE_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: insecure
  namespace: plateau-lstm
spec:
  hostNetwork: true
  containers:
    - name: app
      image: example/app:latest
      securityContext:
        privileged: true
        allowPrivilegeEscalation: true
"""
INSECURE_DOCKERFILE = """\
FROM python:latest
ENV AWS_SECRET_ACCESS_KEY=hunter2
RUN pip install requests
ADD https://example.com/tool.tgz /opt/
"""


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, dict]]:
    bad = tmp_path_factory.mktemp("insecure")
    (bad / "insecure-pod.yaml").write_text(INSECURE_POD, encoding="utf-8")
    (bad / "Dockerfile").write_text(INSECURE_DOCKERFILE, encoding="utf-8")
    worker_pod = tmp_path_factory.mktemp("tfjob") / "tfjob-worker-pod.yaml"
    worker_pod.write_text(yaml.safe_dump(TFJOB_WORKER_POD), encoding="utf-8")
    result = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "checkov-scan.sh"),
            "-f",
            str(worker_pod),
            "-f",
            str(bad / "insecure-pod.yaml"),
            "-f",
            str(bad / "Dockerfile"),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.stdout.strip(), f"checkov printed nothing:\n{result.stderr[-3000:]}"
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return result.returncode, {report["check_type"]: report for report in reports}


def _is_fixture(check: dict) -> bool:
    return "insecure" in check["file_abs_path"]


def test_checkov_fails_nothing_of_ours(checkov_reports) -> None:
    returncode, reports = checkov_reports
    assert set(reports) == {"kubernetes", "dockerfile"}
    for framework, report in reports.items():
        ours = [c for c in report["results"]["failed_checks"] if not _is_fixture(c)]
        assert not ours, [
            f"{framework} {c['check_id']} {c['check_name']}: {c['resource']} in {c['file_path']}"
            for c in ours
        ]
        passed = [c for c in report["results"]["passed_checks"] if not _is_fixture(c)]
        assert passed, f"checkov found nothing of ours to check in {framework}"
    assert returncode == 1  # the insecure fixtures, and only they, fail


def test_checkov_checks_the_tfjob_workers_pod(checkov_reports) -> None:
    _, reports = checkov_reports
    passed = [
        c for c in reports["kubernetes"]["results"]["passed_checks"] if c["resource"] == _WORKER
    ]
    # no privilege escalation, non-root, no NET_RAW, read-only root, seccomp (among others)
    assert {"CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_22", "CKV_K8S_31"} <= {
        c["check_id"] for c in passed
    }


def test_checkov_catches_the_insecure_fixtures(checkov_reports) -> None:
    _, reports = checkov_reports
    pod = {c["check_id"] for c in reports["kubernetes"]["results"]["failed_checks"]}
    # privileged, privilege escalation, host network, latest tag, root user
    assert {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_19", "CKV_K8S_14", "CKV_K8S_23"} <= pod
    dockerfile = {c["check_id"] for c in reports["dockerfile"]["results"]["failed_checks"]}
    # latest tag, no USER, no HEALTHCHECK, ADD from a URL
    assert {"CKV_DOCKER_7", "CKV_DOCKER_3", "CKV_DOCKER_2", "CKV_DOCKER_4"} <= dockerfile


def test_checkov_skips_only_documented_checks_with_reasons(checkov_reports) -> None:
    _, reports = checkov_reports
    skipped = [c for report in reports.values() for c in report["results"]["skipped_checks"]]
    assert {(c["check_id"], c["resource"]) for c in skipped} == DOCUMENTED_SKIPS
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.split()) >= 5, f"{check['check_id']} on {check['resource']}: {reason!r}"


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_an_insecure_dockerfile(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(INSECURE_DOCKERFILE, encoding="utf-8")
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    # latest tag, a secret in ENV, unpinned pip, pip cache
    assert {"DL3007", "DL3064", "DL3013", "DL3042"} <= codes, codes


def test_no_dockerfile_instruction_is_silenced() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "hadolint ignore" not in text
    assert "checkov:skip" not in text
    assert not (REPO / ".hadolint.yaml").exists(), "a hadolint config would hide rules"
    assert textwrap.dedent(text) == text
