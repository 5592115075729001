"""The Ray autoscaler follows the fleet: lifecycles beyond the head's slots add a worker node, and
the node goes away when the fleet shrinks (Ray's fake multi-node provider: nodes are local processes).

The cluster is configured like ray_cluster.yaml (a head advertising a few lifecycle slots, a worker
node type advertising more), with a short idle timeout. The head is started here, not by
`ray.cluster_utils.AutoscalingCluster`, whose start and shutdown run `ray stop --force` (every Ray
on the machine, other test sessions' too); the provider is the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import OrchestratorSettings
from fleet.models import WorkerState
from store.postgres import PostgresStore
from tests.conftest import create_database, free_port
from tests.multinode.conftest import cluster_temp_dir, kill_processes_of
from tests.support.polling import wait_for
from tests.support.runpod_api import FakeRunPodApi

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(180)]

NAMESPACE = "gpu-orchestrator-autoscaling"
LIFECYCLE = "orchestrator_lifecycle"
HEAD_SLOTS = 2
NODE_SLOTS = 4
WORKER_TYPE = "worker.lifecycles"


def _autoscaling_config(gcs_address: str) -> dict[str, Any]:
    return {
        "cluster_name": "fake-orchestrator",
        "max_workers": 2,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1, LIFECYCLE: HEAD_SLOTS}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {
                "resources": {"CPU": 1, LIFECYCLE: NODE_SLOTS},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,  # 6 s: an idle worker node goes soon
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


@pytest.fixture
def autoscaling_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import ray
    from ray._private.services import get_node_ip_address
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
    from ray.cluster_utils import Cluster

    port = free_port()
    with cluster_temp_dir("ras-") as temp_dir:
        config_path = Path(temp_dir) / "autoscaling.json"
        config_path.write_text(json.dumps(_autoscaling_config(f"{get_node_ip_address()}:{port}")))
        # The autoscaler (Ray's monitor process) inherits these: the fake provider, and a 1 s update loop.
        monkeypatch.setenv("RAY_FAKE_CLUSTER", "1")
        monkeypatch.setenv("AUTOSCALER_UPDATE_INTERVAL_S", "1")
        # The head gets the node id the fake provider knows it by (what `ray start --fixed-head-id` does).
        monkeypatch.setenv("RAY_OVERRIDE_NODE_ID_FOR_TESTING", FAKE_HEAD_NODE_ID)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "gcs_server_port": port,
                "num_cpus": 1,
                "resources": {LIFECYCLE: HEAD_SLOTS},
                "temp_dir": str(temp_dir),
                "include_dashboard": False,
                "autoscaling_config": str(config_path),
            },
        )
        monkeypatch.delenv("RAY_OVERRIDE_NODE_ID_FOR_TESTING")  # the head only, never a driver or another node
        session = cluster.head_node.session_name
        try:
            ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()
            kill_processes_of(session)  # nodes the autoscaler started live in its process tree


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


def _fleet_rows(store: PostgresStore, api: FakeRunPodApi, count: int) -> list[str]:
    """Active workers whose pods run (made as the Scaler would, without one: this test is about nodes)."""
    ids = []
    for i in range(count):
        worker_id = f"gpu-20260101_000000-as{i:04d}"
        pod_id = api.add_pod(worker_id)
        store.create_worker(worker_id, reason="test: fleet set-up")
        store.set_worker_pod(worker_id, pod_id, "NVIDIA GeForce RTX 4090")
        store.worker_heartbeat(worker_id)
        store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "promoted: test set-up")
        ids.append(worker_id)
    return ids


def test_lifecycles_beyond_the_heads_slots_add_a_node_and_a_shrinking_fleet_removes_it(
    autoscaling_cluster: Any, pg_server_url: str, pg_template: str, tmp_path: Path
) -> None:
    import ray

    from actors import remote

    url = create_database(pg_server_url, pg_template)
    with FakeRunPodApi(api_key="autoscaling-key") as api:
        settings = OrchestratorSettings(
            database={"backend": "postgres", "url": url},
            provider={"kind": "runpod", "runpod_api_key": api.api_key, "runpod_api_base_url": api.base_url},
            scaling={"heartbeat_interval_s": 1.0, "cycle_interval_s": 1.0, "heartbeat_timeout_s": 600.0},
            ray={"namespace": NAMESPACE},
            state_dir=tmp_path,
        )
        store = PostgresStore(url, min_size=1, max_size=2, application_name="autoscaling-test")
        try:
            assert len(_alive_nodes()) == 1
            ids = _fleet_rows(store, api, HEAD_SLOTS + 2)
            handles = {w: remote.get_or_create_lifecycle(w, settings) for w in ids}

            # Two lifecycles more than the head has slots for: the autoscaler adds a worker node.
            placed = wait_for(
                lambda: ray.get([h.where.remote() for h in handles.values()], timeout=5),
                90,
                "every lifecycle placed (a worker node added for the two beyond the head's slots)",
                interval_s=1.0,
                explain=lambda: f"nodes: {[n['Resources'] for n in _alive_nodes()]}",
            )
            head = autoscaling_cluster.head_node.node_id
            on_new_node = [w for w, at in zip(handles, placed, strict=True) if at["node_id"] != head]
            assert len(_alive_nodes()) == 2 and len(on_new_node) == 2
            (added,) = [n for n in _alive_nodes() if n["NodeID"] != head]
            assert added["Resources"].get(LIFECYCLE) == NODE_SLOTS

            # The fleet shrinks: those two workers are retired, their lifecycles end, the node goes.
            for worker_id in on_new_node:
                assert ray.get(handles[worker_id].request_terminate.remote("test: the fleet shrinks"), timeout=30)
            wait_for(
                lambda: all(
                    (row := store.get_worker(w)) is not None and row.status is WorkerState.TERMINATED
                    for w in on_new_node
                ),
                60,
                "the two workers terminated",
                interval_s=1.0,
            )
            wait_for(lambda: len(_alive_nodes()) == 1, 60, "the idle worker node removed", interval_s=1.0)
            assert ray.get([handles[w].status.remote() for w in ids if w not in on_new_node], timeout=20)
        finally:
            store.close()
