"""The feature DSL: declare a feature once; Feast objects, the Spark batch job and the
online path all come from that one declaration. See ``skewless.features.dsl``."""

from skewless.features.dsl import (  # noqa: F401
    Aggregation, Entity, EventSource, FeatureServiceSpec, RequestInput, RequestTransform, WindowedView,
)
