"""WorkerRow names its time fields for the UTC conversion (a validator on every field cost most of a
1,000-row parse): every time field it has, today's and any added later, comes back in UTC."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from store.base import WorkerRow


def _time_fields() -> list[str]:
    hints = typing.get_type_hints(WorkerRow)
    return [name for name in WorkerRow.model_fields if datetime in (hints[name], *typing.get_args(hints[name]))]


def test_every_time_field_of_a_worker_row_is_utc() -> None:
    fields = _time_fields()
    assert {"created_at", "last_heartbeat_at", "idle_since"} <= set(fields), fields
    plus_two = "2026-01-01T10:00:00+02:00"
    row: dict[str, Any] = {
        "id": "gpu-1",
        "status": "active",
        "pod_id": None,
        "gpu_type": None,
        "termination_reason": None,
        "trace_context": None,
        "metadata": {},
        **dict.fromkeys(fields, plus_two),
    }
    parsed = WorkerRow.model_validate(row)
    for name in fields:
        value = getattr(parsed, name)
        assert value.tzinfo is UTC, (name, value)
        assert value == datetime(2026, 1, 1, 8, tzinfo=UTC), (name, value)
    naive = WorkerRow.model_validate({**row, "created_at": datetime(2026, 1, 1, 10)})
    assert naive.created_at == datetime(2026, 1, 1, 10, tzinfo=UTC) and naive.created_at.tzinfo is UTC


def test_a_worker_row_keeps_its_other_fields_as_given() -> None:
    east = timezone(timedelta(hours=2))
    row = WorkerRow(
        id="gpu-1",
        status="active",
        pod_id="p1",
        gpu_type="A100",
        created_at=datetime(2026, 1, 1, 10, tzinfo=east),
        promoted_at=None,
        last_heartbeat_at=None,
        terminated_at=None,
        termination_reason="2026-01-01T10:00:00+02:00",
        trace_context=None,
        metadata={"at": "2026-01-01T10:00:00+02:00"},
        task_type="travel",
    )
    assert row.created_at.tzinfo is UTC
    assert row.termination_reason == "2026-01-01T10:00:00+02:00" and row.metadata == {"at": "2026-01-01T10:00:00+02:00"}
