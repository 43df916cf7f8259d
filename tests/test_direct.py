"""The arrow reader (typed Parquet) equals the polars reader and the plain reference, row problem
by row problem; the check kernel equals a plain-Python reference."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg import direct as D
from fastseg import orders as O
from fastseg import sources as S
from fastseg.errors import DataError, ParameterError
from fastseg.kernels.ingest import IngestBuffers, RunDuplicates, day_of, ingest_rows
from fastseg.pipeline import order_features
from tests.reference import order_features_ref, same_as_ref
from tests.reference import same_order_features as _same

_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _table(
    n: int,
    seed: int,
    unit: str,
    *,
    order_ids: str,
    n_cats: int,
    nulls: bool,
    text_ids: bool = False,
) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, max(2, n // 3), n) * 3 + 50
    # seconds around 1970 and 2026: negative timestamps too, some rows after any as_of
    base = int(rng.choice([0, 1_782_000_000]))
    secs = base - rng.integers(-3 * 86_400, 800 * 86_400, n)
    amount = np.round(rng.normal(30, 50, n), 2)
    amount[rng.random(n) < 0.05] = 0.0
    cats = np.array([f"c{int(k)}" for k in rng.integers(0, n_cats, n)])
    disc = np.where(rng.random(n) < 0.3, 2.5, 0.0)
    if unit == "date":
        ts = pa.array((secs // 86_400).astype(np.int32), pa.date32())
    else:
        ts = pa.array(secs * _UNITS[unit], pa.timestamp(unit))
    cols = {
        "customer_id": pa.array([f"C-{i:05d}" for i in ids]) if text_ids else pa.array(ids),
        "order_ts": ts,
        "amount": pa.array(amount),
        "category": pa.array(cats),
        "discount": pa.array(disc),
        "quantity": pa.array(rng.integers(1, 3, n)),
    }
    if nulls:
        for name, every, special in (
            ("customer_id", 13, None),
            ("order_ts", 17, None),
            ("amount", 11, float("nan")),
            ("category", 7, None),
            ("discount", 5, float("nan")),
        ):
            values = cols[name].to_pylist()
            for i in range(2, n, every):
                values[i] = None if (i // every) % 2 == 0 or special is None else special
            if name == "amount":
                for i in range(4, n, 23):
                    values[i] = float("inf")
            cols[name] = pa.array(values, cols[name].type)
    if order_ids == "increasing":
        cols["order_id"] = pa.array(np.arange(n) * 2 + 7)
    elif order_ids == "repeating":
        cols["order_id"] = pa.array(np.arange(n) // 2)
    return pa.table(cols)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 300),
    seed=st.integers(0, 10**6),
    unit=st.sampled_from(["s", "ms", "us", "ns", "date"]),
    order_ids=st.sampled_from(["none", "increasing", "repeating"]),
    n_cats=st.sampled_from([1, 5, 80]),
    nulls=st.booleans(),
    dup=st.booleans(),
    group=st.sampled_from([7, 50, 1000]),
    as_of=st.sampled_from([None, "mid"]),
    by_time=st.booleans(),
    text_ids=st.booleans(),
)
def test_direct_equals_in_memory(
    tmp_path_factory, n, seed, unit, order_ids, n_cats, nulls, dup, group, as_of, by_time, text_ids
) -> None:  # noqa: ANN001
    table = _table(
        n, seed, unit, order_ids=order_ids, n_cats=n_cats, nulls=nulls, text_ids=text_ids
    )
    if dup:  # exact duplicate rows (counted when there are no order ids)
        table = pa.concat_tables([table, table.slice(0, max(1, n // 4))])
    if by_time:  # rows in time order: duplicates are found within runs of equal timestamps
        table = table.sort_by([("order_ts", "ascending")])
    path = tmp_path_factory.mktemp("d") / "o.parquet"
    pq.write_table(table, path, row_group_size=group)
    assert _reader(path) == "arrow"  # the test must exercise the arrow reader
    when = None
    if as_of == "mid":
        days = pl.read_parquet(path)["order_ts"].drop_nulls()
        if days.len():
            when = days.cast(pl.Date).sort()[days.len() // 2]
    frame = pl.read_parquet(path)
    try:
        ref = order_features_ref(frame, when)
    except ValueError:  # no timestamp at all
        ref = None
    if ref is None or ref.rows_used == 0:
        for reader in S.READERS:
            with pytest.raises(DataError):
                order_features(path, as_of=when, batch_rows=16, reader=reader)
        return
    got = order_features(path, as_of=when, batch_rows=16)
    assert got.reader == "arrow"
    same_as_ref(got, ref)
    _same(got, order_features(path, as_of=when, batch_rows=16, reader="polars"))


def test_direct_dictionary_categories_many_files(tmp_path: Path) -> None:
    """Category dictionaries differ per file and row group; > 64 categories use exact pairs."""
    folder = tmp_path / "parts"
    folder.mkdir()
    for f in range(3):
        n = 200
        table = pa.table(
            {
                "customer_id": pa.array(np.arange(n) % 7, pa.int32()),
                "order_ts": pa.array([dt.date(2026, 1, 1 + (i % 28)) for i in range(n)]),
                "amount": pa.array(np.full(n, 3, np.int64)),  # integer amounts
                "category": pa.array(
                    [f"k{(i * 7 + f * 31) % 100}" for i in range(n)]
                ).dictionary_encode(),
            }
        )
        pq.write_table(table, folder / f"p{f}.parquet", row_group_size=60)
    assert _reader(folder) == "arrow"
    got = order_features(folder, batch_rows=25)
    _same(got, order_features(folder, reader="polars"))
    assert got.frame["distinct_categories"].max() > 64


def test_direct_text_ids_across_row_groups_and_files(tmp_path: Path) -> None:
    """Text ids are coded per distinct value of each row group's dictionary, consistently."""
    folder = tmp_path / "t"
    folder.mkdir()
    names = ["b", "a", "c", "a", None, "b", "zz", "a"]
    for f in range(2):
        table = pa.table(
            {
                "customer_id": pa.array(names[f:] + names[:f]),
                "order_ts": pa.array([dt.date(2026, 3, 1 + i) for i in range(8)]),
                "amount": pa.array([1.0, 2.0, -1.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
            }
        )
        pq.write_table(table, folder / f"p{f}.parquet", row_group_size=3)
    assert _reader(folder) == "arrow"
    got = order_features(folder, batch_rows=2)
    assert got.frame["customer_id"].to_list() == ["a", "b", "c", "zz"]
    assert got.report.left_out["missing_customer_id"] == 2
    _same(got, order_features(folder, reader="polars"))


def _reader(path: object) -> str:
    plan = O.plan_orders(path, keep_raw_ts=True)
    stats = S.order_stats(plan, need_max_date=False)
    return S.open_orders(plan, stats, batch_rows=16).kind


def test_reader_choice(tmp_path: Path) -> None:
    """Typed Parquet takes the arrow reader; anything needing typing, and CSV, the polars one;
    both give the same result (rejects too)."""
    zoned = pa.table(
        {
            "customer_id": [1, 2],
            "order_ts": pa.array([0, 86_400_000_000], pa.timestamp("us", tz="Europe/Paris")),
            "amount": [1.0, 2.0],
        }
    )
    texts = pa.table(
        {"customer_id": [1, 2], "order_ts": ["2026-01-01", "2026-01-02"], "amount": [1.0, 2.0]}
    )
    floats = pa.table(
        {"customer_id": [1.0, 2.0], "order_ts": [dt.date(2026, 1, 1)] * 2, "amount": [1.0, 2.0]}
    )
    for name, table in (("zoned", zoned), ("texts", texts), ("floats", floats)):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        assert _reader(path) == "polars", name
        with pytest.raises(Exception, match="reader='arrow' cannot read"):
            order_features(path, reader="arrow")
        _same(order_features(path), order_features(pl.read_parquet(path)))
    ok = tmp_path / "ok.parquet"
    pq.write_table(floats.set_column(0, "customer_id", pa.array([1, 2])), ok)
    assert _reader(ok) == "arrow"
    a = order_features(ok, rejects=tmp_path / "ra.parquet", as_of=dt.date(2026, 1, 1))
    b = order_features(ok, rejects=tmp_path / "rb.parquet", reader="polars")
    _same(a, b)
    assert pl.read_parquet(tmp_path / "ra.parquet").equals(pl.read_parquet(tmp_path / "rb.parquet"))
    csv = tmp_path / "o.csv"
    pl.read_parquet(ok).write_csv(csv)
    assert _reader(csv) == "polars"


def test_direct_unreadable_row_group_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "o.parquet"
    table = pa.table(
        {
            "customer_id": np.arange(1000),
            "order_ts": pa.array(np.arange(1000) * 10**9, pa.timestamp("ns")),
            "amount": np.ones(1000),
        }
    )
    pq.write_table(table, path, row_group_size=100)
    data = bytearray(path.read_bytes())
    data[200:400] = b"\x00" * 200  # corrupt the first pages, keep the footer
    path.write_bytes(bytes(data))
    with pytest.raises(Exception, match="o.parquet"):
        order_features(path)


# ------------------------------------------------------------------------------- the kernel


@settings(max_examples=60, deadline=None)
@given(
    ts=st.lists(st.integers(-(2**62), 2**62), min_size=0, max_size=50),
    per_day=st.sampled_from([1, 86_400, 86_400_000, 86_400_000_000, 86_400_000_000_000]),
)
def test_day_of_is_floor_division(ts, per_day) -> None:  # noqa: ANN001
    arr = np.array(ts, np.int64)
    assert day_of(arr, per_day).tolist() == (arr // per_day).tolist()


def _bitmap(valid: np.ndarray) -> np.ndarray:
    return np.packbits(valid, bitorder="little") if not valid.all() else np.empty(0, np.uint8)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 9)),
            st.one_of(st.none(), st.integers(-5, 5)),
            st.one_of(
                st.none(), st.sampled_from([0.0, -0.0, 1.5, -2.0, float("nan"), float("inf")])
            ),
        ),
        max_size=40,
    ),
    as_of=st.integers(-3, 3),
)
def test_ingest_counts_and_compacts_like_the_reference(rows, as_of) -> None:  # noqa: ANN001
    n = len(rows)
    cid = np.array([r[0] or 0 for r in rows], np.int64)
    day = np.array([r[1] or 0 for r in rows], np.int64)
    amt = np.array([0.0 if r[2] is None else r[2] for r in rows], np.float64)
    valid = [np.array([r[k] is not None for r in rows], bool) for k in range(3)]
    out = IngestBuffers(n, hashes=True)
    counts = np.zeros(4, np.int64)
    used, ok, _ = ingest_rows(
        (cid, _bitmap(valid[0]), 0),
        (day, _bitmap(valid[1]), 0),
        1,
        (amt, _bitmap(valid[2]), 0),
        as_of,
        out,
        counts,
    )
    ref_counts = [0, 0, 0, 0]
    kept = []
    for c, d, a in rows:
        if c is None:
            ref_counts[0] += 1
        elif d is None:
            ref_counts[1] += 1
        elif a is None or not np.isfinite(a):
            ref_counts[2] += 1
        elif d > as_of:
            ref_counts[3] += 1
        else:
            kept.append((c, d, a, 1 if a >= 0 else 0))
    assert ok and counts.tolist() == ref_counts and used == len(kept)
    got = list(
        zip(
            out.cid[:used].tolist(),
            out.day[:used].tolist(),
            out.amount[:used].tolist(),
            out.flags[:used].tolist(),
            strict=True,
        )
    )
    assert got == kept
    # equal rows hash equal (-0.0 and 0.0 alike); a null differs from any value
    key = [(r[0], r[1], None if r[2] is None else (0.0 if r[2] == 0 else r[2])) for r in rows]
    for i in range(n):
        for j in range(n):
            same = key[i] == key[j] or (
                key[i][:2] == key[j][:2]
                and key[i][2] is not None
                and key[j][2] is not None
                and np.isnan(key[i][2])
                and np.isnan(key[j][2])
            )
            if same:
                assert out.hashes[i] == out.hashes[j]


