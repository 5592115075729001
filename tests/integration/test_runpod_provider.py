"""RunPodProvider over the real `runpod` SDK, pointed at the loopback RunPod API (no SDK mock).

What every provider promises is in `test_provider_contract.py`; here is what only RunPod does:
GPU / volume / RAM fallback, status mapping, retries and typed API errors, secret redaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from cloud.base import AuthFailed, CapacityUnavailable, NotFound, PodSpec, PodStatus, RateLimited, Transient
from cloud.retry import RetryPolicy
from cloud.runpod import RunPodProvider, classify_message
from tests.support.runpod_api import NO_GPU_ON_HOST_MESSAGE, FakeRunPodApi, Fault

API_KEY = "rpa_TESTKEY_9f8e7d6c5b4a"
DB_URL = 'postgresql://postgres.abc:S3cr3t-"pa$$"@aws-0-eu.pooler.supabase.com:6543/postgres'
SERVICE_KEY = "eyJhbGciOiJIUzI1NiJ9.service-role-secret.sig"
SECRETS = (API_KEY, DB_URL, SERVICE_KEY, "S3cr3t")
GPU_A, GPU_B = "NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"
VOLUMES = [
    {"id": "vol-peter", "name": "Peter", "size": 500, "dataCenterId": "EU-RO-1"},
    {"id": "vol-no1", "name": "EU-NO-1", "size": 500, "dataCenterId": "EU-NO-1"},
]


@pytest.fixture
def api() -> Iterator[FakeRunPodApi]:
    with FakeRunPodApi(api_key=API_KEY, gpu_types=[GPU_A, GPU_B], network_volumes=VOLUMES) as server:
        yield server


def provider(api: FakeRunPodApi, *, key: str = API_KEY, attempts: int = 4, seconds: float = 5.0) -> RunPodProvider:
    return RunPodProvider(
        key,
        base_url=api.base_url,
        retry=RetryPolicy(max_attempts=attempts, max_seconds=seconds, base_delay_s=0.01, max_delay_s=0.05),
    )


def spec(**overrides: object) -> PodSpec:
    values: dict[str, object] = {
        "image": "ghcr.io/example/gpu-worker:1",
        "gpu_types": [GPU_A, GPU_B],
        "network_volumes": ["Peter", "EU-NO-1"],
        "ram_tiers_gb": [72, 60, 48],
        "env": {
            "WORKER_ID": "gpu-20251016_175506-a6a03b7b",
            "TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "DATABASE_URL": DB_URL,
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "HEARTBEAT_INTERVAL_S": "10.0",
        },
        "secret_env_keys": frozenset({"DATABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"}),
    }
    values.update(overrides)
    return PodSpec.model_validate(values)


def test_create_walks_gpu_types_then_volumes_and_records_the_choice(api: FakeRunPodApi) -> None:
    api.no_capacity(gpu=GPU_A)  # the preferred GPU type is sold out everywhere
    api.no_capacity(volume="vol-peter")  # and the preferred volume has nothing at all
    pod = provider(api).create("gpu-1", spec())

    assert (pod.gpu_type, pod.network_volume, pod.ram_tier_gb) == (GPU_B, "EU-NO-1", 72)
    tried = [(d["gpuTypeId"], d.get("networkVolumeId"), d["minMemoryInGb"]) for d in api.deploy_inputs]
    assert tried == [
        (GPU_A, "vol-peter", 72),
        (GPU_B, "vol-peter", 72),
        (GPU_A, "vol-no1", 72),
        (GPU_B, "vol-no1", 72),
    ]
    sent = api.deploy_inputs[-1]
    assert sent["env"] == spec().env  # the secret reached the pod intact (quotes and $ escaped right)
    assert sent["dataCenterId"] == "EU-NO-1"


def test_create_falls_to_the_next_ram_tier_then_gives_a_typed_error(api: FakeRunPodApi) -> None:
    api.no_capacity(ram=72)
    pod = provider(api).create("gpu-ram", spec(network_volumes=[]))
    assert pod.ram_tier_gb == 60 and pod.gpu_type == GPU_A

    api.no_capacity(ram=60)
    api.no_capacity(ram=48)
    with pytest.raises(CapacityUnavailable, match="6 combination"):
        provider(api).create("gpu-none", spec(network_volumes=[]))


def test_a_create_whose_answer_was_lost_is_found_by_name_not_repeated(api: FakeRunPodApi) -> None:
    prov = provider(api)
    # The deploy lands, but the answer is garbage: the retry must look the pod up, not deploy twice.
    original = api._deploy

    def deploy_then_garble(query: str) -> tuple[int, object]:
        original(query)
        return 200, "<html>502 Bad Gateway</html>"

    api._deploy = deploy_then_garble  # type: ignore[method-assign]
    pod = prov.create("gpu-lost", spec())
    assert api.count("deploy") == 1
    assert pod.name == "gpu-lost"


def test_status_mapping(api: FakeRunPodApi) -> None:
    api.boot_delay_s = 60
    prov = provider(api)
    pod = prov.create("gpu-s", spec())
    assert prov.get(pod.id).status is PodStatus.PENDING  # created, not running yet
    api.boot_delay_s = 0
    running = prov.get(pod.id)
    assert running.status is PodStatus.RUNNING
    assert running.ssh_endpoint == "203.0.113.7:10121"
    assert running.cost_per_hour == pytest.approx(0.69)


def test_429_then_success(api: FakeRunPodApi) -> None:
    api.fail_next("429", "429")
    assert provider(api).list("gpu-") == []
    assert api.count("pods") == 3


def test_rate_limited_past_the_budget_is_typed(api: FakeRunPodApi) -> None:
    api.fail_next(*["429"] * 5)
    with pytest.raises(RateLimited):
        provider(api, attempts=3).list("gpu-")


@pytest.mark.parametrize("fault", ["500", "500-json"])
def test_500s_past_the_retry_budget_end_in_transient(api: FakeRunPodApi, fault: str) -> None:
    api.fail_for(60, "deploy", kind=fault)
    with pytest.raises(Transient):
        provider(api, attempts=3).create("gpu-500", spec())
    assert api.count("deploy") == 3 and api.pods == {}


def test_a_create_whose_name_lookup_fails_deploys_anyway(api: FakeRunPodApi) -> None:
    # Create is idempotent by name only as far as the list answers: when it cannot be asked, the pod
    # is created anyway (a second pod with one name is the Scaler reconcile's to terminate).
    api.fail_for(60, "pods")
    pod = provider(api, attempts=2).create("gpu-blind", spec())
    assert api.count("deploy") == 1 and [p.name for p in api.pods.values()] == ["gpu-blind"] and pod.id in api.pods


def test_malformed_json_is_transient_and_retried(api: FakeRunPodApi) -> None:
    api.fail_next("malformed")
    assert provider(api).list("gpu-") == []
    api.fail_next(*["malformed"] * 3)
    with pytest.raises(Transient, match="not JSON"):
        provider(api, attempts=2).list("gpu-")


def test_slow_answer_then_success(api: FakeRunPodApi) -> None:
    api.fail_next(Fault(kind="slow", delay_s=0.3))
    assert provider(api).create("gpu-slow", spec()).name == "gpu-slow"


def test_auth_failure_is_typed_and_not_retried(api: FakeRunPodApi) -> None:
    with pytest.raises(AuthFailed):
        provider(api, key="rpa_WRONGKEY_000000").list("gpu-")
    assert api.count("pods") == 1


def test_secrets_never_appear_in_logs_errors_or_raw(api: FakeRunPodApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    prov = provider(api, attempts=2)
    messages: list[str] = []

    api.no_capacity(gpu=GPU_A)
    pod = prov.create("gpu-secret", spec())
    for found in (pod, prov.get(pod.id), *prov.list("gpu-")):
        dumped = found.model_dump_json()
        assert "DATABASE_URL" in dumped  # the keys stay visible for the audit trail...
        messages.append(dumped)  # ...the values must not
        messages.append(repr(found))

    api.fail_for(60, "deploy", kind="500-json")
    with pytest.raises(Transient) as transient:
        prov.create("gpu-fail", spec())
    api.end_faults()
    api.no_capacity(gpu=GPU_B)
    with pytest.raises(CapacityUnavailable) as capacity:
        prov.create("gpu-cap", spec())
    for info in (transient, capacity):
        messages += [str(info.value), repr(info.value), repr(info.value.__cause__), repr(info.value.__context__)]

    with pytest.raises(AuthFailed) as auth:
        provider(api, key=API_KEY + "x").create("gpu-auth", spec())
    messages += [str(auth.value), repr(prov)]

    messages += [record.getMessage() for record in caplog.records]
    messages += [str(record.args) for record in caplog.records]
    assert len(caplog.records) > 5
    for text in messages:
        for secret in SECRETS:
            assert secret not in text, f"secret leaked into: {text[:200]}"


@pytest.mark.parametrize(
    "message", [NO_GPU_ON_HOST_MESSAGE, "This machine does not have the resources to deploy your pod."]
)
def test_a_host_without_a_free_gpu_is_a_capacity_shortage(message: str) -> None:
    assert classify_message(message) is CapacityUnavailable


def test_resume_asks_for_the_pods_own_gpu_count_and_is_pending_until_the_container_runs(api: FakeRunPodApi) -> None:
    prov = provider(api)
    pod = prov.create("gpu-warm", spec(gpu_count=2, network_volumes=[]))
    prov.stop(pod.id)
    stopped = prov.get(pod.id)
    assert stopped.status is PodStatus.EXITED and stopped.ssh_endpoint is None

    api.resume_delay_s = 60
    resumed = prov.resume(pod.id)
    assert api.resume_inputs[-1] == {"podId": pod.id, "gpuCount": 2}
    assert (resumed.id, resumed.name, resumed.status) == (pod.id, "gpu-warm", PodStatus.PENDING)
    assert prov.get(pod.id).status is PodStatus.PENDING
    assert prov.resume(pod.id).status is PodStatus.PENDING and api.count("resume") == 1  # starting: no second resume
    api.resume_delay_s = 0
    running = prov.get(pod.id)
    assert running.status is PodStatus.RUNNING and running.ssh_endpoint == "203.0.113.7:10121"


def test_no_free_gpu_on_the_host_is_not_retried_and_the_pod_stays_stopped(api: FakeRunPodApi) -> None:
    prov = provider(api)
    pod = prov.create("gpu-full", spec(network_volumes=[]))
    prov.stop(pod.id)
    api.no_gpu_on_host()
    with pytest.raises(CapacityUnavailable, match="not enough free GPUs"):
        prov.resume(pod.id)
    assert api.count("resume") == 1  # a full host stays full for a while: the caller creates a new pod instead
    assert prov.get(pod.id).status is PodStatus.EXITED
    api.free_gpu_on_host()
    assert prov.resume(pod.id).status in (PodStatus.PENDING, PodStatus.RUNNING)


def test_stop_and_resume_are_retried_through_5xx_and_429(api: FakeRunPodApi) -> None:
    prov = provider(api)
    pod = prov.create("gpu-flaky", spec(network_volumes=[]))
    api.fail_next(Fault(kind="500", operation="stop"), Fault(kind="429", operation="stop"))
    prov.stop(pod.id)
    assert api.count("stop") == 3 and prov.get(pod.id).status is PodStatus.EXITED
    api.fail_next(Fault(kind="500-json", operation="resume"))
    prov.resume(pod.id)
    assert api.count("resume") == 2 and prov.get(pod.id).status is PodStatus.RUNNING


def test_a_stop_refused_for_a_pod_that_is_stopped_already_is_done(api: FakeRunPodApi) -> None:
    # The API's answer for stopping a stopped pod is not documented: the pod is as asked, that is enough.
    prov = provider(api)
    pod = prov.create("gpu-twice", spec(network_volumes=[]))
    api.fail_next(Fault(kind="not-found", operation="stop"))
    with pytest.raises(NotFound):  # the pod runs: the refusal stands
        prov.stop(pod.id)
    prov.stop(pod.id)
    api.fail_next(Fault(kind="not-found", operation="stop"))
    prov.stop(pod.id)
    assert prov.get(pod.id).status is PodStatus.EXITED


def test_resume_keeps_secrets_out_of_pods_errors_and_logs(api: FakeRunPodApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    prov = provider(api)
    pod = prov.create("gpu-warm-secret", spec(network_volumes=[]))
    prov.stop(pod.id)
    api.no_gpu_on_host(pod.id)
    with pytest.raises(CapacityUnavailable) as refused:
        prov.resume(pod.id)
    api.free_gpu_on_host(pod.id)
    resumed = prov.resume(pod.id)  # the answer echoes the pod's env
    assert "DATABASE_URL" in resumed.model_dump_json()
    texts = [resumed.model_dump_json(), repr(resumed), str(refused.value), repr(refused.value)]
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"secret leaked into: {text[:200]}"
