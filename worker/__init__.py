"""The reference worker that runs inside a pod: heartbeat, claim, run, drain.

`python -m worker --worker-id ID` (see `worker.__main__` for the env it reads), or from Python
`worker.runner.run_worker(store, worker_id, handlers, ...)`. It runs outside Ray and needs only
the database settings.
"""

__all__ = ["handlers", "logs", "runner", "tracing"]
