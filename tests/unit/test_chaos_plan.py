"""The fault suite's pure parts: which stack each fault runs on, which Redis Cluster master it kills, and the
report's rows per stack."""

from __future__ import annotations

from tools import chaos, redis_cluster
from tools.chaos import CLUSTER, SINGLE

NODES = """\
0e7d 127.0.0.1:17105@27105 slave 6283 0 1796040038059 1 connected
d0a6 127.0.0.1:17103@27103 slave 2b0e 0 1796040038561 2 connected
2b0e 127.0.0.1:17101@27101 master - 0 1796040038000 2 connected 5461-10922
6283 127.0.0.1:17100@27100 myself,master - 0 0 1 connected 0-5460
612b 127.0.0.1:17104@27104 slave c7fb 0 1796040038000 3 connected
c7fb 127.0.0.1:17102@27102 master - 0 1796040038000 3 connected 10923-16383
"""


def test_every_fault_runs_on_the_cluster_by_default_but_those_of_a_single_broker_or_redis() -> None:
    groups = chaos.plan(list(chaos.FAULTS), CLUSTER)
    assert [kind for kind, _ in groups] == [CLUSTER, SINGLE]
    on_cluster, on_single = (names for _, names in groups)
    assert on_cluster[0] == "baseline" and on_single[0] == "baseline"  # each stack's own reference
    assert {"worker_kill", "worker_pause", "edge_stop", "s3_stop", "model_storm", "model_hang", "broker_leader_kill",
            "redis_master_failover", "redis_master_restart", "redis_cluster_wipe",
            "redis_cluster_outage"} <= set(on_cluster)
    assert set(on_single) == {"baseline", "broker_kill", "redis_restart", "redis_outage", "redis_wipe"}


def test_the_single_mode_keeps_the_cluster_faults_on_the_cluster() -> None:
    groups = dict(chaos.plan(list(chaos.FAULTS), SINGLE))
    assert "worker_kill" in groups[SINGLE] and "redis_master_failover" in groups[CLUSTER]
    assert list(groups) == [SINGLE, CLUSTER]


def test_one_fault_alone_starts_one_stack_and_no_baseline() -> None:
    assert chaos.plan(["redis_master_failover"], CLUSTER) == [(CLUSTER, ["redis_master_failover"])]
    assert chaos.plan(["redis_wipe"], CLUSTER) == [(SINGLE, ["redis_wipe"])]
    assert chaos.plan(["baseline"], SINGLE) == [(SINGLE, ["baseline"])]


def test_the_cluster_stack_s_redis_ports_move_with_the_offset_and_miss_the_shared_cluster() -> None:
    stack = chaos.Stack(chaos.Path("/nonexistent"), brokers=3, port_offset=200, redis_cluster=True)
    assert stack.redis_cluster_ports == list(range(17300, 17306))
    assert stack.env["REDIS_CLUSTER_PORT"] == "17300" and stack.env["STACK_REDIS_CLUSTER"] == "1"
    assert not set(stack.redis_cluster_ports) & (set(range(7000, 7006)) | set(range(17000, 17006)))
    settings = chaos.settings_for(stack, "t")
    assert settings.redis_url == "redis+cluster://127.0.0.1:17300/0"
    assert chaos.settings_for(chaos.Stack(chaos.Path("/nonexistent")), "t").redis_url.startswith("redis://")


def test_cluster_nodes_are_read_with_their_roles_and_slots() -> None:
    nodes = {n.port: n for n in redis_cluster.parse_nodes(NODES)}
    assert nodes[17100].master and nodes[17100].slots == 5461
    assert nodes[17101].slots == 5462 and not nodes[17105].master and nodes[17105].master_id == "6283"


def test_the_master_holding_most_keys_is_killed_the_lowest_port_among_equals() -> None:
    assert redis_cluster.busiest_master({17100: 593, 17101: 598, 17102: 943}) == 17102
    assert redis_cluster.busiest_master({17102: 10, 17101: 10, 17100: 3}) == 17101


def test_a_replica_counts_as_promoted_once_it_serves_every_slot_of_the_failed_master() -> None:
    victim = "c7fb"
    failing = NODES.replace("master - 0 1796040038000 3 connected 10923-16383", "master,fail? - 0 0 3 connected "
                                                                               "10923-16383")
    assert redis_cluster.promoted(redis_cluster.parse_nodes(failing), victim, {"612b"}) is None
    after = (NODES.replace("c7fb 127.0.0.1:17102@27102 master - 0 1796040038000 3 connected 10923-16383",
                           "c7fb 127.0.0.1:17102@27102 master,fail - 0 0 3 disconnected")
             .replace("612b 127.0.0.1:17104@27104 slave c7fb 0 1796040038000 3 connected",
                      "612b 127.0.0.1:17104@27104 master - 0 1796040038000 4 connected 10923-16383"))
    node = redis_cluster.promoted(redis_cluster.parse_nodes(after), victim, {"612b"})
    assert node is not None and node.port == 17104


def test_each_redis_fault_is_held_to_the_baseline_of_its_own_stack() -> None:
    def row(name: str, stack: str, paid: int) -> dict[str, object]:
        return {"name": name, "stack": stack, "photos": 8, "paid_calls": paid, "unanswered": 0, "duplicates": 0,
                "healthy_after_s": 1.0}

    cluster, single = CLUSTER.label, SINGLE.label
    rows = [row("baseline", cluster, 8), row("baseline", single, 12), row("redis_master_failover", cluster, 14),
            row("redis_outage", single, 16)]
    assert chaos.goals(rows)["redis_restart_at_most_5_more_calls"] is False  # 6 more than the cluster's baseline
    rows[2] = row("redis_master_failover", cluster, 13)
    assert chaos.goals(rows)["redis_restart_at_most_5_more_calls"] is True
    table = chaos.table([{**r, "uploads": 48, "model_requests": 8, "failed": {}, "worst_wait_s": 1.0} for r in rows])
    assert "| redis_master_failover | 3 brokers, Redis Cluster | 48 |" in table
    assert "| baseline | 1 broker, one Redis | 48 |" in table


def test_a_wiped_cluster_node_keeps_its_place_in_the_cluster_and_loses_its_data(tmp_path: chaos.Path) -> None:
    node = tmp_path / "redis-cluster" / "17300"
    (node / "appendonlydir").mkdir(parents=True)
    (node / "appendonlydir" / "appendonly.aof.1.incr.aof").write_text("*1\r\n")
    (node / "nodes.conf").write_text("6283 127.0.0.1:17300@27300 myself,master - 0 0 1 connected 0-5460\n")
    (node / "dump.rdb").write_bytes(b"REDIS")
    redis_cluster.wipe_data(tmp_path, 17300)
    assert [p.name for p in node.iterdir()] == ["nodes.conf"]
