"""Skewless: the shared kernel (settings, contracts, lake, errors, the feature DSL, the Feast
store, local dev services).

It imports no stage, no feature definitions and not the CLI (``cli``, the composition
root); ``tests/unit/test_layers.py`` holds that rule.
"""

__version__ = "0.1.0"
