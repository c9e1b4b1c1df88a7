"""A fast point-in-time join for training sets: DuckDB ``ASOF`` joins driven by Feast's
registry.

It answers exactly what Feast's ``get_historical_features`` answers for a
FeatureService (a test holds it to that, value for value): for every entity row and
every feature view of the service, the latest row of the view's offline source at or
before the row's ``event_timestamp`` (the views have no TTL), then the service's
on-demand transforms, applied with the same pure functions Feast registered. It reads
the sources and the feature lists from the Feast registry, so a view added to the
service is joined here too.

The plan (which view, which keys, which features, which files) and the on-demand step
are shared with the Spark engine (``training.pit_join_spark``), which returns the same
frame. Measured on the demo data (``skewless bench pit``) this one is the fastest, so
training uses it by default (``training.pit_engine``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from skewless.bounded_duckdb import BoundedDuckDB

TS = "event_timestamp"
ROW = "_row"


@dataclass(frozen=True)
class ViewJoin:
    """One feature view of a service, as a join: its output prefix, join keys, features
    and offline source path."""

    prefix: str
    keys: tuple[str, ...]
    features: tuple[str, ...]
    path: str
    inputs_only: tuple[str, ...] = ()  # of ``features``: joined for the on-demand views, not the service's

    def column(self, feature: str) -> str:
        return f"{self.prefix}__{feature}"


def join_plan(store: Any, service_name: str) -> tuple[list[ViewJoin], list[Any]]:
    """The service's feature views as joins, and its on-demand views (applied after).

    A feature an on-demand view reads that the service itself leaves out (its projection of
    the view omits it, e.g. an absolute time only a transform uses) is joined too, as
    ``inputs_only``: ``apply_on_demand`` drops it once the transforms have run, so the
    frame holds the service's features, as Feast's own join of the service does."""
    service = store.get_feature_service(service_name)
    on_demand = {o.name for o in store.list_on_demand_feature_views()}
    wanted: dict[str, list[str]] = {}  # view -> the service's features, in order
    extra: dict[str, list[str]] = {}  # view -> features only the on-demand views read
    odfvs = []
    for proj in service.feature_view_projections:
        if proj.name in on_demand:  # applied after the joins
            odfvs.append(store.get_on_demand_feature_view(proj.name))
            continue
        wanted.setdefault(proj.name, []).extend(f.name for f in proj.features)
    for odfv in odfvs:
        for src in odfv.source_feature_view_projections.values():
            for f in src.features:
                if f.name not in wanted.get(src.name, []) and f.name not in extra.get(src.name, []):
                    extra.setdefault(src.name, []).append(f.name)
    joins = []
    for name in list(wanted) + [v for v in extra if v not in wanted]:
        fv = store.get_feature_view(name)
        keys = fv.join_keys if hasattr(fv, "join_keys") else [e.join_key for e in fv.entity_columns]
        own, helpers = wanted.get(name, []), extra.get(name, [])
        joins.append(ViewJoin(name, tuple(keys), tuple(own + helpers), fv.batch_source.path, tuple(helpers)))
    return joins, odfvs


def entity_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The entity rows numbered (``_row``), their timestamps in UTC."""
    entities = rows.reset_index(drop=True).copy()
    entities[ROW] = range(len(entities))
    entities[TS] = pd.to_datetime(entities[TS], utc=True)
    return entities


def apply_on_demand(out: pd.DataFrame, odfvs: list[Any], joins: list[ViewJoin] = ()) -> pd.DataFrame:
    """The on-demand views' transforms, with the functions Feast registered; drops ``_row``
    and the joins' ``inputs_only`` columns."""
    out = out.sort_values(ROW).reset_index(drop=True)
    for odfv in odfvs:
        transformed = odfv.feature_transformation.udf(out)
        for col in transformed.columns:
            out[f"{odfv.name}__{col}"] = transformed[col].to_numpy()
    return out.drop(columns=[ROW, *(j.column(f) for j in joins for f in j.inputs_only)])


def _source_glob(path: str) -> str:
    return f"{path.rstrip('/')}/**/*.parquet"


def historical_features(store: Any, service_name: str, rows: pd.DataFrame, *, memory_limit: str = "1GB",
                        tmp_dir: Path | None = None) -> pd.DataFrame:
    """The service's features at each row's time. DuckDB holds ``memory_limit``
    (``training.duckdb_memory``) and spills the rest of each join under ``tmp_dir``
    (default: the system's temporary directory): its working set grows with the views'
    offline rows, the returned frame only with ``rows``."""
    joins, odfvs = join_plan(store, service_name)
    with BoundedDuckDB(Path(tmp_dir or tempfile.gettempdir()), memory_limit, prefix="training-set-") as db:
        out = join_views(db.con, entity_frame(rows), joins)
    return apply_on_demand(out, odfvs, joins)


def join_views(con: Any, entities: pd.DataFrame, joins: list[ViewJoin], key_filter: bool = True) -> pd.DataFrame:
    """``entities`` (from ``entity_frame``) with each join's features as of its rows' times,
    one DuckDB ASOF join per view on ``con``. ``key_filter``: join only the view's rows whose
    keys some entity row has (the same result; off only to measure the join without it)."""
    con.register("entities", entities)
    out = entities
    for j in joins:
        cols = ", ".join(f'f."{c}" AS "{j.column(c)}"' for c in j.features)
        on = " AND ".join(f'e."{k}" = f."{k}"' for k in j.keys)
        keys = ", ".join(f'"{k}"' for k in j.keys)
        # Only the rows of keys some entity row has: the others can never match, and at scale
        # they are most of a pair-keyed view (measured in benchmarks/README.md#pit_memory).
        where = f" WHERE ({keys}) IN (SELECT DISTINCT {keys} FROM entities)" if key_filter else ""
        sql = (f"SELECT e.{ROW}, {cols} FROM entities e ASOF LEFT JOIN "
               f"(SELECT * FROM read_parquet('{_source_glob(j.path)}', hive_partitioning = false, "
               f"union_by_name = true){where}) f "
               f'ON {on} AND e."{TS}" >= f."{TS}" ORDER BY e.{ROW}')
        out = out.merge(con.execute(sql).df(), on=ROW, how="left")
    con.unregister("entities")
    return out
