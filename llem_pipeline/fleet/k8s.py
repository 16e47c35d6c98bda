"""The Kubernetes job of a GPU step, built from the same tags that route it to a Celery queue (docs/fleet.md).

A step whose op tag ``llem/resource`` is 'gpu' gets ``nvidia.com/gpu`` requested and limited (one per GPU it
measures on) and a node selector on its hardware target (``llem.io/hardware-target: <target>``, the target
resolved from the run exactly as for the Celery queue), plus the NVIDIA taint's toleration. The result is
dagster-k8s's ``dagster-k8s/config`` tag value; ``step_job`` turns it into the V1Job that dagster-k8s's
step launcher would submit, with ``construct_dagster_k8s_job``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llem_pipeline.defs.constants import CELERY_QUEUE_TAG, GPU_QUEUE_TEMPLATE
from llem_pipeline.fleet.executor import step_queue

K8S_CONFIG_TAG = "dagster-k8s/config"
TARGET_NODE_LABEL = "llem.io/hardware-target"
GPU_RESOURCE = "nvidia.com/gpu"
RESOURCE_TAG = "llem/resource"


def step_k8s_config(op_tags: Mapping[str, str], run_tags: Mapping[str, str], gpus: int = 1) -> dict[str, Any]:
    """Return the ``dagster-k8s/config`` value of a step: for a GPU step (op tag llem/resource=gpu) ``gpus``
    nvidia.com/gpu requested and limited and a node selector on the run's hardware target; {} otherwise.
    Raises FleetConfigError (from ``step_queue``) when a GPU step's run has no hardware target."""
    if op_tags.get(RESOURCE_TAG) != "gpu":
        return {}
    if gpus < 1:
        raise ValueError(f"gpus={gpus}: a GPU step needs at least one GPU")
    queue = step_queue({CELERY_QUEUE_TAG: op_tags.get(CELERY_QUEUE_TAG, GPU_QUEUE_TEMPLATE)}, run_tags, "")
    target = queue.removeprefix("gpu-")
    return {
        "container_config": {"resources": {"requests": {GPU_RESOURCE: str(gpus)}, "limits": {GPU_RESOURCE: str(gpus)}}},
        "pod_spec_config": {
            "node_selector": {TARGET_NODE_LABEL: target},
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        },
        "pod_template_spec_metadata": {"labels": {TARGET_NODE_LABEL: target, "llem.io/resource": "gpu"}},
    }


def step_tags(op_tags: Mapping[str, str], run_tags: Mapping[str, str], gpus: int = 1) -> dict[str, str]:
    """Return ``op_tags`` with the ``dagster-k8s/config`` tag of ``step_k8s_config`` added (JSON)."""
    config = step_k8s_config(op_tags, run_tags, gpus)
    return {**op_tags, **({K8S_CONFIG_TAG: json.dumps(config)} if config else {})}


def step_job(op_tags: Mapping[str, str], run_tags: Mapping[str, str], *, image: str, job_name: str,
             args: Sequence[str], gpus: int = 1, instance_config_map: str = "dagster-instance"):
    """Return the ``kubernetes.client.V1Job`` running one step: dagster-k8s's job spec from the step's tags
    (``step_tags``) with ``image`` and ``args`` (e.g. ``dagster api execute_step ...``)."""
    from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job
    from dagster_k8s.job import get_user_defined_k8s_config

    tags = step_tags(op_tags, run_tags, gpus)
    job_config = DagsterK8sJobConfig(job_image=image, dagster_home="/opt/dagster/dagster_home",
                                     image_pull_policy="IfNotPresent", instance_config_map=instance_config_map)
    return construct_dagster_k8s_job(job_config, args=list(args), job_name=job_name,
                                     user_defined_k8s_config=get_user_defined_k8s_config(tags),
                                     component="step_worker", labels={"llem.io/step": "gpu_measurement"})
