"""Skewless: the shared kernel (settings, errors, the feature DSL, the CLI, local services).

Nothing in this package knows about any one stage (ingestion, etl, training, serving).
"""

__version__ = "0.1.0"
