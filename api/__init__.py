"""The HTTP/WebSocket API: pre-signed uploads, upload-complete events, live results.

Imports models and streams.topics only; never the agents or Faust.
"""
