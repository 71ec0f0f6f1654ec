"""Faust's Monitor sensor without its per-event statistics (the app's ``Monitor`` setting, :mod:`streams.app`).

Faust's Monitor counts and times every message, stream event, table access, send and commit for its own web stats
page, which this worker does not serve: its metrics are Prometheus counters (streams/metrics.py). The profile of
the decode path put those calls at about 5% of the event loop's time. What Faust itself reads from the monitor
stays: the time each partition's stream last took an event (the consumer's check for a stalled stream), and the
offsets the consumer reports to it (committed, end), which cost nothing per event.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from faust.sensors import Monitor


class QuietMonitor(Monitor):
    """Faust's Monitor, keeping only the stream inbound times that Faust's stalled-stream check reads."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict[str, Any] | None:
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_table_del(self, table: Any, key: Any) -> None:
        return None

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> Any:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None

    def on_commit_initiated(self, consumer: Any) -> Any:
        return None

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        return None
