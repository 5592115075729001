"""A fleet spread over two Ray worker nodes: its database connections stay few, and a lost node's
lifecycles come back on the other one, re-attach their pods by name and continue their traces.

A real Ray cluster of local processes (`ray.cluster_utils.Cluster`): a head with no lifecycle slots
(the Scaler and the StoreGateway go there) and two worker nodes advertising lifecycle slots. The
real Scaler actor brings the fleet up (min_workers pods, made through the real RunPod provider and
SDK against the loopback RunPod API); each pod gets its real WorkerLifecycle actor. Removing a node
kills its raylet and every process on it, as a lost machine would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from actors import names
from config.settings import OrchestratorSettings
from fleet.models import WorkerState
from store.postgres import PostgresStore
from tests.conftest import create_database
from tests.multinode.conftest import cluster_temp_dir
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.polling import wait_for
from tests.support.runpod_api import FakeRunPodApi

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(240)]

NAMESPACE = "gpu-orchestrator-multinode"
SCALER = "scaler-multinode"
PODS = 60
SLOTS_PER_NODE = 64  # a node alone can take the whole fleet after the other is lost
# The orchestrator's connections, whatever the fleet's size (issue: at most 10 with 200 pods).
MAX_CONNECTIONS = 10


def _settings(url: str, api: FakeRunPodApi, receiver: OtlpReceiver, state_dir: Path) -> OrchestratorSettings:
    return OrchestratorSettings(
        # The production pool sizes (no override): the connection count is the real one.
        database={"backend": "postgres", "url": url},
        provider={"kind": "runpod", "runpod_api_key": api.api_key, "runpod_api_base_url": api.base_url},
        scaling={
            "min_workers": PODS,
            "max_workers": PODS,
            "max_spawns_per_cycle": PODS,
            "cycle_interval_s": 2.0,
            "heartbeat_interval_s": 2.0,
            "heartbeat_timeout_s": 600.0,
            "spawn_timeout_s": 3600.0,
            "idle_timeout_s": 3600.0,
        },
        telemetry={"otlp_endpoint": receiver.endpoint},
        log_shipping={
            "spool_dir": state_dir / "spool",
            "fallback_file": state_dir / "logs" / "fallback.jsonl",
            "dead_letter_file": state_dir / "logs" / "dead-letter.jsonl",
        },
        ray={"namespace": NAMESPACE},
        lease_ttl_s=10.0,
        state_dir=state_dir,
    )


class Fleet:
    """The running cluster, its fleet, and what the test looks at."""

    def __init__(self, cluster: Any, settings: OrchestratorSettings, api: FakeRunPodApi, receiver: OtlpReceiver):
        self.cluster = cluster
        self.settings = settings
        self.api = api
        self.receiver = receiver
        assert settings.database.url is not None
        self.url = settings.database.url.get_secret_value()
        self.store = PostgresStore(self.url, min_size=1, max_size=2, application_name="multinode-test")

    def worker_ids(self) -> list[str]:
        return sorted(w.id for w in self.store.list_workers())

    def lifecycle(self, worker_id: str) -> Any:
        import ray

        return ray.get_actor(names.worker_actor_name(worker_id), namespace=NAMESPACE)

    def where_all(self, timeout_s: float = 20.0) -> dict[str, dict[str, Any]]:
        import ray

        ids = self.worker_ids()
        answers = ray.get([self.lifecycle(w).where.remote() for w in ids], timeout=timeout_s)
        return dict(zip(ids, answers, strict=True))

    def connections(self) -> dict[str, int]:
        """This database's client connections by application name (the query's own left out)."""
        with psycopg.connect(self.url, autocommit=True, application_name="multinode-count") as conn:
            rows = conn.execute(
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND backend_type = 'client backend'"
                " AND pid <> pg_backend_pid() GROUP BY 1"
            ).fetchall()
        return {str(name): int(n) for name, n in rows}

    def explain(self) -> str:
        rows = self.store.list_workers()
        return f"{len(rows)} rows, {sum(1 for w in rows if w.pod_id)} with pods; deploys {self.api.count('deploy')}"


@pytest.fixture(scope="module")
def fleet(pg_server_url: str, pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    import ray
    from ray.cluster_utils import Cluster

    from actors import remote

    url = create_database(pg_server_url, pg_template)
    state_dir = tmp_path_factory.mktemp("multinode-state")
    with (
        cluster_temp_dir("rmn-") as temp_dir,
        FakeRunPodApi(api_key="multinode-key") as api,
        OtlpReceiver() as receiver,
    ):
        settings = _settings(url, api, receiver, state_dir)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "temp_dir": str(temp_dir),
                "include_dashboard": False,
                # A lost node is noticed within ~3 s (Ray's default is ~30 s).
                "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
            },
        )
        try:
            for _ in range(2):
                # 2 CPUs: a raylet starts as many worker processes at once as it has CPUs.
                cluster.add_node(num_cpus=2, resources={settings.ray.lifecycle_resource: SLOTS_PER_NODE})
            ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
            fleet = Fleet(cluster, settings, api, receiver)
            started = time.monotonic()
            remote.get_or_create_scaler(settings, name=SCALER, probe_log_shipper=False)
            wait_for(
                lambda: len([w for w in fleet.store.list_workers() if w.pod_id]) == PODS,
                120,
                f"{PODS} workers with pods",
                interval_s=1.0,
                explain=fleet.explain,
            )
            print(f"{PODS} pods made in {time.monotonic() - started:.0f}s")
            wait_for(lambda: len(fleet.where_all(timeout_s=60)) == PODS, 120, "every lifecycle up", interval_s=1.0)
            print(f"{PODS} lifecycles up in {time.monotonic() - started:.0f}s")
            yield fleet
        finally:
            fleet_store = locals().get("fleet")
            if fleet_store is not None:
                fleet_store.store.close()
            ray.shutdown()
            cluster.shutdown()


def test_sixty_pods_spread_over_the_worker_nodes_hold_at_most_ten_connections(fleet: Fleet) -> None:
    import ray

    from actors import remote

    head = fleet.cluster.head_node.node_id
    workers = {node.node_id for node in fleet.cluster.worker_nodes}
    placed = fleet.where_all()
    nodes = {answer["node_id"] for answer in placed.values()}
    assert nodes <= workers and len(nodes) == 2, f"lifecycles on {nodes}, worker nodes {workers}"
    for control in (ray.get_actor(SCALER, namespace=NAMESPACE), remote.get_or_create_store_gateway(fleet.settings)):
        assert ray.get(control.where.remote(), timeout=20)["node_id"] == head, "control actors stay on the head"

    # Every lifecycle polls its row and its pod while the connections are counted.
    before = {w: ray.get(fleet.lifecycle(w).status.remote(), timeout=20)["steps"] for w in placed}
    wait_for(
        lambda: all(ray.get(fleet.lifecycle(w).status.remote(), timeout=20)["steps"] > n for w, n in before.items()),
        60,
        "every lifecycle stepping",
        interval_s=1.0,
    )
    counts = fleet.connections()
    ours = counts.get("gpu-orchestrator", 0)
    assert 0 < ours <= MAX_CONNECTIONS, f"{PODS} pods supervised: {counts}"
    assert ray.get(remote.get_or_create_store_gateway(fleet.settings).status.remote(), timeout=20)["calls"] > PODS

    # A lifecycle imports neither a database driver nor the RunPod SDK (the gateway does its calls),
    # nor pydantic-settings (it unpickles its settings); its OTLP exporter it does: an endpoint is set here.
    never = [name for name in remote.NOT_IN_A_LIFECYCLE if name != "opentelemetry.exporter"]
    assert ray.get(fleet.lifecycle(next(iter(placed))).loaded_modules.remote(never)) == []


def test_a_lost_nodes_lifecycles_come_back_on_the_other_and_reattach_their_pods(fleet: Fleet) -> None:
    import ray

    before = fleet.where_all()
    by_node: dict[str, list[str]] = {}
    for worker_id, answer in before.items():
        by_node.setdefault(answer["node_id"], []).append(worker_id)
    lost_id, moved = max(by_node.items(), key=lambda item: len(item[1]))
    lost = next(node for node in fleet.cluster.worker_nodes if node.node_id == lost_id)
    pods_before = {w.id: w.pod_id for w in fleet.store.list_workers()}
    deploys_before = fleet.api.count("deploy")

    fleet.cluster.remove_node(lost, allow_graceful=False)

    def all_back() -> dict[str, dict[str, Any]] | None:
        try:
            answers = fleet.where_all(timeout_s=10)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            return None
        return answers if all(a["node_id"] != lost_id for a in answers.values()) else None

    after = wait_for(all_back, 120, f"the {len(moved)} lifecycles of the lost node back", interval_s=1.0)
    assert {w for w, a in after.items() if a["pid"] != before[w]["pid"]} >= set(moved)

    # Every pod still supervised, by the same row and pod: none created twice, none orphaned.
    rows = {w.id: w for w in fleet.store.list_workers()}
    assert {w: r.pod_id for w, r in rows.items()} == pods_before
    names_on_api = [pod.name for pod in fleet.api.pods.values() if pod.desired != "TERMINATED"]
    assert sorted(names_on_api) == sorted(pods_before), "one pod per worker, each still running"
    assert fleet.api.count("deploy") == deploys_before == PODS

    # Traces continue: the first heartbeat promotes each worker, and a moved lifecycle records that
    # transition in the trace its row carries, from its new process.
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.is_set():
            for worker_id in rows:
                fleet.store.worker_heartbeat(worker_id)
            stop.wait(1.0)

    beats = threading.Thread(target=heartbeat, daemon=True)
    beats.start()
    try:
        wait_for(
            lambda: all(w.status is WorkerState.ACTIVE for w in fleet.store.list_workers()),
            90,
            "every worker active",
            interval_s=1.0,
            explain=fleet.explain,
        )
    finally:
        stop.set()
        beats.join(timeout=10)
    for worker_id in moved:
        trace_id = (rows[worker_id].trace_context or "").split("-")[1]
        promoted = fleet.receiver.wait_for(
            lambda spans, t=trace_id: any(s.trace_id == t and s.attributes.get("to") == "active" for s in spans),
            timeout=30,
        )
        (span,) = [s for s in promoted if s.trace_id == trace_id and s.attributes.get("to") == "active"]
        assert span.resource.get("process.pid") == after[worker_id]["pid"], "recorded by the restarted lifecycle"
        assert any(s.trace_id == trace_id and s.name != span.name for s in promoted), "the same trace as before"
