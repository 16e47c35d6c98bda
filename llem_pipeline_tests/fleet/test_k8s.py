"""The GPU step's Kubernetes job, built from its tags, checked against the API schema of the kubernetes package.

The job is serialised as the API server would receive it and read back into ``V1Job`` through the
client's own deserialiser, which enforces the schema's required fields and types (client-side validation):
no cluster is needed.
"""

import json

import pytest

from llem_pipeline.defs.constants import GPU_OP_TAG, STORAGE_OP_TAG
from llem_pipeline.fleet.k8s import K8S_CONFIG_TAG, TARGET_NODE_LABEL, step_job, step_k8s_config, step_tags

pytestmark = pytest.mark.fleet


@pytest.fixture
def kubernetes():
    """The kubernetes package (fleet extra), imported by the tests that use it: collecting this module under
    `make test` (marker expression 'not fleet') must not need the extra."""
    import kubernetes as k8s

    return k8s


class _Response:
    """What ApiClient.deserialize reads: a response body."""

    def __init__(self, body: dict):
        self.data = json.dumps(body)


def _validated(kubernetes, obj, kind: str):
    """Return ``obj`` serialised to API JSON and deserialised into ``kind`` by the kubernetes client."""
    api = kubernetes.client.ApiClient()
    body = api.sanitize_for_serialization(obj)
    return body, api.deserialize(_Response(body), kind)


def test_gpu_step_job_requests_a_gpu_on_its_targets_nodes_and_matches_the_schema(kubernetes):
    job = step_job(GPU_OP_TAG, {"llem/target": "h100"}, image="registry.example/llem:0.1", job_name="llem-step-1",
                   args=["dagster", "api", "execute_step"], gpus=2)
    body, parsed = _validated(kubernetes, job, "V1Job")
    assert body["apiVersion"] == "batch/v1" and body["kind"] == "Job"
    assert isinstance(parsed, kubernetes.client.V1Job)
    pod = parsed.spec.template.spec
    assert pod.restart_policy == "Never"
    assert pod.node_selector == {TARGET_NODE_LABEL: "h100"}
    assert [t.key for t in pod.tolerations] == ["nvidia.com/gpu"]
    (container,) = pod.containers
    assert container.image == "registry.example/llem:0.1"
    assert container.resources.limits == {"nvidia.com/gpu": "2"}
    assert container.resources.requests == {"nvidia.com/gpu": "2"}
    # the pod itself is valid on its own too (a PipesK8sClient pod would use the same spec)
    _, pod_parsed = _validated(kubernetes, kubernetes.client.V1Pod(api_version="v1", kind="Pod",
                                                       metadata=parsed.spec.template.metadata, spec=pod), "V1Pod")
    assert pod_parsed.spec.containers[0].resources.limits["nvidia.com/gpu"] == "2"


def test_the_k8s_tag_follows_the_run_target_and_only_gpu_steps_get_gpus():
    a100 = json.loads(step_tags(GPU_OP_TAG, {"llem/target": "a100"})[K8S_CONFIG_TAG])
    assert a100["pod_spec_config"]["node_selector"] == {TARGET_NODE_LABEL: "a100"}
    assert step_k8s_config(STORAGE_OP_TAG, {"llem/target": "a100"}) == {}
    assert K8S_CONFIG_TAG not in step_tags(STORAGE_OP_TAG, {"llem/target": "a100"})


def test_the_schema_check_rejects_a_pod_without_a_required_field(kubernetes):
    job = step_job(GPU_OP_TAG, {"llem/target": "h100"}, image="llem:1", job_name="llem-step-2", args=["true"])
    body = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    del body["spec"]["template"]["spec"]["containers"][0]["name"]  # V1Container.name is required
    with pytest.raises(ValueError, match="name"):
        kubernetes.client.ApiClient().deserialize(_Response(body), "V1Job")
