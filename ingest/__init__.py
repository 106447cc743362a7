"""Ingestion of Claude Code transcripts (ccsniff bridge, typed events, rendering, redaction, cursors).

Kept free of heavy imports: import the submodules you need (ingest.events, ingest.stream, ingest.render, ...).
"""
