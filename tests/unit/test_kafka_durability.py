"""Producers' durability settings, the three-broker stack's replication, and the chaos report's one-fault merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.settings import Settings
from streams import kafka_security
from tools import chaos


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, app_env="development", stack_dir="/nonexistent", **values)  # type: ignore[arg-type]


def test_every_producer_is_acks_all_and_idempotent_unless_it_asks_for_less() -> None:
    kwargs = kafka_security.producer_kwargs(settings(), "api")
    assert kwargs["acks"] == "all" and kwargs["enable_idempotence"] is True
    assert kwargs["bootstrap_servers"] == "127.0.0.1:9092"
    bench = kafka_security.producer_kwargs(settings(), "api", acks=1, linger_ms=0)
    assert bench["acks"] == 1 and bench["enable_idempotence"] is False and bench["linger_ms"] == 0


def test_the_worker_s_faust_producer_is_idempotent_too() -> None:
    from faust.transport import drivers

    from streams import faust_producer

    faust_producer.install()
    transport = drivers.by_url("kafka://127.0.0.1:9092")
    assert transport is faust_producer.DurableTransport
    assert transport.Producer is faust_producer.DurableProducer


@pytest.mark.parametrize(("rf", "explicit", "expected"), [(1, None, 1), (2, None, 1), (3, None, 2), (5, None, 3),
                                                          (3, 3, 3), (1, 2, 1)])
def test_min_insync_replicas_follows_the_replication_factor(rf: int, explicit: int | None, expected: int) -> None:
    assert settings(topic_replication_factor=rf, topic_min_insync_replicas=explicit).min_insync_replicas == expected


def phase(name: str, **values: object) -> dict[str, object]:
    return {"name": name, "fault": name, "photos": 8, "earlier_photos": 8, "uploads": 48, "unanswered": 0,
            "duplicates": 0, "failed": {}, "paid_calls": 8, "model_requests": 8, "extra_paid_calls": 0,
            "healthy_after_s": 1.0, "worst_wait_s": 1.0, "fault_duration_s": 30.0, "notes": "", **values}


def test_a_one_fault_run_replaces_only_its_row_of_the_last_report(tmp_path: Path) -> None:
    last = tmp_path / "latest.json"
    last.write_text(json.dumps({"finished_at": "earlier", "machine": "2 cores", "setup": {"brokers": 1},
                                "phases": [phase("baseline"), phase("broker_kill", healthy_after_s=46.9)],
                                "goals": {}}))
    run = {"finished_at": "now", "machine": "2 cores", "setup": {"cluster_brokers": 3},
           "phases": [phase("broker_leader_kill", brokers=3, unanswered=1)]}
    merged = chaos.merge_into_last(run, last)
    assert [p["name"] for p in merged["phases"]] == ["baseline", "broker_kill", "broker_leader_kill"]
    assert merged["setup"] == {"brokers": 1, "cluster_brokers": 3}
    assert merged["goals"]["unanswered"] is False  # the goals cover every row, the new one included
    again = chaos.merge_into_last({**run, "phases": [phase("broker_leader_kill", brokers=3)]},
                                  _write(tmp_path / "again.json", merged))
    assert [p["name"] for p in again["phases"]] == ["baseline", "broker_kill", "broker_leader_kill"]
    assert again["goals"]["unanswered"] is True
    assert "| broker_leader_kill (3 brokers) | 48 |" in chaos.table(again["phases"])


def _write(path: Path, report: dict[str, object]) -> Path:
    path.write_text(json.dumps(report))
    return path
