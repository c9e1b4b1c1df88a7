"""Rows into Feast's online store, written by Feast's own code, so ``get_online_features``,
serving's reader and ``materialize`` all see the same bytes.

The streaming job overwrites a view's row for an entity whenever the value changes, also
with a row whose time equals the stored one (a late event corrects the current value):
Feast's Redis store skips such a write unless ``skip_dedup`` is set, so this writer's
configuration sets it. It calls the provider's ``ingest_df`` (what
``FeatureStore.write_to_online_store`` ends in) because that public method refuses a
frame whose features are all null, which is exactly a decayed row of a view of means or
minima.
"""

from __future__ import annotations

import pandas as pd

from skewless.errors import ConfigError
from skewless.features.store import feature_store, repo_config
from skewless.settings import Settings


class OnlineWriter:
    def __init__(self, settings: Settings):
        from feast import FeatureStore

        if settings.online_store == "redis":
            cfg = repo_config(settings)
            cfg.online_store.skip_dedup = True
            self.store = FeatureStore(config=cfg)
        else:
            self.store = feature_store(settings)
        self._views: dict = {}

    def _view(self, name: str):
        if name not in self._views:
            try:
                self._views[name] = self.store.get_feature_view(name)
            except Exception as exc:  # feast's FeatureViewNotFoundException and registry errors
                raise ConfigError(f"feature view {name} is not in Feast's registry ({type(exc).__name__})",
                                  "register the definitions first: skewless features apply") from None
        return self._views[name]

    def write(self, view: str, rows: pd.DataFrame) -> int:
        """Write rows (join keys, ``event_timestamp``, features) of one view; returns rows."""
        if rows.empty:
            return 0
        self.store._get_provider().ingest_df(self._view(view), rows)
        return len(rows)