def test_ingest_checks_order_ids_and_id_range() -> None:
    cid = (np.array([5, 6, 7], np.int64), np.empty(0, np.uint8), 0)
    day = (np.zeros(3, np.int64), np.empty(0, np.uint8), 0)
    amt = (np.ones(3), np.empty(0, np.uint8), 0)
    out = IngestBuffers(3, hashes=False)
    counts = np.zeros(4, np.int64)
    oid = (np.array([1, 2, 2], np.int64), np.empty(0, np.uint8), 0)
    _, ok, last = ingest_rows(cid, day, 1, amt, 0, out, counts, order_id=oid)
    assert not ok and last == 2
    oid = (np.array([3, 4, 9], np.int64), np.empty(0, np.uint8), 0)
    _, ok, last = ingest_rows(cid, day, 1, amt, 0, out, counts, order_id=oid, last_order_id=2)
    assert ok and last == 9
    _, ok, _ = ingest_rows(cid, day, 1, amt, 0, out, counts, order_id=oid, last_order_id=3)
    assert not ok  # the first id of a batch must follow the last of the previous one
    used, _, _ = ingest_rows(cid, day, 1, amt, 0, out, counts, id_range=(5, 3))
    assert used == 3 and out.cid[:3].tolist() == [0, 1, 2]
    with pytest.raises(ParameterError, match="customer id 7 lies outside"):
        ingest_rows(cid, day, 1, amt, 0, out, counts, id_range=(5, 2))
    with pytest.raises(ParameterError, match="buffers hold"):
        ingest_rows(cid, day, 1, amt, 0, IngestBuffers(2, hashes=False), counts)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=4),
    shuffle=st.booleans(),
)
def test_run_duplicates_equal_a_global_count(rows, cuts, shuffle) -> None:  # noqa: ANN001
    """Counting within runs of equal timestamps equals counting over all rows, when sorted."""
    rows = sorted(rows) if not shuffle else rows
    ts = np.array([r[0] for r in rows], np.int64)
    hashes = np.array([r[0] * 10 + r[1] for r in rows], np.uint64)
    runs = RunDuplicates()
    bounds = sorted({0, len(rows), *[c for c in cuts if c <= len(rows)]})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        runs.add((ts[lo:hi], np.empty(0, np.uint8), 0), hashes[lo:hi])
    in_order = bool(np.all(np.diff(ts) >= 0))
    assert runs.sorted == in_order
    if in_order:
        assert runs.count() == len(rows) - len(set(hashes.tolist()))


