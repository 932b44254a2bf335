"""ClickAgg streaming hot path: dedup, event-time windows, fraud rules, idempotent ClickHouse sink.

Pure logic lives in `streaming.logic` (no Kafka, no Faust); `streaming.app` is the Faust worker.
See docs/streaming.md for the design and its guarantees.
"""
