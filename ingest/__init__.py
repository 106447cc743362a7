"""Ingestion of Claude Code transcripts: what reaches the tokenizer is what happened, in order, once, redacted.

- bridge/ccsniff_bridge.mjs: ccsniff 1.1.38's library API -> one lossless NDJSON record per content block.
- records: the record schema, and a pure-Python reader of raw transcripts giving identical records.
- normalize: records -> typed events (events), de-duplicated, tool results named, secrets removed (redact).
- stream.TraceStream: async, supervised bridge child (replay/live), bounded queue, per-session Cursor (cursor).
- render: session -> training text with per-character role spans. traces: the `cli.py traces` command.

Kept free of heavy imports: import the submodule you need.
"""
