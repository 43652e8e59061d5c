"""Ingest: probe and quarantine source videos, extract clips."""
