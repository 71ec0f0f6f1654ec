"""Producers' durability settings, the three-broker stack's replication, and the chaos report's one-fault merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.settings import Settings
from streams import kafka_security
from tools import chaos


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, app_env="development", stack_dir="/nonexistent", **values)  # type: ignore[arg-type]


def test_every_producer_is_acks_all_and_idempotent_unless_it_asks_for_less() -> None:
    kwargs = kafka_security.producer_kwargs(settings(kafka_bootstrap_servers="127.0.0.1:19092"), "api")
    assert kwargs["acks"] == "all" and kwargs["enable_idempotence"] is True
    assert kwargs["bootstrap_servers"] == "127.0.0.1:19092"  # the setting's brokers (KAFKA_BOOTSTRAP_SERVERS)
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
    assert merged["finished_at"] == "earlier"
    assert merged["rerun"] == {"broker_leader_kill (3 brokers, one Redis)": "now"}
    assert merged["goals"]["unanswered"] is False  # the goals cover every row, the new one included
    again = chaos.merge_into_last({**run, "phases": [phase("broker_leader_kill", brokers=3)]},
                                  _write(tmp_path / "again.json", merged))
    assert [p["name"] for p in again["phases"]] == ["baseline", "broker_kill", "broker_leader_kill"]
    assert again["goals"]["unanswered"] is True
    assert "| broker_leader_kill | 3 brokers, one Redis | 48 |" in chaos.table(again["phases"])


def _write(path: Path, report: dict[str, object]) -> Path:
    path.write_text(json.dumps(report))
    return path


# --- docker-compose.kafka3.yml: the three-broker override of docker-compose.kafka.yml --------------------------

ROOT = Path(__file__).resolve().parents[2]


def compose_files() -> tuple[dict[str, Any], dict[str, Any]]:
    """Both files as YAML, the override's Compose tags (``!override``, ``!reset``) read as their plain values."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    for tag in ("!override", "!reset"):
        Loader.add_constructor(tag, lambda loader, node: (loader.construct_sequence(node)
                                                          if isinstance(node, yaml.SequenceNode)
                                                          else loader.construct_mapping(node)))
    base = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())
    override = yaml.load((ROOT / "docker-compose.kafka3.yml").read_text(), Loader=Loader)  # noqa: S506 - SafeLoader
    return base, override


def merged_service(base: dict[str, Any], override: dict[str, Any], name: str) -> dict[str, Any]:
    """A service as Compose builds it from the two files: ``extends`` first, then the override's keys (mappings
    merged, ports and volumes of a broker replaced: they are ``!override`` in the file)."""
    svc = override["services"].get(name, {})
    start = dict(base["services"]["kafka"]) if "extends" in svc else dict(base["services"].get(name, {}))
    for key, value in svc.items():
        if key == "extends":
            continue
        start[key] = {**start.get(key, {}), **value} if isinstance(value, dict) else value
    return start


def test_the_compose_override_runs_three_replicating_brokers() -> None:
    base, override = compose_files()
    brokers = {name: merged_service(base, override, name) for name in ("kafka", "kafka-2", "kafka-3")}
    envs = {name: svc["environment"] for name, svc in brokers.items()}
    assert sorted(int(env["KAFKA_NODE_ID"]) for env in envs.values()) == [1, 2, 3]
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert voters == {"1@kafka:29093,2@kafka-2:29093,3@kafka-3:29093"}
    for name, env in envs.items():
        assert env["CLUSTER_ID"] == base["services"]["kafka"]["environment"]["CLUSTER_ID"]  # one cluster
        assert f"SASL_PLAINTEXT://{name}:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3 and int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == 2
        assert "localhost:19092" in brokers[name]["healthcheck"]["test"][1]
    # Each broker on its own host port (loopback only), advertised as that port, and its own volume.
    published = {name: svc["ports"] for name, svc in brokers.items()}
    assert published == {"kafka": ["127.0.0.1:9092:9092"], "kafka-2": ["127.0.0.1:9094:9092"],
                         "kafka-3": ["127.0.0.1:9096:9092"]}
    for name, ports in published.items():
        assert f"SASL_HOST://localhost:{ports[0].split(':')[1]}" in envs[name]["KAFKA_ADVERTISED_LISTENERS"]
    volumes = [svc["volumes"][0].split(":")[0] for svc in brokers.values()]
    assert len(set(volumes)) == 3 and set(volumes) - {"kafka-data"} <= override["volumes"].keys()
    # Every client knows all three brokers and creates its topics replicated three times.
    for name in ("kafka-acls", "kafka-init", "worker", "api"):
        env = merged_service(base, override, name)["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092,kafka-2:19092,kafka-3:19092", name
        assert env["TOPIC_REPLICATION_FACTOR"] == "3", name
    for name in ("kafka-acls", "kafka-init"):
        depends = merged_service(base, override, name)["depends_on"]
        assert all(depends[b] == {"condition": "service_healthy"} for b in brokers), (name, depends)
