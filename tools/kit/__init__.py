"""One kit for driving the pipeline from outside: the tests, the bench, the demo, the producer and the chaos suite.

- :mod:`tools.kit.processes`: worker, API and other processes (logs, TERM then KILL), free ports, pid files;
- :mod:`tools.kit.simulator`: the vision-model simulator, shared or private, and its control API;
- :mod:`tools.kit.results`: objects in the bucket, upload-complete events, results from the results topic;
- :mod:`tools.kit.ready`: deadlines: "the pipeline answers", "the group holds every partition", metrics;
- :mod:`tools.kit.pipeline`: a worker group of one's own that answers, for fixtures;
- :mod:`tools.kit.hashes`: synthetic pHashes and cache entries for the near-duplicate index;
- :mod:`tools.kit.api`: the app's flow through the API (analyze, pre-signed POST, upload-complete, WebSocket).

Product code (agents, api, streams, models, simulator) never imports it.
"""

from tools.kit.pipeline import Pipeline, running_pipeline
from tools.kit.processes import (
    LOG_DIR,
    ROOT,
    STACK_DIR,
    STARTED,
    Proc,
    free_port,
    port_open,
    settings_env,
    start_api,
    start_worker,
    stop_process,
)
from tools.kit.ready import (
    wait_http_ok,
    wait_until,
    wait_until_partitions_held,
    wait_until_pipeline_answers,
    worker_counter,
    workers_counter,
)
from tools.kit.results import PipelineClient, ResultWatcher, put_objects
from tools.kit.simulator import Simulator

__all__ = [
    "LOG_DIR", "ROOT", "STACK_DIR", "STARTED", "Pipeline", "PipelineClient", "Proc", "ResultWatcher", "Simulator",
    "free_port", "port_open", "put_objects", "running_pipeline", "settings_env", "start_api", "start_worker",
    "stop_process", "wait_http_ok", "wait_until", "wait_until_partitions_held", "wait_until_pipeline_answers",
    "worker_counter", "workers_counter",
]
