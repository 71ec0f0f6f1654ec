"""monitoring/: alert rules tested by promtool, every alert tested both ways, every metric one the code exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.conftest import REPO

MONITORING = REPO / "monitoring"
RULES = yaml.safe_load((MONITORING / "alerts.yml").read_text())
TESTS = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())
DASHBOARD = json.loads((MONITORING / "grafana" / "dashboards" / "waste-analysis.json").read_text())
EXPORTERS = [REPO / "streams" / "metrics.py", REPO / "api" / "metrics.py", REPO / "tools" / "edge_exporter.py"]

ALERTS = {r["alert"]: r for g in RULES["groups"] for r in g["rules"] if "alert" in r}
RECORDED = {r["record"] for g in RULES["groups"] for r in g["rules"] if "record" in r}


def promtool(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    return subprocess.run([str(binary), *args], cwd=MONITORING, capture_output=True, text=True, timeout=300, env=env)


def test_promtool_checks_the_rules(promtool_bin: Path) -> None:
    result = promtool(promtool_bin, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alert_rules_pass(promtool_bin: Path) -> None:
    result = promtool(promtool_bin, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_issue_asks_for_these_alerts() -> None:
    for name in ("EdgeHitRateLow", "ResultCacheHitRateLow", "Api5xxRateHigh", "ConsumerLagGrowing",
                 "ModelErrorsHigh", "ModelSpendOverBudget"):
        assert name in ALERTS, name
    for name in ("EdgeHitRateLow", "ResultCacheHitRateLow"):
        assert "< 0.70" in ALERTS[name]["expr"] and ALERTS[name]["for"] == "15m"
    assert "> 0.01" in ALERTS["Api5xxRateHigh"]["expr"]


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in TESTS["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == set(ALERTS), f"never seen firing: {sorted(set(ALERTS) - fired)}"
    assert quiet == set(ALERTS), f"never seen quiet: {sorted(set(ALERTS) - quiet)}"


def metric_names(expr: str) -> set[str]:
    without_records = re.sub(r"waste:[a-z0-9_:]+", " ", expr)
    names = set(re.findall(r"\b((?:waste|api)_[a-z0-9_]+)\b", without_records))
    return {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in names}


def exported() -> set[str]:
    text = "\n".join(p.read_text() for p in EXPORTERS)
    return {re.sub(r"_total$", "", n) for n in re.findall(r'"((?:waste|api)_[a-z0-9_]+)"', text)}


def test_rules_and_dashboard_read_only_metrics_the_code_exports() -> None:
    known = exported()
    exprs = [r["expr"] for g in RULES["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    for expr in exprs:
        for name in metric_names(expr):
            assert name in known, f"{name} (in {expr!r}) is exported by nothing"
        for record in re.findall(r"\b(waste:[a-z0-9_:]+)", expr):
            assert record in RECORDED, f"{record} is no recording rule"


def test_the_dashboard_covers_the_original_monitoring_list() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["panels"]
    text = json.dumps(DASHBOARD)
    for wanted in ("waste_edge_requests_total", "waste:edge_bytes_served:rate5m", "waste:edge_app_hit_ratio:rate5m",
                   "waste:result_cache_hit_ratio_by_source:rate5m", "waste:api_4xx_ratio:rate5m",
                   "waste:api_5xx_ratio:rate5m", "waste:consumer_lag:sum", "waste_model_calls_total",
                   "waste_model_spent_dollars_total", "waste_model_saved_dollars_total"):
        assert wanted in text, wanted
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_prometheus_and_grafana_run_in_the_compose_file() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.kafka.yml").read_text())["services"]
    assert {"prometheus", "grafana", "edge-exporter"} <= set(compose)
    mounts = " ".join(compose["prometheus"]["volumes"])
    assert "monitoring/alerts.yml" in mounts and "monitoring/prometheus.yml" in mounts
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"worker", "api", "edge"}  # the job names the alerts use (up{job="worker"})
    assert jobs["edge"]["static_configs"][0]["targets"] == ["edge-exporter:9131"]
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