# ------------------------------------------------------------------------------- events


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 200),
    seed=st.integers(0, 10**6),
    unit=st.sampled_from(["us", "ns", "date"]),
    nulls=st.booleans(),
    group=st.sampled_from([5, 64, 1000]),
    files=st.integers(1, 2),
)
def test_direct_events_equal_in_memory(
    tmp_path_factory, n, seed, unit, nulls, group, files
) -> None:  # noqa: ANN001
    from fastseg import features as feat
    from fastseg.orders import load_events

    rng = np.random.default_rng(seed)
    folder = tmp_path_factory.mktemp("ev")
    kinds = ["email_open", "site-visit", "site_visit", "Add To Cart", "x"]
    for f in range(files):
        ids = rng.integers(0, 40, n)
        days = 20_000 - rng.integers(-3, 200, n)
        ts = (
            pa.array(days.astype(np.int32), pa.date32())
            if unit == "date"
            else pa.array(
                days * 86_400 * _UNITS[unit[0] if unit == "s" else unit], pa.timestamp(unit)
            )
        )
        ev = [kinds[k] for k in rng.integers(0, len(kinds), n)]
        cols = {"customer_id": pa.array(ids), "event_ts": ts, "event": pa.array(ev, pa.string())}
        if nulls and n:
            for name, every in (("customer_id", 7), ("event_ts", 11), ("event", 5)):
                values = cols[name].to_pylist()
                for i in range(1, n, every):
                    values[i] = None
                cols[name] = pa.array(values, cols[name].type)
        pq.write_table(pa.table(cols), folder / f"e{f}.parquet", row_group_size=group)
    as_of = dt.date(1970, 1, 1) + dt.timedelta(days=20_000 - 30)
    dp = D.plan_direct_events(folder)
    assert dp is not None
    got, got_report = D.event_features_direct(dp, as_of, feat.EVENT_WINDOWS, batch_rows=32)
    ev, report = load_events(folder, as_of=as_of)
    want = feat.event_features(ev, as_of)
    assert got_report.left_out == report.left_out
    assert (got_report.rows_read, got_report.rows_used) == (report.rows_read, report.rows_used)
    if want.width == 1:  # no usable event
        assert got.height == 0
        return
    assert got.equals(want)


