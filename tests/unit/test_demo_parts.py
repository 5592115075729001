"""The demo's pure parts: time compression, the default trace's shape, the live view's text."""

from __future__ import annotations

from pathlib import Path


def test_policy_time_knobs_are_compressed_like_the_trace(tmp_path: Path) -> None:
    from config.settings import ScalingSettings
    from orchestrator.demo.compression import demo_overrides

    prod = ScalingSettings()
    slow = demo_overrides(tmp_path, 30.0)["scaling"]
    fast = demo_overrides(tmp_path, 240.0)["scaling"]
    assert slow["idle_timeout_s"] == prod.idle_timeout_s / 30
    assert slow["scale_down_stabilization_s"] == prod.scale_down_stabilization_s / 30
    assert slow["failure_window_s"] == prod.failure_window_s / 30
    # Never below a few Scaler cycles, however fast the replay.
    assert fast["idle_timeout_s"] >= 3 * fast["cycle_interval_s"]
    assert fast["scale_down_stabilization_s"] >= 2 * fast["cycle_interval_s"]


def test_default_trace_has_quiet_gaps_long_enough_to_scale_down() -> None:
    """Compressed into the default two minutes, the default trace's quiet gaps outlast two boots
    (boot ~8 s, then one boot time kept idle), so the fleet visibly goes back to zero in between."""
    from orchestrator.demo.compression import DEFAULT_TRACE, fit_speed
    from sim.trace import load_trace

    rows = load_trace(DEFAULT_TRACE)
    speed = fit_speed(rows, 120.0)
    busy_until = 0.0
    gaps = []
    for r in sorted(rows, key=lambda r: r.arrival_s):
        start = r.arrival_s / speed
        if busy_until and start - busy_until > 0:
            gaps.append(start - busy_until)
        busy_until = max(busy_until, start + r.duration_s / speed)
    assert sum(1 for g in gaps if g >= 16) >= 2, gaps


def test_live_view_keeps_the_decision_readable_at_120_columns() -> None:
    from rich.console import Console

    from orchestrator import live_view

    reason = (
        "no scale-down yet: surplus 4 but 4 idle worker(s) idle at most 1s; keep idle >= 8s = "
        "max(idle_timeout 8s, boot estimate 8s) while work keeps arriving"
    )
    snap = live_view.Snapshot(
        elapsed_s=42,
        speed=30,
        trace_name="demo.csv",
        submitted=6,
        total=14,
        queued=0,
        running=2,
        done=4,
        failed=0,
        workers=[live_view.WorkerLine("gpu-20261128_093615-26e134b9", "active", 17, 0, in_state_s=10, idle_s=2)],
        last_decision_at="09:36:30",
        last_decision=reason,
        last_decision_age_s=1,
        fleet_history=(0, 2, 4, 4, 2, 0),
        max_workers=4,
        shipper={"healthy": True, "shipped": 52, "pending": 1},
        dashboard_url="http://127.0.0.1:8265",
    )
    console = Console(width=120, record=True, color_system=None)
    console.print(live_view.render(snap))
    text = console.export_text()
    for clause in live_view.decision_clauses(reason):
        assert clause in text, text
    assert "gpu-20261128_093615-26e134b9" in text and "healthy; shipped 52" in text
    assert "http://127.0.0.1:8265" in text and "OTEL_EXPORTER_OTLP_ENDPOINT" in text
    assert live_view.sparkline(snap.fleet_history, 4) == "_▄██▄_"
    assert "at most 1s" in live_view.plain_line(snap) and "boot estimate" not in live_view.plain_line(snap)


def test_the_reigh_demo_keeps_its_state_apart_and_database_url_is_kept_when_asked(tmp_path: Path) -> None:
    from orchestrator.demo.compression import demo_overrides

    native = demo_overrides(tmp_path, 30.0)
    reigh = demo_overrides(tmp_path, 30.0, profile="reigh", use_database_url=True)
    assert native["database"]["url"] is None  # the embedded database, whatever DATABASE_URL says
    assert native["database"]["backend"] == "embedded"
    assert "url" not in reigh["database"]  # DATABASE_URL (a copy of the user's own) is used
    assert reigh["database"]["backend"] == "postgres"  # said, not guessed from DATABASE_URL
    assert reigh["queue"] == {"profile": "reigh"} and native["queue"] == {"profile": "native"}
    assert reigh["state_dir"] == str(tmp_path.resolve() / "reigh")
    assert reigh["database"]["embedded_dir"] != native["database"]["embedded_dir"]
    assert "REIGH_HEARTBEAT_INTERVAL_S" in reigh["provider"]["template"]["extra_env"]


def test_the_demo_says_where_the_dashboard_is_and_how_to_sign_in() -> None:
    from orchestrator.demo.runtime import dashboard_lines

    lines = dashboard_lines("http://127.0.0.1:8265", "token")
    assert lines[0] == "Ray dashboard: http://127.0.0.1:8265"
    assert "ray get-auth-token" in lines[1]
    assert dashboard_lines("http://127.0.0.1:8265", None) == ["Ray dashboard: http://127.0.0.1:8265"]
    assert dashboard_lines(None, "token") == ["the Ray dashboard is not available"]
