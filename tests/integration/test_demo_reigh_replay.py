"""The demo's Reigh replay waits out an unreachable database and never inserts a task twice."""

from __future__ import annotations

import socket
import threading

import psycopg

from orchestrator.demo.replay import ReighApp, Replay
from sim.trace import TraceTask
from store.base import DatabaseUnavailable
from store.postgres import PostgresStore

ROWS = [
    TraceTask(index=0, arrival_s=0.0, task_type="wan_2_2_t2v", user_id="u1", duration_s=1.0),
    TraceTask(index=1, arrival_s=0.0, task_type="wan_2_2_t2v", user_id="u2", duration_s=1.0),
]
IDS = ["6f9619ff-8b86-d011-b42d-00c04fc964f1", "6f9619ff-8b86-d011-b42d-00c04fc964f2"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _count(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        tasks = conn.execute("SELECT count(*) FROM public.tasks WHERE id = ANY(%s::uuid[])", (IDS,)).fetchone()
        projects = conn.execute("SELECT count(*) FROM public.projects WHERE name LIKE 'demo u%%'").fetchone()
    assert tasks is not None and projects is not None
    return int(tasks[0]), int(projects[0])


def test_an_unreachable_database_is_an_outage_not_a_crash() -> None:
    app = ReighApp(f"postgresql://demo:not-this@127.0.0.1:{_closed_port()}/reigh", "api")
    try:
        app.insert([(IDS[0], ROWS[0], {})], {}, [0])
    except DatabaseUnavailable as exc:
        assert "not-this" not in str(exc)
        assert "127.0.0.1" in str(exc)
    else:
        raise AssertionError("an insert into an unreachable database raised nothing")


def test_a_repeated_insert_whose_first_try_committed_adds_nothing(reigh_database_url: str) -> None:
    app = ReighApp(reigh_database_url, "api")
    batch = [(IDS[i], ROWS[i], {"duration_s": 1.0}) for i in range(2)]
    app.insert(batch, {}, [0, 1])
    assert _count(reigh_database_url) == (2, 2)
    # The answer was lost: a fresh app (nothing remembered) tries the same batch again.
    again = ReighApp(reigh_database_url, "api")
    again.insert(batch, {}, [0, 1])
    assert _count(reigh_database_url) == (2, 2)
    # and it knows the projects it found, so the next task of u1 goes to the same project
    assert set(again._projects) == {"u1", "u2"}


def test_the_replay_waits_for_the_database_and_then_inserts(reigh_database_url: str) -> None:
    # The replay starts against a port where nothing listens, then the app is pointed at the database.
    app = ReighApp(f"postgresql://127.0.0.1:{_closed_port()}/reigh", "api")
    replay = Replay(ROWS[:1], speed=1.0, reigh=app)
    store = PostgresStore(reigh_database_url, max_size=1)
    worker = threading.Thread(target=replay._insert, args=(store, [0], IDS[:1]))
    try:
        worker.start()
        worker.join(1.5)
        assert worker.is_alive() and replay.submitted == 0  # waiting, not failed
        app._conninfo = reigh_database_url  # the database is back
        worker.join(30)
        assert not worker.is_alive()
        assert replay.submitted == 1
    finally:
        replay.stop()
        worker.join(5)
        store.close()
    with psycopg.connect(reigh_database_url) as conn:
        row = conn.execute("SELECT status FROM public.tasks WHERE id = %s::uuid", (IDS[0],)).fetchone()
    assert row is not None
