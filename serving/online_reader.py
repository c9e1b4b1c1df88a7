"""The online read path: feature values straight from the Redis hashes Feast materializes.

Feast's Redis layout (``feast.infra.online_stores.redis``): one hash per entity key
(Feast's serialized entity key + project), one field per feature (murmur3 of
``"<view>:<feature>"``) holding a serialized ``Value`` proto, and ``_ts:<view>`` holding
the row's event time. A ``FeaturePlan`` is resolved once from Feast's registry for a
FeatureService or a feature list; each request is then one pipelined ``HMGET`` per
(entity, view) and a decode, with no registry lookups or response protos. On-demand
views run the very function Feast registered. ``tests/integration/test_serving_reader.py``
holds this path equal to Feast's ``get_online_features``, value for value.

The plan produces commands and decodes replies; the caller owns the Redis client
(the API uses ``redis.asyncio``, tests a plain client).
"""

from __future__ import annotations

import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from skewless.contracts import MAX_AMOUNT, MAX_EVENT_TIME, MIN_AMOUNT, MIN_EVENT_TIME, text_problem
from skewless.errors import SkewlessError
from skewless.features.dsl import RequestInput
from skewless.features.feast_objects import ARRAYS_TAG, request_inputs

_STRING, _INT64 = 2, 4  # feast.value_type.ValueType.STRING / INT64
PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE = "PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"
_SCALARS = frozenset({"int64_val", "int32_val", "double_val", "float_val", "string_val", "bool_val"})


class PlanError(SkewlessError):
    """A request the plan cannot answer (unknown feature service or feature, missing key);
    ``str()`` says which."""

    http_status = 422


@dataclass
class _ViewRead:
    name: str  # the name features are reported under (``<name>__<feature>``)
    join_keys: tuple[str, ...]
    key_types: tuple[str, ...]  # Value proto field per join key: string_val / int64_val
    features: list[str]
    fields: list[bytes]  # murmur3 hash per feature, then the _ts field
    ttl_s: float | None
    output: list[bool]  # whether each feature is in the response (else only an on-demand input)


@dataclass
class _OnDemand:
    name: str
    udf: Callable[[pd.DataFrame], pd.DataFrame]
    outputs: list[str]
    request_fields: list[str]
    arrays: bool  # the function accepts a mapping of NumPy arrays (fast), else a DataFrame
    request_inputs: tuple[RequestInput, ...] = ()  # the request fields, each with how it derives from an event


@dataclass
class FeatureRows:
    """Answers for a batch of entity rows: parallel lists per row, features in ``names`` order."""

    names: list[str]
    values: list[list[Any]]
    statuses: list[list[str]]
    event_timestamps: list[list[float | None]]  # unix seconds of the view row; None if not found
    view_timestamps: list[dict[str, float | None]] = field(default_factory=list)

    def row_dict(self, i: int) -> dict[str, Any]:
        return dict(zip(self.names, self.values[i]))


