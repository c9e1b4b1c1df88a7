"""The Feast repository of Skewless: ``feature_store.yaml`` plus the fraud domain's
features, declared once with the DSL in ``specs.py`` and turned into Feast objects in
``repo.py`` (which the stock ``feast`` CLI reads)."""
