"""The stream writes a batch's enrichment columns (a transaction's merchant, which a later
label joins by id) as one JSON object per event, joined directly where no character needs
escaping: the bytes must be ``orjson.dumps`` of the row's dict, whatever the values."""

from __future__ import annotations

import orjson
from hypothesis import given, settings, strategies as st

from etl.stream import _BatchEnrich, _json_objects

values = st.one_of(st.text(max_size=8), st.sampled_from(['m"1', "m\\2", "m\n3", "é", "m00012"]),
                   st.integers(-5, 5), st.none())


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3).flatmap(lambda k: st.tuples(
    st.lists(st.sampled_from(["merchant_id", "country", 'we"ird']), min_size=k, max_size=k, unique=True),
    st.lists(st.lists(values, min_size=k, max_size=k), min_size=0, max_size=6))))
def test_each_object_is_orjsons_bytes_for_the_row(case):
    names, rows = case
    columns = [[r[i] for r in rows] for i in range(len(names))]
    got = _json_objects(tuple(names), columns)
    assert got == [orjson.dumps(dict(zip(names, r))) for r in rows]


def test_a_batchs_own_events_are_found_by_id_later_ones_winning():
    first = _BatchEnrich(["t1", "t2"], ("merchant_id",), [["m1", "m2"]], None)
    both = _BatchEnrich(["t2", "t3"], ("merchant_id",), [["m9", "m3"]], first)
    assert both.found(["t1", "t2", "t3", "t4"]) == {"t1": {"merchant_id": "m1"}, "t2": {"merchant_id": "m9"},
                                                   "t3": {"merchant_id": "m3"}}