class FeaturePlan:
    """How to read one FeatureService (or feature list) for any number of entity rows."""

    def __init__(self, views: list[_ViewRead], on_demand: list[_OnDemand], names: list[str], project: str,
                 key_version: int):
        self.views = views
        self.on_demand = on_demand
        self.names = names
        self.project = project.encode()
        self.key_version = key_version
        self.join_keys = sorted({k for v in views for k in v.join_keys})
        self.request_fields = sorted({f for o in on_demand for f in o.request_fields})
        # How each request field derives from an event (``skewless.features.request_inputs.derive``).
        self.request_inputs = tuple({r.name: r for o in on_demand for r in o.request_inputs}.values())
        self._encoders = [self._encoder(v) for v in views]

    # -- building ---------------------------------------------------------------------
    @classmethod
    def for_service(cls, store: Any, service_name: str) -> "FeaturePlan":
        from feast.errors import FeatureServiceNotFoundException

        try:
            service = store.get_feature_service(service_name)
        except FeatureServiceNotFoundException:  # only "not found" is the request's fault
            raise PlanError(f"unknown feature service {service_name!r}") from None
        refs = [(p.name_to_use(), p.name, [f.name for f in p.features]) for p in service.feature_view_projections]
        return cls._build(store, refs)

    @classmethod
    def for_refs(cls, store: Any, refs: Sequence[str]) -> "FeaturePlan":
        grouped: dict[str, list[str]] = {}
        for ref in refs:
            view, sep, feat = ref.partition(":")
            if not sep or not view or not feat:
                raise PlanError(f"feature reference {ref!r} must look like 'view:feature'")
            grouped.setdefault(view, []).append(feat)
        return cls._build(store, [(v, v, fs) for v, fs in grouped.items()])

    @classmethod
    def _build(cls, store: Any, refs: list[tuple[str, str, list[str]]]) -> "FeaturePlan":
        from feast.infra.online_stores.helpers import _mmh3  # Feast's own field hashing

        odfv_names = {o.name for o in store.list_on_demand_feature_views()}
        fv_by_name = {fv.name: fv for fv in store.list_feature_views()}
        wanted: dict[str, tuple[str, list[str], list[bool]]] = {}  # view -> (name_to_use, features, output?)
        on_demand: list[_OnDemand] = []
        names: list[str] = []

        def want(view: str, use: str, feats: list[str], output: bool) -> None:
            if view not in fv_by_name:
                raise PlanError(f"unknown feature view {view!r}")
            known = {f.name for f in fv_by_name[view].features}
            for f in feats:
                if f not in known:
                    raise PlanError(f"feature view {view!r} has no feature {f!r}")
            _, have, outs = wanted.setdefault(view, (use, [], []))
            for f in feats:
                if f in have:
                    outs[have.index(f)] |= output
                else:
                    have.append(f)
                    outs.append(output)

        for use, name, feats in refs:
            if name in odfv_names:
                odfv = store.get_on_demand_feature_view(name)
                outputs = [f.name for f in odfv.features]
                for f in feats:
                    if f not in outputs:
                        raise PlanError(f"on-demand view {name!r} has no feature {f!r}")
                for src in odfv.source_feature_view_projections.values():
                    want(src.name, src.name_to_use(), [f.name for f in src.features], False)
                request = [f.name for rs in odfv.source_request_sources.values() for f in rs.schema]
                arrays = odfv.tags.get(ARRAYS_TAG) == "true"
                on_demand.append(_OnDemand(use, odfv.feature_transformation.udf, feats, request, arrays,
                                           request_inputs(odfv)))
                names += [f"{use}__{f}" for f in feats]
            else:
                want(name, use, feats, True)
                names += [f"{use}__{f}" for f in feats]
        views = []
        for view, (use, feats, outs) in wanted.items():
            fv = fv_by_name[view]
            keys = tuple(sorted(c.name for c in fv.entity_columns))
            types = tuple("int64_val" if "Int" in str(c.dtype) else "string_val"
                          for c in sorted(fv.entity_columns, key=lambda c: c.name))
            ttl = fv.ttl.total_seconds() if fv.ttl else 0.0
            fields = [_mmh3(f"{view}:{f}") for f in feats] + [f"_ts:{view}".encode()]
            views.append(_ViewRead(use, keys, types, feats, fields, ttl or None, outs))
        # Views first, then on-demand outputs: the order Feast answers in.
        view_names = {f"{v.name}__{f}" for v in views for f, o in zip(v.features, v.output) if o}
        ordered = [n for n in names if n in view_names] + [n for n in names if n not in view_names]
        return cls(views, on_demand, list(dict.fromkeys(ordered)), store.project,
                   store.config.entity_key_serialization_version)

    # -- per request ------------------------------------------------------------------
    def check_row(self, row: dict[str, Any], index: int = 0) -> None:
        """Raise PlanError unless ``row`` holds every join key and request field this plan
        needs, each valid: string keys as the event contract's ids (``text_problem``),
        integer keys in int64, request fields finite numbers in their range."""
        for k in self.join_keys:
            if row.get(k) is None:
                raise PlanError(f"entities[{index}]: missing join key {k!r}")
        for v in self.views:
            for k, t in zip(v.join_keys, v.key_types):
                problem = _key_problem(row[k], t)
                if problem:
                    raise PlanError(f"entities[{index}]: join key {k!r} {problem}")
        for f in self.request_fields:
            problem = _request_field_problem(f, row.get(f))
            if problem:
                raise PlanError(f"entities[{index}]: request field {f!r} {problem} (the on-demand features need it)")

    def commands(self, rows: Sequence[dict[str, Any]]) -> list[tuple[bytes, list[bytes]]]:
        """One ``(redis key, hash fields)`` per view and row, view-major."""
        out = []
        for v, encode in zip(self.views, self._encoders):
            fields, project = v.fields, self.project
            out += [(encode(row) + project, fields) for row in rows]
        return out

    def _encoder(self, view: _ViewRead) -> Callable[[dict[str, Any]], bytes]:
        """Feast's entity key bytes for a row. Version 3 keys are built directly (the key
        names part is the same for every row); a self-check against Feast's own
        ``serialize_entity_key`` at start-up falls back to it if the layouts ever differ."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        def feast_key(row: dict[str, Any]) -> bytes:
            values = [Value(**{t: row[k]}) for k, t in zip(view.join_keys, view.key_types)]
            return serialize_entity_key(EntityKey(join_keys=list(view.join_keys), entity_values=values),
                                        entity_key_serialization_version=self.key_version)

        if self.key_version != 3:
            return feast_key
        names = [k.encode() for k in view.join_keys]  # already sorted, as Feast sorts them
        head = struct.pack("<I", len(names)) + b"".join(struct.pack("<II", _STRING, len(k)) + k for k in names)
        parts = list(zip(view.join_keys, view.key_types))

        def fast_key(row: dict[str, Any]) -> bytes:
            out = [head]
            for k, t in parts:
                if t == "string_val":
                    b = row[k].encode()
                    out.append(struct.pack("<II", _STRING, len(b)) + b)
                else:
                    out.append(struct.pack("<IIq", _INT64, 8, row[k]))
            return b"".join(out)

        sample = {k: ("k-é" if t == "string_val" else -7) for k, t in parts}
        return fast_key if fast_key(sample) == feast_key(sample) else feast_key

    def decode(self, rows: Sequence[dict[str, Any]], replies: Sequence[Sequence[bytes | None]],
               now: float | None = None) -> FeatureRows:
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type
        from google.protobuf.timestamp_pb2 import Timestamp

        now = time.time() if now is None else now
        n = len(rows)
        cols: dict[str, list[Any]] = {}
        stats: dict[str, list[str]] = {}
        stamps: dict[str, list[float | None]] = {}
        view_ts: list[dict[str, float | None]] = [{} for _ in range(n)]
        i = 0
        for v in self.views:
            names = [f"{v.name}__{f}" for f in v.features]
            vcols = [[None] * n for _ in names]
            vstat = [[NOT_FOUND] * n for _ in names]
            vts: list[float | None] = [None] * n
            for r in range(n):
                reply = replies[i]
                i += 1
                raw_ts = reply[-1]
                if raw_ts is None:
                    continue  # the entity has no row in this view
                ts = Timestamp()
                ts.ParseFromString(raw_ts)
                t = ts.seconds + ts.nanos / 1e9
                vts[r] = t
                view_ts[r][v.name] = t
                expired = v.ttl_s is not None and now - t > v.ttl_s
                for j, raw in enumerate(reply[:-1]):
                    if expired:
                        vstat[j][r] = OUTSIDE_MAX_AGE
                        continue
                    if not raw:
                        vstat[j][r] = NULL_VALUE
                        continue
                    val = Value()
                    val.ParseFromString(raw)
                    kind = val.WhichOneof("val")
                    if kind is None:
                        vstat[j][r] = NULL_VALUE
                        continue
                    vcols[j][r] = getattr(val, kind) if kind in _SCALARS else feast_value_type_to_python_type(val)
                    vstat[j][r] = PRESENT
            for name, c, s in zip(names, vcols, vstat):
                cols[name], stats[name], stamps[name] = c, s, vts
        for od in self.on_demand:
            inputs: dict[str, Any] = {k: _column(c) for k, c in cols.items()}
            for f in od.request_fields:
                inputs[f] = np.array([row[f] for row in rows], dtype="float64")
            result = od.udf(inputs if od.arrays else pd.DataFrame(inputs, index=range(n)))
            for f in od.outputs:
                name = f"{od.name}__{f}"
                cols[name] = [_plain(x) for x in result[f].tolist()]
                stats[name] = [NULL_VALUE if x is None else PRESENT for x in cols[name]]
                stamps[name] = [None] * n
        return FeatureRows(
            names=self.names,
            values=[[cols[c][r] for c in self.names] for r in range(n)],
            statuses=[[stats[c][r] for c in self.names] for r in range(n)],
            event_timestamps=[[stamps[c][r] for c in self.names] for r in range(n)],
            view_timestamps=view_ts,
        )


# Request fields by name: the event contract's range for what each one carries. Any other
# request field must be a finite number.
REQUEST_FIELD_RANGES: dict[str, tuple[float, float]] = {
    "amount": (MIN_AMOUNT, MAX_AMOUNT),  # the transaction's amount
    # its event_time in unix seconds: [2000, 2100), to the microsecond the lake keeps
    "event_epoch": (MIN_EVENT_TIME.timestamp(), MAX_EVENT_TIME.timestamp() - 1e-6),
}
_INT64_RANGE = (-(2**63), 2**63 - 1)


def _key_problem(value: Any, kind: str) -> str | None:
    if kind == "string_val":
        if not isinstance(value, str):
            return "must be a string"
        problem = text_problem(value)
        return None if problem is None else f"{problem}: {value[:40]!r}"
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    return None if _INT64_RANGE[0] <= value <= _INT64_RANGE[1] else "is out of the 64-bit integer range"


def _request_field_problem(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if not math.isfinite(value):
        return "must be a finite number"
    low, high = REQUEST_FIELD_RANGES.get(name, (-math.inf, math.inf))
    return None if low <= value <= high else f"must be in [{low:.16g}, {high:.16g}], got {repr(value)[:40]}"


def _column(values: list[Any]) -> np.ndarray:
    """Feature values as an array: float64 (None -> NaN) when numeric, else objects."""
    try:
        return np.array(values, dtype="float64")
    except (TypeError, ValueError):
        return np.array(values, dtype="object")


def _plain(x: Any) -> Any:
    """numpy scalars -> Python; NaN -> None (JSON has no NaN)."""
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x
