"""The pod provider contract (`cloud/base.py`), one test run over every implementation.

Each test is parametrized over `LocalProvider` (pods are local processes) and `RunPodProvider`
(the real `runpod` SDK against the loopback GraphQL stand-in), kopf-style: one contract, every
implementation. What only one provider does (process groups, GPU/volume fallback, retries) is in
`test_local_provider.py` and `test_runpod_provider.py`.

The contract allows eventual consistency ("a pod just terminated may still be listed for a
while"), so what must hold *eventually* is polled, never assumed at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud.base import CapacityUnavailable, InvalidSpec, NotFound, Pod, PodSpec, PodStatus, Provider
from cloud.local import LocalFaults, LocalProvider
from cloud.retry import RetryPolicy
from cloud.runpod import RunPodProvider
from tests.support.polling import stays_true, wait_for
from tests.support.runpod_api import FakeRunPodApi

API_KEY = "rpa_CONTRACTKEY_0a1b2c3d"
SECRET = "postgresql://u:c0ntract-secret-pw@127.0.0.1:1/x"
GPU = "NVIDIA GeForce RTX 4090"
UNKNOWN_ID = "neverexisted1"  # a well-formed id no provider has handed out


@dataclass
class Backend:
    """A provider with the knobs the contract needs from the world behind it."""

    provider: Provider
    another: Callable[[], Provider]  # a second instance over the same pods (another process, a restart)
    stop_from_outside: Callable[[Pod], None]  # the pod stops by itself (crash, OOM, host reboot)
    runs: Callable[[Pod], bool]  # seen from the world behind the provider: the pod's container/process runs
    refuse_resumes: Callable[[Pod], None]  # the pod's host has no free GPU for it any more

    def spec(self, **env: str) -> PodSpec:
        return PodSpec(
            image="ghcr.io/example/gpu-worker:1", gpu_types=[GPU], env=env, secret_env_keys=frozenset({"DATABASE_URL"})
        )


@contextlib.contextmanager
def _local(tmp_path: Path) -> Iterator[Backend]:
    def make() -> LocalProvider:
        return LocalProvider(tmp_path / "state", boot_delay_s=60, terminate_grace_s=2)

    provider = make()

    def kill(pod: Pod) -> None:
        os.killpg(int(pod.raw["pgid"]), signal.SIGKILL)

    def runs(pod: Pod) -> bool:
        record = json.loads((provider.pods_dir / f"{pod.name}.json").read_text())
        try:
            state = Path(f"/proc/{record['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state not in ("Z", "X")

    def refuse(pod: Pod) -> None:
        provider.set_fault(pod.name, LocalFaults(resume_refused=True))

    yield Backend(provider=provider, another=make, stop_from_outside=kill, runs=runs, refuse_resumes=refuse)


@contextlib.contextmanager
def _runpod() -> Iterator[Backend]:
    with FakeRunPodApi(api_key=API_KEY, gpu_types=[GPU]) as api:

        def make() -> RunPodProvider:
            retry = RetryPolicy(max_attempts=3, max_seconds=5.0, base_delay_s=0.01, max_delay_s=0.05)
            return RunPodProvider(API_KEY, base_url=api.base_url, retry=retry)

        def exit_pod(pod: Pod) -> None:
            api.pods[pod.id].desired = "EXITED"

        def runs(pod: Pod) -> bool:
            return bool(api.pods[pod.id].answer(api.boot_delay_s, api.resume_delay_s)["runtime"])

        def refuse(pod: Pod) -> None:
            api.no_gpu_on_host(pod.id)

        yield Backend(provider=make(), another=make, stop_from_outside=exit_pod, runs=runs, refuse_resumes=refuse)


@pytest.fixture(params=["local", "runpod"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with _local(tmp_path) if request.param == "local" else _runpod() as found:
        try:
            yield found
        finally:
            for pod in found.provider.list(""):
                found.provider.terminate(pod.id)


def gone(provider: Provider, pod_id: str) -> bool:
    try:
        provider.get(pod_id)
    except NotFound:
        return pod_id not in {p.id for p in provider.list("")}
    return False


def test_a_created_pod_is_found_by_id_and_listed_by_prefix(backend: Backend) -> None:
    provider = backend.provider
    assert provider.name in ("local", "runpod")
    pod = provider.create("gpu-contract-1", backend.spec())
    other = provider.create("other-contract-1", backend.spec())
    assert pod.name == "gpu-contract-1" and pod.id and pod.id != other.id
    assert pod.status in (PodStatus.PENDING, PodStatus.RUNNING)

    found = wait_for(lambda: provider.get(pod.id), 10, "the new pod to be known")
    assert (found.id, found.name) == (pod.id, pod.name)
    assert found.status in (PodStatus.PENDING, PodStatus.RUNNING)
    wait_for(lambda: [p.id for p in provider.list("gpu-contract-")] == [pod.id], 10, "only the new pod listed")
    assert [p.id for p in provider.list("other-")] == [other.id]
    assert {pod.id, other.id} <= {p.id for p in provider.list("")}


def test_create_is_idempotent_by_name_across_instances(backend: Backend) -> None:
    first = backend.provider.create("gpu-contract-same", backend.spec())
    again = backend.provider.create("gpu-contract-same", backend.spec())
    restarted = backend.another().create("gpu-contract-same", backend.spec())
    assert again.id == first.id and restarted.id == first.id
    assert [p.id for p in backend.another().list("gpu-contract-")] == [first.id], "no second pod under the name"


def test_terminate_ends_the_pod_and_is_idempotent(backend: Backend) -> None:
    provider = backend.provider
    pod = provider.create("gpu-contract-t", backend.spec())
    provider.terminate(pod.id)
    wait_for(lambda: gone(provider, pod.id), 10, "the terminated pod to be gone")
    with pytest.raises(NotFound):
        provider.get(pod.id)
    provider.terminate(pod.id)  # already gone: success
    backend.another().terminate(pod.id)  # from another instance too
    assert provider.list("gpu-contract-") == []


def test_unknown_pods_are_not_found_and_terminating_them_succeeds(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.provider.get(UNKNOWN_ID)
    backend.provider.terminate(UNKNOWN_ID)  # never known is "already gone"


def test_a_name_is_free_again_once_its_pod_is_terminated(backend: Backend) -> None:
    provider = backend.provider
    first = provider.create("gpu-contract-again", backend.spec())
    provider.terminate(first.id)
    wait_for(lambda: gone(provider, first.id), 10, "the first pod to be gone")
    second = provider.create("gpu-contract-again", backend.spec())
    assert second.id != first.id and second.status is not PodStatus.TERMINATED
    assert [p.id for p in provider.list("gpu-contract-")] == [second.id]


def test_a_pod_that_stopped_by_itself_is_listed_as_exited_until_terminated(backend: Backend) -> None:
    provider = backend.provider
    pod = provider.create("gpu-contract-exit", backend.spec())
    backend.stop_from_outside(pod)
    wait_for(lambda: provider.get(pod.id).status is PodStatus.EXITED, 10, "the pod to show EXITED")
    assert [(p.id, p.status) for p in provider.list("gpu-contract-")] == [(pod.id, PodStatus.EXITED)]
    provider.terminate(pod.id)
    wait_for(lambda: gone(provider, pod.id), 10, "the exited pod to be gone")


@pytest.mark.parametrize("name", ["", "../escape", "has space", ".hidden"])
def test_bad_names_are_refused_with_a_typed_error_and_create_nothing(backend: Backend, name: str) -> None:
    with pytest.raises(InvalidSpec):
        backend.provider.create(name, backend.spec())
    assert backend.provider.list("") == []


def test_secret_env_values_never_reach_a_pod(backend: Backend) -> None:
    provider = backend.provider
    pod = provider.create("gpu-contract-secret", backend.spec(DATABASE_URL=SECRET, HEARTBEAT_INTERVAL_S="10"))
    for seen in (pod, provider.get(pod.id), *provider.list("gpu-contract-")):
        text = seen.model_dump_json() + repr(seen)
        assert "DATABASE_URL" in text, "the env keys stay visible for the audit trail"
        assert SECRET not in text and "c0ntract-secret-pw" not in text


def test_a_stopped_pod_is_kept_as_exited_and_resumes_under_its_id(backend: Backend) -> None:
    provider = backend.provider
    pod = provider.create("gpu-contract-warm", backend.spec(DATABASE_URL=SECRET))
    wait_for(lambda: backend.runs(pod), 10, "the new pod to run")

    provider.stop(pod.id)
    wait_for(lambda: provider.get(pod.id).status is PodStatus.EXITED, 10, "the stopped pod to show EXITED")
    assert not backend.runs(pod)
    assert [(p.id, p.status) for p in provider.list("gpu-contract-")] == [(pod.id, PodStatus.EXITED)]
    provider.stop(pod.id)  # stopped already: fine
    backend.another().stop(pod.id)  # from another instance too
    assert provider.get(pod.id).status is PodStatus.EXITED

    resumed = backend.another().resume(pod.id)
    assert (resumed.id, resumed.name) == (pod.id, pod.name)
    assert resumed.status in (PodStatus.PENDING, PodStatus.RUNNING)
    wait_for(lambda: provider.get(pod.id).status is PodStatus.RUNNING, 10, "the resumed pod to run")
    assert backend.runs(pod)
    again = provider.resume(pod.id)  # runs already: nothing to do
    assert again.id == pod.id and again.status is PodStatus.RUNNING
    assert [p.id for p in provider.list("gpu-contract-")] == [pod.id], "a resume makes no second pod"
    for seen in (resumed, again, provider.get(pod.id)):
        text = seen.model_dump_json() + repr(seen)
        assert SECRET not in text and "c0ntract-secret-pw" not in text

    provider.terminate(pod.id)
    wait_for(lambda: gone(provider, pod.id), 10, "the resumed pod to be gone")
    assert not backend.runs(pod)


def test_a_stopped_pod_can_be_terminated(backend: Backend) -> None:
    provider = backend.provider
    pod = provider.create("gpu-contract-park", backend.spec())
    provider.stop(pod.id)
    wait_for(lambda: provider.get(pod.id).status is PodStatus.EXITED, 10, "the stopped pod to show EXITED")
    backend.another().terminate(pod.id)
    wait_for(lambda: gone(provider, pod.id), 10, "the stopped pod to be gone")


def test_stopping_or_resuming_a_gone_pod_is_not_found(backend: Backend) -> None:
    provider = backend.provider
    pod = provider.create("gpu-contract-gone", backend.spec())
    provider.terminate(pod.id)
    wait_for(lambda: gone(provider, pod.id), 10, "the pod to be gone")
    for pod_id in (pod.id, UNKNOWN_ID):
        with pytest.raises(NotFound):
            provider.stop(pod_id)
        with pytest.raises(NotFound):
            provider.resume(pod_id)
    assert provider.list("gpu-contract-") == []


def test_a_refused_resume_is_capacity_unavailable_and_leaves_the_pod_stopped(backend: Backend) -> None:
    provider = backend.provider
    pod = provider.create("gpu-contract-full", backend.spec())
    provider.stop(pod.id)
    wait_for(lambda: provider.get(pod.id).status is PodStatus.EXITED, 10, "the stopped pod to show EXITED")
    backend.refuse_resumes(pod)
    with pytest.raises(CapacityUnavailable):
        provider.resume(pod.id)
    stays_true(lambda: provider.get(pod.id).status is PodStatus.EXITED and not backend.runs(pod), 0.5, "still stopped")
    assert [(p.id, p.status) for p in provider.list("gpu-contract-")] == [(pod.id, PodStatus.EXITED)]
