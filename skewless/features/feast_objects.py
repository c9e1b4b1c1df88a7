"""DSL declarations -> Feast objects (entities, file sources, feature views, on-demand
views, feature services). The only place that knows how the DSL maps onto Feast."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from skewless.errors import ConfigError
from skewless.features.dsl import FeatureServiceSpec, RequestInput, RequestTransform, WindowedView
from skewless.lake_layout import LakeLayout

TIMESTAMP_FIELD = "event_timestamp"
REQUEST_SOURCE = "transaction_request"
ARRAYS_TAG = "skewless.arrays"
# On each field of an on-demand view's request source: how it derives from an event
# ("epoch_seconds(event_time)"), and "true" when the model takes it as a feature too.
DERIVE_TAG = "skewless.derive"
AS_FEATURE_TAG = "skewless.as_feature"


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
        schema=[Field(name=r.name, dtype=_feast_type(r.dtype), tags=_request_tags(r)) for r in transform.request_inputs],
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


def _request_tags(r: RequestInput) -> dict[str, str]:
    return {DERIVE_TAG: f"{r.derive}({r.column})", **({AS_FEATURE_TAG: "true"} if r.as_feature else {})}


def request_inputs(odfv: Any) -> tuple[RequestInput, ...]:
    """An on-demand view's request inputs as declared, read back from Feast's registry.

    The derivation travels as a tag on each field of the view's request source: it stays
    with the field it defines, inside the view Feast stores, so whoever reads the view
    from the registry (training, serving, monitoring) derives the field the same way."""
    out = []
    for source in odfv.source_request_sources.values():
        for f in source.schema:
            tag = (f.tags or {}).get(DERIVE_TAG, "")
            derive, _, rest = tag.partition("(")
            if not rest.endswith(")") or not derive:
                raise ConfigError(f"on-demand view {odfv.name!r}: request field {f.name!r} does not say how it "
                                  f"derives from an event (tag {DERIVE_TAG}={tag!r})",
                                  "re-apply the feature definitions: skewless features apply")
            out.append(RequestInput(f.name, rest[:-1], derive, (f.tags or {}).get(AS_FEATURE_TAG) == "true"))  # type: ignore[arg-type]
    return tuple(out)


def service_request_inputs(store: Any, service_name: str) -> tuple[RequestInput, ...]:
    """The request inputs of every on-demand view of a FeatureService, from Feast's registry."""
    odfvs = {o.name: o for o in store.list_on_demand_feature_views()}
    seen: dict[str, RequestInput] = {}
    for proj in store.get_feature_service(service_name).feature_view_projections:
        if proj.name in odfvs:
            for r in request_inputs(odfvs[proj.name]):
                if seen.setdefault(r.name, r) != r:
                    raise ConfigError(f"feature service {service_name!r}: request field {r.name!r} is declared "
                                      f"twice, differently ({seen[r.name]} and {r})")
    return tuple(seen.values())


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
        # A view with excluded features enters as a projection of the others (``FeatureServiceSpec``).
        projected = [views[v.name] if s.features_of(v) == v.features else views[v.name][s.features_of(v)]
                     for v in s.views]
        services[s.name] = FeatureService(
            name=s.name, features=projected + [odfvs[t.name] for t in s.transforms],
            description=s.description,
        )
    return {**entities, **views, **odfvs, **services}
