"""Streaming ingestion: event contracts, the payments simulator, and the Kafka -> lake sink."""
