"""VISION MODEL SIMULATOR - a stand-in for the paid vision model, not a real model.

A small aiohttp server that speaks the OpenAI Chat Completions HTTP protocol closely enough for the
``openai`` client: ``POST /v1/chat/completions`` answers a deterministic
:class:`~models.classification.WasteClassification` derived from the image bytes, after a configurable
latency, and can inject faults (429 with ``Retry-After``, 500, hangs, malformed output) by rate or by a
scripted queue. Tests, benchmarks and the local demo point ``OPENAI_BASE_URL`` at it so that no paid call
is ever made; ``GET /_sim/stats`` counts the calls a real model would have billed.

Every answer is labelled: the ``x-simulator: true`` header and ``system_fingerprint: "simulator"``.

Run it with ``python -m simulator --host 127.0.0.1 --port 8090``.
"""
