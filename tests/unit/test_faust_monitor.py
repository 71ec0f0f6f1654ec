"""The worker's Faust monitor keeps no per-event statistics, only what Faust's stalled-stream check reads."""

from __future__ import annotations

from faust.types import TP

from streams.faust_monitor import QuietMonitor


def test_only_the_stream_inbound_time_is_kept() -> None:
    monitor = QuietMonitor()
    tp = TP("waste.uploads.completed", 2)
    state = monitor.on_stream_event_in(tp, 7, stream=None, event=None)
    monitor.on_stream_event_out(tp, 7, stream=None, event=None, state=state)
    monitor.on_send_completed(None, monitor.on_send_initiated(None, "t", None, 1, 2), None)
    assert tp in monitor.stream_inbound_time  # a partition whose stream takes events is not reported as stalled
    assert monitor.events_total == 0 and monitor.messages_sent == 0 and not monitor.events_runtime


def test_the_worker_uses_it_unless_asked_for_faust_statistics() -> None:
    from types import SimpleNamespace

    from faust.sensors import Monitor

    from models.settings import Settings
    from streams.app import _apply_settings, app

    try:
        for stats, expected in ((False, QuietMonitor), (True, Monitor)):
            conf = SimpleNamespace(Monitor=Monitor)
            app.context.use_settings(Settings(_env_file=None, faust_monitor_stats=stats))  # type: ignore[call-arg]
            _apply_settings(app, conf)
            assert conf.Monitor is expected
    finally:
        app.context.install(None)  # the next test reads its own settings
