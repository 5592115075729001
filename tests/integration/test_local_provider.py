"""LocalProvider: pods are real local processes running `python -m worker`.

What every provider promises is in `test_provider_contract.py`; here is what only local pods do:
process groups, SIGKILL after the grace, reaping, fault injection, pid reuse, a create race
between processes, and a real worker against the database.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud.base import NotFound, Pod, PodSpec, PodStatus
from cloud.local import LocalFaults, LocalProvider
from tests.support.polling import stays_true, wait_for


def process_gone(pid: int) -> bool:
    """No process and no zombie with this pid (our own children must have been reaped)."""
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    prov = LocalProvider(tmp_path / "state", boot_delay_s=60, terminate_grace_s=2)
    yield prov
    for pod in prov.list(""):
        prov.terminate(pod.id)


def spec(**env: str) -> PodSpec:
    return PodSpec(image="local", gpu_types=["local"], env=env, secret_env_keys=frozenset({"DATABASE_URL"}))


def test_pod_runs_while_booting_and_terminate_returns_once_its_process_is_gone(provider: LocalProvider) -> None:
    pod = provider.create("gpu-boot", spec(DATABASE_URL="postgresql://u:secretpw@127.0.0.1:1/x"))
    assert pod.status is PodStatus.RUNNING  # a process runs from the start; the worker boots inside
    assert "secretpw" not in (provider.pods_dir / "gpu-boot.json").read_text()  # env keys on disk, never values
    provider.terminate(pod.id)
    assert process_gone(int(pod.raw["pid"]))  # terminate returns only once the group is gone (and reaped)


def test_sigkill_when_sigterm_is_ignored(provider: LocalProvider, tmp_path: Path) -> None:
    stubborn = LocalProvider(
        tmp_path / "state", boot_delay_s=0, terminate_grace_s=0.3, python=str(_stubborn_python(tmp_path))
    )
    pod = stubborn.create("gpu-stubborn", spec())
    wait_for(lambda: (tmp_path / "trap-ready").exists(), message="the SIGTERM trap")
    stubborn.terminate(pod.id)
    assert process_gone(int(pod.raw["pid"]))


def _stubborn_python(tmp_path: Path) -> Path:
    """A fake interpreter that ignores SIGTERM (only SIGKILL ends it)."""
    script = tmp_path / "stubborn.sh"
    script.write_text(f"#!/bin/sh\ntrap '' TERM\ntouch {tmp_path}/trap-ready\nwhile true; do sleep 0.1; done\n")
    script.chmod(0o755)
    return script


def test_crash_after_n_seconds_shows_exited_and_leaves_no_zombie(provider: LocalProvider) -> None:
    pod = provider.create("gpu-crash", spec(WORKER_FAULT_CRASH_AFTER_S="0.5"))
    assert pod.status is PodStatus.RUNNING
    wait_for(lambda: provider.get(pod.id).status is PodStatus.EXITED, message="the crash")
    wait_for(lambda: process_gone(int(pod.raw["pid"])), message="the child to be reaped")
    assert provider.list("gpu-")[0].status is PodStatus.EXITED  # exited pods are still listed
    provider.terminate(pod.id)
    with pytest.raises(NotFound):
        provider.get(pod.id)


def test_never_starts_fault_from_another_provider_instance(provider: LocalProvider, tmp_path: Path) -> None:
    LocalProvider(tmp_path / "state").set_fault("gpu-dud-*", LocalFaults(never_start=True))
    pod = provider.create("gpu-dud-1", spec())
    wait_for(lambda: provider.get(pod.id).status is PodStatus.EXITED, message="the dud to exit")
    log = Path(pod.raw["log_path"]).read_text()
    assert "fault injection" in log
    fine = provider.create("gpu-fine", spec())
    stays_true(lambda: provider.get(fine.id).status is PodStatus.RUNNING, 1.0, "a pod the glob does not match runs")


def test_kill_from_outside_leaves_no_zombie(provider: LocalProvider) -> None:
    pod = provider.create("gpu-killed", spec())
    os.killpg(int(pod.raw["pgid"]), 9)
    wait_for(lambda: process_gone(int(pod.raw["pid"])), message="the child to be reaped")


def test_create_is_idempotent_across_provider_instances(tmp_path: Path) -> None:
    providers = [LocalProvider(tmp_path / "state", boot_delay_s=60, terminate_grace_s=2) for _ in range(4)]
    results: list[Pod] = []
    barrier = threading.Barrier(len(providers))

    def create(prov: LocalProvider) -> None:
        barrier.wait()
        results.append(prov.create("gpu-race", spec()))

    threads = [threading.Thread(target=create, args=(p,)) for p in providers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({pod.id for pod in results}) == 1
    assert len({pod.raw["pid"] for pod in results}) == 1
    other = LocalProvider(tmp_path / "state")  # a provider of a restarted process sees it too
    assert [p.id for p in other.list("gpu-")] == [results[0].id]
    other.terminate(results[0].id)  # and can end it
    assert process_gone(int(results[0].raw["pid"]))
    assert providers[0].list("gpu-") == []


def test_pid_reuse_is_not_mistaken_for_the_pod(provider: LocalProvider) -> None:
    pod = provider.create("gpu-reuse", spec())
    record_path = provider.pods_dir / "gpu-reuse.json"
    text = record_path.read_text()
    # Pretend the pod was started at another time: the live pid is someone else's now.
    record_path.write_text(text.replace(f'"start_ticks": {pod.raw["start_ticks"]}', '"start_ticks": 1'))
    assert provider.get(pod.id).status is PodStatus.EXITED
    record_path.write_text(text)


def test_boot_delay_then_heartbeat_and_work_against_the_database(tmp_path: Path, database_url: str) -> None:
    from fleet.models import WorkerState
    from store.base import NewTask, TaskStatus
    from store.postgres import PostgresStore

    store = PostgresStore(database_url, max_size=2)
    provider = LocalProvider(tmp_path / "state", boot_delay_s=1.0, terminate_grace_s=5)
    try:
        store.create_worker("gpu-e2e", reason="test")
        store.create_worker("gpu-mute", reason="test")
        (task_id,) = store.insert_tasks([NewTask(task_type="demo", user_id="u", params={"duration_s": 0.1})])
        env = {"DATABASE_URL": database_url, "HEARTBEAT_INTERVAL_S": "0.2", "WORKER_POLL_INTERVAL_S": "0.1"}
        pod = provider.create("gpu-e2e", spec(**env))
        mute = provider.create("gpu-mute", spec(**env, WORKER_FAULT_STOP_HEARTBEAT_AFTER_S="1.5"))

        # Booting: the pod runs, the worker has not heartbeated yet.
        assert provider.get(pod.id).status is PodStatus.RUNNING
        row = store.get_worker("gpu-e2e")
        assert row is not None and row.last_heartbeat_at is None
        wait_for(lambda: (r := store.get_worker("gpu-e2e")) is not None and r.last_heartbeat_at, message="a heartbeat")

        assert store.transition_worker("gpu-e2e", WorkerState.SPAWNING, WorkerState.ACTIVE, "test: promoted")
        wait_for(lambda: (t := store.get_task(task_id)) is not None and t.status == TaskStatus.COMPLETE, message="task")

        # The muted worker's heartbeat stops advancing while its process keeps running.
        wait_for(lambda: (r := store.get_worker("gpu-mute")) is not None and r.last_heartbeat_at, message="mute beat")

        def heartbeat_stalled() -> bool:  # silent for three heartbeat intervals, by the database's clock
            row = store.get_worker("gpu-mute")
            beat = row.last_heartbeat_at if row is not None else None
            return beat is not None and (store.now() - beat).total_seconds() > 0.6

        wait_for(heartbeat_stalled, message="the muted worker's heartbeat to stop")
        assert provider.get(mute.id).status is PodStatus.RUNNING

        provider.terminate(pod.id)  # SIGTERM: the worker exits cleanly within the grace
        provider.terminate(mute.id)
        assert process_gone(int(pod.raw["pid"])) and process_gone(int(mute.raw["pid"]))
        assert "exits" in Path(pod.raw["log_path"]).read_text()
    finally:
        for leftover in provider.list(""):
            provider.terminate(leftover.id)
        store.close()


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_stop_keeps_the_pod_and_resume_restarts_it_with_the_same_env(provider: LocalProvider) -> None:
    secret = "postgresql://u:resume-secret-pw@127.0.0.1:1/x"
    pod = provider.create("gpu-warm", spec(DATABASE_URL=secret, MARKER="m1"))
    env_file = provider.pods_dir / "gpu-warm.env"
    assert env_file.stat().st_mode & 0o777 == 0o600  # the kept env holds the pod's credential

    provider.stop(pod.id)
    assert process_gone(int(pod.raw["pid"]))  # stop returns once the group is gone, like terminate
    stopped = provider.get(pod.id)
    assert stopped.status is PodStatus.EXITED and stopped.raw["stopped_at"]

    resumed = provider.resume(pod.id)
    pid = int(resumed.raw["pid"])
    assert resumed.id == pod.id and resumed.status is PodStatus.RUNNING and pid != int(pod.raw["pid"])
    env = _environ(pid)
    assert (env["DATABASE_URL"], env["MARKER"], env["WORKER_ID"]) == (secret, "m1", "gpu-warm")
    for text in ((provider.pods_dir / "gpu-warm.json").read_text(), resumed.model_dump_json(), repr(resumed)):
        assert "resume-secret-pw" not in text

    provider.terminate(pod.id)
    assert process_gone(pid) and not env_file.exists()  # the credential goes with the pod


def test_a_resume_from_several_processes_at_once_starts_one_worker(tmp_path: Path) -> None:
    providers = [LocalProvider(tmp_path / "state", boot_delay_s=60, terminate_grace_s=2) for _ in range(4)]
    pod = providers[0].create("gpu-resume-race", spec())
    providers[0].stop(pod.id)
    results: list[Pod] = []
    barrier = threading.Barrier(len(providers))

    def resume(prov: LocalProvider) -> None:
        barrier.wait()
        results.append(prov.resume(pod.id))

    threads = [threading.Thread(target=resume, args=(p,)) for p in providers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(results) == 4 and {p.id for p in results} == {pod.id}
        assert len({p.raw["pid"] for p in results}) == 1, "one worker process, not one per resume"
        assert providers[1].get(pod.id).raw["resumes"] == 1
    finally:
        providers[0].terminate(pod.id)
    assert all(process_gone(int(p.raw["pid"])) for p in results)


def test_stop_sigkills_a_pod_that_ignores_sigterm_and_resume_brings_it_back(tmp_path: Path) -> None:
    stubborn = LocalProvider(
        tmp_path / "state", boot_delay_s=0, terminate_grace_s=0.3, python=str(_stubborn_python(tmp_path))
    )
    pod = stubborn.create("gpu-stubborn-warm", spec())
    wait_for(lambda: (tmp_path / "trap-ready").exists(), message="the SIGTERM trap")
    stubborn.stop(pod.id)
    assert process_gone(int(pod.raw["pid"])) and stubborn.get(pod.id).status is PodStatus.EXITED
    (tmp_path / "trap-ready").unlink()
    resumed = stubborn.resume(pod.id)
    wait_for(lambda: (tmp_path / "trap-ready").exists(), message="the resumed process")
    stubborn.terminate(pod.id)
    assert process_gone(int(resumed.raw["pid"]))


def test_a_resumed_worker_heartbeats_again_under_its_id(tmp_path: Path, database_url: str) -> None:
    from store.postgres import PostgresStore

    store = PostgresStore(database_url, max_size=2)
    provider = LocalProvider(tmp_path / "state", boot_delay_s=0.5, resume_boot_delay_s=0.1, terminate_grace_s=5)
    try:
        store.create_worker("gpu-warm-e2e", reason="test")
        env = {"DATABASE_URL": database_url, "HEARTBEAT_INTERVAL_S": "0.2", "WORKER_POLL_INTERVAL_S": "0.1"}
        pod = provider.create("gpu-warm-e2e", spec(**env))

        def beat_since(moment: datetime) -> bool:
            row = store.get_worker("gpu-warm-e2e")
            return row is not None and row.last_heartbeat_at is not None and row.last_heartbeat_at > moment

        wait_for(lambda: beat_since(datetime.min.replace(tzinfo=UTC)), message="a heartbeat")
        provider.stop(pod.id)
        stopped_at = store.now()
        stays_true(lambda: not beat_since(stopped_at), 0.6, "no heartbeat from a stopped pod")

        provider.resume(pod.id)
        wait_for(lambda: beat_since(stopped_at), 15, message="a heartbeat from the resumed worker")
        provider.terminate(pod.id)
    finally:
        for leftover in provider.list(""):
            provider.terminate(leftover.id)
        store.close()
