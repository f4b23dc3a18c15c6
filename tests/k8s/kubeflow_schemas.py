"""A structural JSON schema for the Kubeflow training operator's TFJob (kubeflow.org/v1).

kubernetes-validate knows only built-in kinds and the operator's CRD cannot be fetched offline,
so this is written from the TFJob's documented fields (training operator v1.7 - v1.9 API
reference: TFJobSpec, RunPolicy, SchedulingPolicy, ReplicaSpec) and the checks its controller
makes before it creates anything (a DNS-1035 name, at most one Chief/Master, a container named
`tensorflow` with an image in every replica). Every field allowed at the levels we use is listed
and nothing else, so a misspelt field fails here instead of being pruned by the API server.
Each replica's pod template is a core PodTemplateSpec: `pod_of` turns it into a Pod for
kubernetes-validate, as the controller turns it into the replica's pods.
"""

from __future__ import annotations

from typing import Any

import jsonschema

REPLICA_TYPES = ("Chief", "Master", "Worker", "PS", "Evaluator")
_DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_DNS_1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}

_CONTAINER = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {
        "name": {"type": "string", "pattern": _DNS_1123_LABEL},
        "image": {"type": "string", "minLength": 1},
    },
}
_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "additionalProperties": False,
    "properties": {
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP},
        },
        # The rest of the PodSpec is checked by kubernetes-validate (pod_of).
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": _CONTAINER,
                    # The controller refuses a replica without a container of this name.
                    "contains": {
                        "required": ["name"],
                        "properties": {"name": {"const": "tensorflow"}},
                    },
                },
            },
        },
    },
}
_REPLICA_SPEC = {
    "type": "object",
    "required": ["template"],
    "additionalProperties": False,
    "properties": {
        "replicas": _INT32,
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": _TEMPLATE,
    },
}
_SCHEDULING_POLICY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "minAvailable": _INT32,
        "queue": {"type": "string"},
        "minResources": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
        "priorityClass": {"type": "string"},
        "scheduleTimeoutSeconds": _INT32,
    },
}
_RUN_POLICY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "cleanPodPolicy": {"enum": ["All", "Running", "None"]},
        "ttlSecondsAfterFinished": _INT32,
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
        "backoffLimit": _INT32,
        "schedulingPolicy": _SCHEDULING_POLICY,
        "suspend": {"type": "boolean"},
        "managedBy": {"type": "string"},
    },
}

TFJOB = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "kind": {"const": "TFJob"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "maxLength": 63, "pattern": _DNS_1035_LABEL},
                "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_1123_LABEL},
                "labels": _STRING_MAP,
                "annotations": _STRING_MAP,
            },
        },
        "spec": {
            "type": "object",
            "required": ["tfReplicaSpecs"],
            "additionalProperties": False,
            "properties": {
                "runPolicy": _RUN_POLICY,
                "successPolicy": {"enum": ["", "AllWorkers"]},
                "enableDynamicWorker": {"type": "boolean"},
                "tfReplicaSpecs": {
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"enum": list(REPLICA_TYPES)},
                    "additionalProperties": _REPLICA_SPEC,
                    # Chief and Master are the same role: one of them at most.
                    "not": {"required": ["Chief", "Master"]},
                },
            },
        },
    },
}

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {("kubeflow.org/v1", "TFJob"): TFJOB}


def custom_resource_errors(obj: dict[str, Any]) -> list[str]:
    """Every way `obj` breaks its TFJob schema; raises KeyError for other kinds."""
    schema = SCHEMAS[(obj.get("apiVersion"), obj.get("kind"))]
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]


def replica_templates(tfjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{replica type: pod template} of a TFJob."""
    return {
        replica_type: replica["template"]
        for replica_type, replica in tfjob["spec"]["tfReplicaSpecs"].items()
    }


def pod_of(tfjob: dict[str, Any], replica_type: str) -> dict[str, Any]:
    """The Pod that a replica's template makes (named as the controller names replica 0)."""
    template = tfjob["spec"]["tfReplicaSpecs"][replica_type]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **template.get("metadata", {}),
            "name": f"{tfjob['metadata']['name']}-{replica_type.lower()}-0",
            "namespace": tfjob["metadata"]["namespace"],
        },
        "spec": template["spec"],
    }