def test_direct_events_used_by_score_and_fallbacks(tmp_path: Path) -> None:
    import fastseg

    orders = tmp_path / "o.parquet"
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([1, 2, 3, 1]),
                "order_ts": pa.array([dt.date(2026, 5, d) for d in (1, 2, 3, 4)]),
                "amount": pa.array([5.0, 6.0, 7.0, 8.0]),
            }
        ),
        orders,
    )
    events = tmp_path / "e.parquet"
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([1, 4, 4, None]),
                "event_ts": pa.array([dt.date(2026, 5, d) for d in (1, 2, 3, 3)]),
                "event": pa.array(["email_open", "site-visit", "email_open", "x"]),
            }
        ),
        events,
    )
    assert D.plan_direct_events(events) is not None
    a = fastseg.score(orders, events=events)
    b = fastseg.score(orders, events=events, reader="polars")  # events in memory, the other path
    assert a.equals(b) and a.height == 4  # customer 4: a prospect known from events only
    text = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"customer_id": ["a"], "event_ts": [dt.date(2026, 5, 1)], "event": ["x"]}), text
    )
    assert D.plan_direct_events(text) is None


def test_wrong_footer_statistics_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids outside the range the footers claim: one clear DataError, not an internal error."""
    import datetime as _dt

    from fastseg.errors import DataError
    from fastseg.features import EVENT_WINDOWS

    path = tmp_path / "o.parquet"
    pq.write_table(
        pa.table(
            {"customer_id": [5, 900], "order_ts": [_dt.date(2026, 1, 1)] * 2, "amount": [1.0, 2.0]}
        ),
        path,
    )
    lying = S.OrderStats(n=2, max_date=_dt.date(2026, 1, 1), id_range=(5, 10), text_ids=False)
    with monkeypatch.context() as m:  # as wrong statistics would say
        m.setattr(S, "order_stats", lambda plan, need_max_date: lying)
        with pytest.raises(DataError, match="Parquet statistics of column 'customer_id'"):
            order_features(path)
    events = tmp_path / "e.parquet"
    pq.write_table(
        pa.table(
            {"customer_id": [5, 900], "event_ts": [_dt.date(2026, 1, 1)] * 2, "event": ["a", "b"]}
        ),
        events,
    )
    edp = D.plan_direct_events(events)
    assert edp is not None
    got, _ = D.event_features_direct(edp, _dt.date(2026, 1, 1), EVENT_WINDOWS)
    assert got["customer_id"].to_list() == [5, 900]  # true statistics: no error
