"""The one row path: every source kind, every reader and every batch size give one result,
equal to the plain reference of the documented row semantics (tests/reference.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg.errors import DataError, SchemaError
from fastseg.pipeline import order_features
from fastseg.rules.catalog import load_catalog
from fastseg.rules.compile import required_aggregates
from tests.reference import order_features_ref, same_as_ref
from tests.reference import same_order_features as _same

AS_OF = dt.date(2026, 6, 30)


def _orders(
    n: int, seed: int, *, text_ids: bool = False, problems: bool = True, n_cats: int = 5
) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, max(2, n // 4), n) * 7 + 100
    # text ids as exports write them: some with surrounding whitespace (trimmed: the same
    # customer), some only whitespace (a missing id)
    pads = [("", ""), (" ", ""), ("", "  "), ("\t", "\u3000"), ("\u00a0", "")]
    kinds = rng.integers(0, len(pads), n)
    cust = (
        [
            "  " if j % 23 == 7 else pads[k][0] + f"C{i:06d}" + pads[k][1]
            for j, (i, k) in enumerate(zip(ids, kinds, strict=True))
        ]
        if text_ids
        else ids
    )
    days = rng.integers(-5, 900, n)
    df = pl.DataFrame(
        {
            "order_id": np.arange(n),
            "customer_id": cust,
            "order_ts": [dt.datetime(2026, 6, 30, 10) - dt.timedelta(days=int(d)) for d in days],
            "amount": np.round(rng.normal(40, 60, n), 2),
            "category": [f"cat{int(c)}" for c in rng.integers(0, n_cats, n)],
            "channel": rng.choice(["web", "app", "store"], n),
            "discount": np.where(rng.random(n) < 0.3, 5.0, 0.0),
        }
    )
    if problems:
        df = df.with_columns(
            pl.when(pl.int_range(pl.len()) % 17 == 3)
            .then(None)
            .otherwise(pl.col("customer_id"))
            .alias("customer_id"),
            pl.when(pl.int_range(pl.len()) % 19 == 4)
            .then(None)
            .otherwise(pl.col("amount"))
            .alias("amount"),
        )
    return df


def _sources(df: pl.DataFrame, folder: Path, group: int) -> dict[str, object]:
    """The same orders as every kind of source fastseg reads."""
    pq_path = folder / "o.parquet"
    df.write_parquet(pq_path, row_group_size=group)
    csv = folder / "o.csv"
    df.write_csv(csv)
    ipc = folder / "o.arrow"
    df.write_ipc(ipc)
    parts = folder / "parts"
    parts.mkdir()
    half = df.height // 2
    df.slice(0, half).write_parquet(parts / "a.parquet", row_group_size=group)
    df.slice(half).write_parquet(parts / "b.parquet", row_group_size=group)
    return {
        "parquet": pq_path,
        "parquet-folder": parts,
        "parquet-glob": str(parts / "*.parquet"),
        "csv": csv,
        "ipc": ipc,
        "polars": df,
        "lazy": df.lazy(),
        "arrow": df.to_arrow(),
        "pandas": df.to_pandas(),
    }


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 300),
    seed=st.integers(0, 10**6),
    batch=st.sampled_from([1, 7, 64, 1000]),
    text_ids=st.booleans(),
    order_ids=st.sampled_from(["none", "increasing", "shuffled", "lines"]),
    as_of=st.sampled_from([None, dt.date(2026, 6, 1)]),
    shuffle=st.booleans(),
)
def test_every_source_kind_equals_the_reference(
    tmp_path_factory, n, seed, batch, text_ids, order_ids, as_of, shuffle
) -> None:  # noqa: ANN001
    df = _orders(n, seed, text_ids=text_ids)
    rng = np.random.default_rng(seed)
    if order_ids == "none":
        df = df.drop("order_id")
        df = pl.concat([df, df.head(max(1, n // 5))])  # exact duplicates, counted
    elif order_ids == "shuffled":
        df = df.with_columns(pl.Series("order_id", rng.permutation(n)))
    elif order_ids == "lines":  # lines of orders, their ids repeating anywhere
        df = df.with_columns(pl.Series("order_id", rng.integers(0, max(1, n // 3), n)))
    if shuffle:
        df = df.sample(fraction=1.0, shuffle=True, seed=seed)
    df = df.drop("channel")
    folder = tmp_path_factory.mktemp("k")
    try:
        ref = order_features_ref(df, as_of)
    except ValueError:  # no timestamp at all
        ref = None
    results = {}
    for kind, src in _sources(df, folder, group=max(1, batch)).items():
        readers = ["arrow", "polars"] if kind.startswith("parquet") else [None]
        for reader in readers:
            if ref is None or ref.rows_used == 0:
                with pytest.raises(DataError):
                    order_features(src, as_of=as_of, batch_rows=batch, reader=reader)
                continue
            got = order_features(src, as_of=as_of, batch_rows=batch, reader=reader)
            assert got.reader == (reader or ("arrow" if kind.startswith("parquet") else "polars"))
            same_as_ref(got, ref)
            results[(kind, reader)] = got
    first = next(iter(results.values()), None)
    for got in results.values():
        _same(got, first)


def test_stream_csv_many_categories_rejects_and_rule_aggregates(tmp_path: Path) -> None:
    df = _orders(3000, 5, n_cats=90).drop("order_id")  # no order ids: duplicates are counted
    big = pl.DataFrame(  # one customer who bought in all 90 categories
        {
            "customer_id": [999_999] * 90,
            "order_ts": [dt.datetime(2026, 5, 1)] * 90,
            "amount": [10.0] * 90,
            "category": [f"cat{i}" for i in range(90)],
            "channel": ["web"] * 90,
            "discount": [0.0] * 90,
        }
    )
    df = pl.concat([df, df.head(25), big], how="vertical_relaxed")  # + 25 exact duplicate rows
    csv = tmp_path / "o.csv"
    df.write_csv(csv)
    rules = load_catalog(
        '[[segment]]\nname = "app"\ndescription = "d"\nrule = "orders(since: -90d, channel: \'app\') >= 1 AND revenue(since: -1y, category: \'cat3\') > 0"\n'
    )
    specs = required_aggregates(rules)
    kw = dict(as_of=AS_OF, aggregates=specs, extra_columns=["channel"])
    a = order_features(csv, batch_rows=500, rejects=tmp_path / "ra.parquet", **kw)
    b = order_features(
        pl.read_csv(csv, try_parse_dates=True), rejects=tmp_path / "rb.parquet", **kw
    )
    _same(a, b)
    assert a.report.duplicates == b.report.duplicates >= 25
    assert a.frame["distinct_categories"].max() == 90
    ra, rb = pl.read_parquet(tmp_path / "ra.parquet"), pl.read_parquet(tmp_path / "rb.parquet")
    assert ra["order_ts"].dtype == pl.String  # timestamps as read: CSV text, frame datetimes
    ra, rb = ra.drop("order_ts"), rb.drop("order_ts")
    assert ra.sort(ra.columns).equals(rb.sort(rb.columns))
    assert ra.height == sum(a.report.left_out.values())
    assert a.aggregates is not None and b.aggregates is not None
    sa = a.aggregates[0].sort("customer_id")
    sb = b.aggregates[0].sort("customer_id").select(sa.columns)
    assert sa.drop([c for c in sa.columns if c.startswith("revenue")]).equals(
        sb.drop([c for c in sb.columns if c.startswith("revenue")])
    )


def test_line_items_stream(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "order_id": [5, 5, 3, 3, 9],
            "customer_id": [1, 1, 2, 2, 1],
            "order_ts": [AS_OF] * 5,
            "amount": [10.0, 5.0, 3.0, 4.0, 1.0],
        }
    )
    path = tmp_path / "lines.parquet"
    df.write_parquet(path)
    got = order_features(path)
    assert got.reader == "arrow"
    assert got.frame["frequency"].to_list() == [2, 1]
    for batch in (1, 2, 3):  # the lines of one order in different batches, ids going back
        assert order_features(path, batch_rows=batch).frame["frequency"].to_list() == [2, 1]


def test_stream_errors(tmp_path: Path) -> None:
    p = tmp_path / "o.csv"
    p.write_text("customer_id,order_ts,amount\n" + "1,2026-01-01,5\n" * 50 + "2,2026-01-02,abc\n")
    with pytest.raises(SchemaError, match="'abc'"):
        order_features(p, batch_rows=8)
    p.write_text("customer_id,order_ts,amount\n")
    with pytest.raises(DataError, match="has no rows"):
        order_features(p)
    p.write_text("customer_id,order_ts,amount\n1,2026-01-01,5\n")
    with pytest.raises(DataError, match="no usable order"):
        order_features(p, as_of=dt.date(2020, 1, 1))


def test_text_ids_and_categories_across_batches(tmp_path: Path) -> None:
    """Codes must be stable across batches (categorical codes are local to each batch)."""
    df = pl.DataFrame(
        {
            "customer_id": ["B", "A", "B", "C", "A", "B"],
            "order_ts": [AS_OF] * 6,
            "amount": [1.0, 2.0, 3.0, -1.0, 4.0, 5.0],
            "category": ["x", "y", "y", "x", "z", "x"],
        }
    )
    path = tmp_path / "t.parquet"
    df.write_parquet(path)
    got = order_features(path, batch_rows=1).frame
    assert got["customer_id"].to_list() == ["A", "B", "C"]
    assert got["frequency"].to_list() == [2, 3, 0]
    assert got["distinct_categories"].to_list() == [2, 2, 0]
    _same(order_features(path, batch_rows=2), order_features(path, reader="polars"))


def test_segments_across_files_of_a_folder(tmp_path: Path) -> None:
    """Slices of a multi-file Parquet source (bounded read-ahead) see every row exactly once."""
    df = _orders(700, 11, problems=False)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, part in enumerate((df.slice(0, 250), df.slice(250, 100), df.slice(350, 350))):
        part.write_parquet(folder / f"part-{i}.parquet", row_group_size=40)
    streamed = order_features(folder, as_of=AS_OF, batch_rows=33)
    assert streamed.reader == "arrow" and streamed.report.rows_read == 700
    _same(streamed, order_features(folder, as_of=AS_OF, reader="polars", batch_rows=33))
    _same(streamed, order_features(df, as_of=AS_OF))


def test_csv_with_order_ids(tmp_path: Path) -> None:
    """CSV reads ids as text: text order ids tell lines of one order apart as text."""
    df = _orders(500, 3, problems=False)
    for name, ids in (
        ("numbers", [str(9 + i) for i in range(500)]),  # "9" < "10" as numbers, not as text
        ("codes", [f"ORD-{i:05d}" for i in range(500)]),
    ):
        path = tmp_path / f"{name}.csv"
        df.with_columns(pl.Series("order_id", ids)).write_csv(path)
        got = order_features(path, as_of=AS_OF, batch_rows=64)
        _same(got, order_features(df, as_of=AS_OF))
    path = tmp_path / "lines.csv"
    df.with_columns(pl.Series("order_id", [str(i // 2) for i in range(500)])).write_csv(path)
    got = order_features(path, as_of=AS_OF, batch_rows=64)
    lines = df.with_columns(pl.Series("order_id", [str(i // 2) for i in range(500)]))
    same_as_ref(got, order_features_ref(lines.drop("channel"), AS_OF))
    assert got.frame["frequency"].sum() < df.filter(pl.col("amount") >= 0).height


def test_conversion_errors_still_name_the_value(tmp_path: Path) -> None:
    """Blank text is a missing value; other text that is not a number is an error."""
    p = tmp_path / "o.csv"
    p.write_text("customer_id,order_ts,amount\n1,2026-01-01,  \n1,2026-01-02,x1\n2,2026-01-02,x2\n")
    with pytest.raises(SchemaError, match=r"'x1' and 1 more"):
        order_features(p)


@pytest.mark.parametrize("batch", [1, 3, 1000])
def test_csv_ids_typed_batch_by_batch(tmp_path: Path, batch: int) -> None:
    """CSV ids are stripped (an id of only spaces is missing); they are integers only when every
    one is a plain integer, whichever batch the first other one comes in."""
    p = tmp_path / "o.csv"
    p.write_text(
        "customer_id,order_ts,amount\n1,2026-01-01,5\n 2 ,2026-01-02,6\n1,2026-01-03,7\n"
        "   ,2026-01-03,1\n"
    )
    ints = order_features(p, batch_rows=batch)
    assert ints.frame["customer_id"].to_list() == [1, 2]
    assert ints.frame["frequency"].to_list() == [2, 1]
    assert ints.report.left_out["missing_customer_id"] == 1
    p.write_text(p.read_text() + "0042,2026-01-03,2\n2,2026-01-03,3\n")
    text = order_features(p, batch_rows=batch)
    assert text.frame["customer_id"].to_list() == ["0042", "1", "2"]  # as written, sorted
    assert text.frame["frequency"].to_list() == [1, 2, 2]
    assert text.frame["monetary"].to_list() == [2.0, 12.0, 9.0]


def test_text_order_ids_compare_as_text(tmp_path: Path) -> None:
    """Plain-integer text order ids are keyed by their value, others by their text: '01' and
    '1' stay two orders, '1' twice is one, whichever batch the lines come in."""
    p = tmp_path / "o.csv"
    p.write_text(
        "customer_id,order_ts,amount,order_id\n"
        "7,2026-01-01,5,1\n7,2026-01-02,6,01\n8,2026-01-02,1,1\n7,2026-01-03,7,1\n"
        "7,2026-01-03,2,A-1\n7,2026-01-04,2,A-1\n"
    )
    for batch in (1, 2, 1000):
        got = order_features(p, batch_rows=batch)
        assert got.frame["frequency"].to_list() == [3, 1]  # 1, 01, A-1 | 1
        assert got.frame["monetary"].to_list() == [22.0, 1.0]


@pytest.mark.parametrize("batch", [2, 7, 1000])
def test_csv_ids_turning_text_keep_duplicates_and_rule_aggregates(
    tmp_path: Path, batch: int
) -> None:
    """Rows are hashed with their ids as text and rule aggregates keyed by the final ids,
    whichever batch the first text id comes in."""
    p = tmp_path / "o.csv"
    rows = [f"{i % 5},2026-06-{1 + i % 20:02d},{i},{['app', 'web'][i % 2]}" for i in range(40)]
    rows[3] = rows[0]  # an exact duplicate of row 0, in another batch for small batches
    rows[30] = "X1,2026-06-05,3,app"
    p.write_text("customer_id,order_ts,amount,channel\n" + "\n".join(rows) + "\n")
    rules = load_catalog(
        '[[segment]]\nname = "app"\ndescription = "d"\nrule = "orders(since: -90d, channel: \'app\') >= 1"\n'
    )
    got = order_features(
        p, batch_rows=batch, aggregates=required_aggregates(rules), extra_columns=["channel"]
    )
    assert got.report.duplicates == 1
    assert got.frame["customer_id"].dtype == pl.String
    assert got.aggregates is not None
    agg = got.aggregates[0].sort("customer_id")
    assert agg["customer_id"].to_list() == ["0", "1", "2", "3", "4", "X1"]
    want: dict[str, int] = {}
    for line in rows:  # app orders per customer; row 3 repeats row 0 (an order)
        cid, _, _, channel = line.split(",")
        want[cid] = want.get(cid, 0) + (channel == "app")
    assert agg.drop("customer_id").to_series().to_list() == [want[c] for c in sorted(want)]


def test_non_text_channel_reads_alike(tmp_path: Path) -> None:
    """A channel column of numbers is typed as text by either reader."""
    p = tmp_path / "o.parquet"
    pl.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "order_ts": [AS_OF] * 3,
            "amount": [1.0, 2.0, 3.0],
            "channel": [1, 2, 1],
        }
    ).write_parquet(p)
    rules = load_catalog(
        '[[segment]]\nname = "x"\ndescription = "d"\nrule = "orders(since: -90d, channel: \'1\') >= 1"\n'
    )
    kw = dict(aggregates=required_aggregates(rules), extra_columns=["channel"])
    a = order_features(p, **kw)
    b = order_features(p, reader="polars", **kw)
    assert a.aggregates is not None and b.aggregates is not None
    assert a.aggregates[0].sort("customer_id").equals(b.aggregates[0].sort("customer_id"))


def test_csv_slices_respect_quoted_newlines(tmp_path: Path) -> None:
    """CSV is read in slices of rows: a quoted field holding a line break stays one row."""
    n = 50
    df = pl.DataFrame(
        {
            "customer_id": [i % 7 for i in range(n)],
            "order_ts": [dt.date(2026, 1, 1 + i % 20) for i in range(n)],
            "amount": [float(i) for i in range(n)],
            "note": ["line1\nline2" if i % 3 == 0 else "x" for i in range(n)],
        }
    )
    df.write_csv(tmp_path / "q.csv")
    got = order_features(tmp_path / "q.csv", batch_rows=3)
    assert got.report.rows_read == n
    _same(got, order_features(df.drop("note")))
