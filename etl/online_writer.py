"""Rows into Feast's online store, in Feast's own bytes, so ``get_online_features``,
serving's reader and ``materialize`` all read what the stream wrote.

The streaming job overwrites a view's row for an entity whenever the value changes, also
with a row whose time equals the stored one (a late event corrects the current value):
Feast's Redis store skips such a write unless ``skip_dedup`` is set, so this writer's
configuration sets it. It calls the provider's ``ingest_df`` (what
``FeatureStore.write_to_online_store`` ends in) because that public method refuses a
frame whose features are all null, which is exactly a decayed row of a view of means or
minima.

The rows themselves are built by ``etl.redis_rows`` (the same bytes, column-wise, one
round trip) whenever it covers the view and the frame; anything else — SQLite, another
Redis topology, a dtype or value it does not reproduce — goes through ``ingest_df``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from redis.exceptions import ResponseError

from etl.redis_rows import Unsupported, ViewEncoder
from etl.windows import TS
from skewless.errors import ConfigError
from skewless.features.store import feature_store, repo_config
from skewless.settings import Settings


class OnlineWriter:
    """``fast=False`` writes every frame through Feast's ``ingest_df`` (the reference)."""

    def __init__(self, settings: Settings, fast: bool = True):
        from feast import FeatureStore

        if settings.online_store == "redis":
            cfg = repo_config(settings)
            cfg.online_store.skip_dedup = True
            self.store = FeatureStore(config=cfg)
        else:
            self.store = feature_store(settings)
        self._views: dict = {}
        self._encoders: dict = {}
        self.fast = fast
        self.rows_fast = 0  # rows written by the column-wise path
        self.rows_feast = 0  # rows written by Feast's ingest_df

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
        fv = self._view(view)
        encoder = self._encoder(view, fv)
        if encoder is not None:
            try:
                commands, replies = encoder.commands(rows)
            except Unsupported:
                pass
            else:
                self._send(commands, replies)
                self.rows_fast += len(rows)
                return len(rows)
        self.store._get_provider().ingest_df(fv, rows)
        self.rows_feast += len(rows)
        return len(rows)

    def write_columns(self, view: str, rows: dict) -> int:
        """``write`` of rows given as NumPy columns (join keys, ``event_timestamp`` as
        datetime64, features), as ``etl.windows.rows_at(..., frame=False)`` returns them:
        encoded without a frame when the column-wise writer covers them, else through
        the frame ``write`` takes."""
        n = len(rows[TS]) if TS in rows else 0
        if not n:
            return 0
        encoder = self._encoder(view, self._view(view))
        if encoder is not None:
            try:
                commands, replies = encoder.commands_columns(rows)
            except Unsupported:
                pass
            else:
                self._send(commands, replies)
                self.rows_fast += n
                return n
        frame = pd.DataFrame(rows)
        frame[TS] = pd.to_datetime(np.asarray(rows[TS]).astype("datetime64[us]").astype("int64"), unit="us", utc=True)
        return self.write(view, frame)

    def _encoder(self, name: str, fv) -> ViewEncoder | None:
        if not self.fast:
            return None
        if name not in self._encoders:
            self._encoders[name] = ViewEncoder.for_view(fv, self.store.config)
        return self._encoders[name]

    def _send(self, commands: bytes, replies: int) -> None:
        """One round trip: the commands in one write, then every reply read (an error reply
        raises after the others are read, as redis-py's pipeline does)."""
        online = self.store._get_provider().online_store
        client = online._get_client(self.store.config.online_store)  # the connection Feast writes with
        conn = client.connection_pool.get_connection()
        error = None
        try:
            conn.send_packed_command([commands])
            for _ in range(replies):
                try:
                    conn.read_response()
                except ResponseError as exc:
                    error = error or exc
        except BaseException:
            conn.disconnect()  # a half-read reply stream cannot be reused
            raise
        finally:
            client.connection_pool.release(conn)
        if error is not None:
            raise error
