"""Monitoring: the online/offline consistency check (and later drift and data quality)."""
