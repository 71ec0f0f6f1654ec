"""Prometheus metrics of the worker, served at ``/metrics`` on the Faust web port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

events_total = Counter("waste_events_total", "Events processed, by stage", ["stage"])
cache_lookups_total = Counter("waste_cache_lookups_total", "Dedupe outcomes, by source", ["source"])
results_suppressed_total = Counter(
    "waste_results_suppressed_total", "Results not published again for a redelivered event")
results_total = Counter("waste_results_total", "Terminal results published", ["status", "source"])
failures_total = Counter("waste_failures_total", "Failed jobs, by error code", ["code"])
model_calls_total = Counter("waste_model_calls_total", "Paid vision-model calls, by outcome", ["outcome"])
model_request_rejected_total = Counter(
    "waste_model_request_rejected_total", "Vision requests the endpoint refused as invalid (4xx), by status",
    ["status"])
model_refusals_total = Counter("waste_model_refusals_total", "Answers in which the model declined the photo")
model_budget_refusals_total = Counter(
    "waste_model_budget_refusals_total", "Model calls not made: MODEL_CALLS_PER_MINUTE/PER_DAY used up", ["window"])
model_tokens_total = Counter("waste_model_tokens_total", "Tokens the vision endpoint billed, by kind", ["kind"])
model_latency_seconds = Histogram(
    "waste_model_latency_seconds", "Vision-model latency including retries",
    buckets=(0.5, 1, 2, 3, 4, 5, 7.5, 10, 20, 30, 60),
)
hash_total = Counter("waste_hash_total", "pHashes, by how they were found (decode | digest)", ["path"])
fetch_total = Counter("waste_fetch_total", "Image fetches, by source and edge cache status", ["source", "cdn_cache"])
fetched_bytes_total = Counter(
    "waste_fetched_bytes_total", "Image bytes the worker read (hashing and the model's re-read), by source", ["source"])
fetch_retries_total = Counter(
    "waste_fetch_retries_total", "Fetches tried again because the CDN and S3 both failed (FETCH_RETRY_SECONDS)")
refetch_total = Counter(
    "waste_refetch_total", "Re-reads of a hashed image for the model (classify, on a miss), by source and edge cache "
    "status", ["source", "cdn_cache"])
stage_seconds = Histogram(
    "waste_stage_seconds", "Time per stage", ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# --- cost (streams/cost.py; docs/COST.md) ---------------------------------------------------------------------
model_spent_dollars_total = Counter(
    "waste_model_spent_dollars", "Dollars the vision endpoint billed: each answer's usage times the price table")
model_saved_dollars_total = Counter(
    "waste_model_saved_dollars", "Dollars not spent: results answered by a cache tier, at the cost of the call reused",
    ["source"])
model_call_cost_dollars = Histogram(
    "waste_model_call_cost_dollars", "Dollars of each answered model call, all its billed attempts together",
    buckets=(0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1))
model_price_dollars_per_1m_tokens = Gauge(
    "waste_model_price_dollars_per_1m_tokens", "The price table in force (MODEL_PRICE_*_PER_1M_TOKENS)", ["kind"])
model_spend_budget_dollars_per_day = Gauge(
    "waste_model_spend_budget_dollars_per_day", "MODEL_SPEND_BUDGET_DOLLARS_PER_DAY: the spend alert's threshold")
consumer_lag = Gauge(
    "waste_consumer_lag", "Events not yet committed by this worker's group, per partition it holds",
    ["topic", "partition"])
consumer_committed_offset = Gauge(
    "waste_consumer_committed_offset", "The group's committed offset (the next event to process), per partition "
    "this worker holds: a lag whose committed offset does not move is a stalled partition", ["topic", "partition"])
