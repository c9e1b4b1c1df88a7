"""DSL declarations -> Feast objects (entities, file sources, feature views, on-demand
views, feature services). The only place that knows how the DSL maps onto Feast."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from skewless.features.dsl import FeatureServiceSpec, RequestTransform, WindowedView
from skewless.lake_layout import LakeLayout

TIMESTAMP_FIELD = "event_timestamp"
REQUEST_SOURCE = "transaction_request"
ARRAYS_TAG = "skewless.arrays"


def _feast_type(dtype: str):
    from feast.types import Bool, Float64, Int64, String

    return {"int64": Int64, "float64": Float64, "string": String, "bool": Bool}[dtype]


def view_source(view: WindowedView, lake_path: str):
    from feast import FileSource
    from feast.data_format import ParquetFormat

    return FileSource(
        name=f"{view.name}_source", path=LakeLayout(lake_path).features_uri(view.name),
        timestamp_field=TIMESTAMP_FIELD, file_format=ParquetFormat(),
        description=f"offline table of {view.name}, written by `skewless etl run`",
    )


def feature_view(view: WindowedView, entities: dict[str, Any], lake_path: str):
    from feast import FeatureView, Field

    return FeatureView(
        name=view.name,
        entities=[entities[e.name] for e in view.entities],
        # Rows are emitted when values change (including decay to 0), so the latest row
        # is valid however old it is: no TTL.
        ttl=timedelta(0),
        schema=[Field(name=a.feature_name, dtype=_feast_type(a.output_type)) for a in view.aggregations],
        source=view_source(view, lake_path),
        online=True,
        description=view.description,
        tags={"hop": view.hop, "source": view.source.name},
    )


def on_demand_view(transform: RequestTransform, views: dict[str, Any]):
    from feast import Field, RequestSource
    from feast.on_demand_feature_view import OnDemandFeatureView

    request = RequestSource(
        name=REQUEST_SOURCE,
        schema=[Field(name=n, dtype=_feast_type(t)) for n, t in transform.request_fields.items()],
    )
    used: dict[str, list[str]] = {}
    for view_name, feature in transform.inputs:
        used.setdefault(view_name, []).append(feature)
    sources = [views[v][features] for v, features in used.items()] + [request]
    return OnDemandFeatureView(
        name=transform.name, sources=sources,
        schema=[Field(name=n, dtype=_feast_type(t)) for n, t in transform.outputs.items()],
        udf=transform.function, udf_string=transform.function.__doc__ or transform.name,
        mode="pandas", description=transform.description,
        # Tells online serving it may call the function with NumPy arrays (see RequestTransform).
        tags={ARRAYS_TAG: "true"} if transform.arrays else {},
    )


def build(entities_spec, views_spec, services_spec: tuple[FeatureServiceSpec, ...], lake_path: str) -> dict[str, Any]:
    """Every Feast object of the repository, by name."""
    from feast import Entity, FeatureService, ValueType

    entities = {e.name: Entity(name=e.name, join_keys=[e.join_key], value_type=ValueType.STRING,
                               description=e.description) for e in entities_spec}
    views = {v.name: feature_view(v, entities, lake_path) for v in views_spec}
    odfvs: dict[str, Any] = {}
    services = {}
    for s in services_spec:
        for t in s.transforms:
            odfvs.setdefault(t.name, on_demand_view(t, views))
        services[s.name] = FeatureService(
            name=s.name, features=[views[v.name] for v in s.views] + [odfvs[t.name] for t in s.transforms],
            description=s.description,
        )
    return {**entities, **views, **odfvs, **services}
