"""Changes between two runs (fastseg.changes, ``fastseg diff``, ``run --previous``) against a
plain Polars reference: anti-joins of the long membership tables."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import fastseg
from fastseg.changes import GONE, NEW, NONE, Side, diff_sides
from fastseg.cli import app
from fastseg.errors import InputError
from fastseg.kernels import bitset as bs

runner = CliRunner()


# ------------------------------------------------------------------------------------ reference


def ref_changes(prev_long: pl.DataFrame, cur_long: pl.DataFrame, common: list[str]) -> pl.DataFrame:
    """joined/left per (customer, segment) for the segments of both runs (``common``)."""
    p = prev_long.filter(pl.col("segment").is_in(common))
    c = cur_long.filter(pl.col("segment").is_in(common))
    joined = c.join(p, on=["customer_id", "segment"], how="anti").with_columns(
        change=pl.lit("joined")
    )
    left = p.join(c, on=["customer_id", "segment"], how="anti").with_columns(change=pl.lit("left"))
    return pl.concat([joined, left]).sort("segment", "change", "customer_id")


def ref_summary(prev_long: pl.DataFrame, cur_long: pl.DataFrame, names: list[str]) -> dict:
    out = {}
    ch = ref_changes(prev_long, cur_long, names)
    for n in names:
        b = prev_long.filter(pl.col("segment") == n).height
        a = cur_long.filter(pl.col("segment") == n).height
        j = ch.filter((pl.col("segment") == n) & (pl.col("change") == "joined")).height
        l_ = ch.filter((pl.col("segment") == n) & (pl.col("change") == "left")).height
        out[n] = (b, a, j, l_, a - j)
    return out


def normalized(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(
        "customer_id", pl.col("segment").cast(pl.String), pl.col("change").cast(pl.String)
    ).sort("segment", "change", "customer_id")


def side(
    ids: list, names: list[str], member: np.ndarray, groups: list, revenue: list, text: bool = False
) -> Side:
    words = bs.pack_bool(member) if names else np.zeros((0, bs.n_words_for(len(ids))), np.uint64)
    dtype = pl.String if text or (ids and isinstance(ids[0], str)) else pl.Int64
    return Side(
        ids=pl.Series("customer_id", ids, dtype=dtype),
        names=tuple(names),
        words=words,
        groups=pl.Series(groups, dtype=pl.String),
        revenue=pl.Series(revenue, dtype=pl.Float64),
        as_of="2026-01-01",
        edges={"method": "quantile", "bins": 5, "edges": {}},
    )


def long_of(s: Side) -> pl.DataFrame:
    dense = bs.unpack(s.words, len(s.ids)) if s.names else np.zeros((0, len(s.ids)), bool)
    parts = [
        pl.DataFrame({"customer_id": s.ids.filter(pl.Series(dense[k])), "segment": name})
        for k, name in enumerate(s.names)
    ]
    empty = pl.DataFrame(
        {"customer_id": [], "segment": []},
        schema={"customer_id": s.ids.dtype, "segment": pl.String},
    )
    return pl.concat([empty, *parts]) if parts else empty


# ------------------------------------------------------------------------------- property tests


@st.composite
def run_pair(draw: st.DrawFn) -> tuple[Side, Side]:
    text = draw(st.booleans())
    pool = draw(st.integers(1, 300))
    # text ids whose byte order matters: prefixes of each other, lengths, non-ASCII, empty
    shapes = ("{}", "id-{}", "é{}", "{}0", "Z{}", "", "a\x00{}")
    universe = [
        shapes[i % len(shapes)].format(i) + ("" if shapes[i % len(shapes)] else f"{i}" * (i % 2))
        if text
        else i * 7919 - 50_000
        for i in range(pool)
    ]
    universe = list(dict.fromkeys(universe))
    pool = len(universe)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def one(names: list[str]) -> Side:
        k = int(rng.integers(0, pool + 1))
        ids = list(rng.choice(np.array(universe, dtype=object), size=k, replace=False))
        ids = [str(x) if text else int(x) for x in ids]
        if rng.random() < 0.6:  # as fastseg writes them: sorted (merged), else joined
            ids.sort()
        dens = rng.random(len(names)) if names else []
        member = np.array([rng.random(k) < d for d in dens], dtype=bool).reshape(len(names), k)
        groups = [
            None if rng.random() < 0.1 else str(rng.choice(["champions", "at_risk", "lost"]))
            for _ in range(k)
        ]
        revenue = rng.integers(0, 10_000, size=k).astype(float) / 100
        return side(ids, names, member, groups, list(revenue), text)

    all_names = ["a", "b", "c", "d", "e", "f"]
    pn = draw(st.lists(st.sampled_from(all_names), unique=True, max_size=6))
    cn = draw(st.lists(st.sampled_from(all_names), unique=True, max_size=6))
    return one(pn), one(cn)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run_pair())
def test_diff_equals_polars_reference(pair: tuple[Side, Side]) -> None:
    prev, cur = pair
    ch = diff_sides(prev, cur)
    pl_ = long_of(prev)
    cl = long_of(cur)
    order = [n for n in cur.names if n in prev.names]
    ref = ref_changes(pl_, cl, order)
    got = normalized(ch.changes)
    assert got.height == ref.height
    assert got.equals(ref.select(got.columns)), (got, ref)
    # segment-major (current run's order), joined before left
    seen = ch.changes.select(pl.col("segment").cast(pl.String), pl.col("change").cast(pl.String))
    keys = [(order.index(s), c) for s, c in seen.iter_rows()]
    assert keys == sorted(keys)
    # summary: counts, statuses, added/removed segments
    summary = {r["segment"]: r for r in ch.summary.iter_rows(named=True)}
    assert list(summary) == [*cur.names, *[n for n in prev.names if n not in cur.names]]
    ref_sum = ref_summary(pl_, cl, order)
    for n, r in summary.items():
        if n in order:
            assert r["status"] == "kept"
            assert (r["before"], r["after"], r["joined"], r["left"], r["stayed"]) == ref_sum[n]
        elif n in cur.names:
            assert r["status"] == "added" and r["before"] is None and r["joined"] is None
            assert r["after"] == cl.filter(pl.col("segment") == n).height
        else:
            assert r["status"] == "removed" and r["after"] is None
            assert r["before"] == pl_.filter(pl.col("segment") == n).height
    assert ch.segments_added == [n for n in cur.names if n not in prev.names]
    assert ch.segments_removed == [n for n in prev.names if n not in cur.names]
    # customers
    p_ids, c_ids = set(prev.ids.to_list()), set(cur.ids.to_list())
    assert ch.customers == {
        "before": len(p_ids),
        "after": len(c_ids),
        "new": len(c_ids - p_ids),
        "gone": len(p_ids - c_ids),
        "staying": len(c_ids & p_ids),
    }
    check_transitions(ch, prev, cur)


def check_transitions(ch: fastseg.Changes, prev: Side, cur: Side) -> None:
    t = ch.transitions
    now = t.filter(pl.col("after") != GONE)
    then = t.filter(pl.col("before") != NEW)
    assert int(now["customers"].sum()) == len(cur.ids)
    assert int(then["customers"].sum()) == len(prev.ids)
    assert now["revenue_after"].sum() == pytest.approx(
        cur.revenue.sum(), abs=0.01 * max(1, t.height)
    )
    assert then["revenue_before"].sum() == pytest.approx(
        prev.revenue.sum(), abs=0.01 * max(1, t.height)
    )
    # the plain reference: a full join of the two runs' groups
    p = pl.DataFrame({"customer_id": prev.ids, "before": prev.groups.fill_null(NONE)})
    c = pl.DataFrame({"customer_id": cur.ids, "after": cur.groups.fill_null(NONE)})
    ref = (
        p.join(c, on="customer_id", how="full", coalesce=True)
        .with_columns(pl.col("before").fill_null(NEW), pl.col("after").fill_null(GONE))
        .group_by("before", "after")
        .agg(pl.len().cast(pl.Int64).alias("customers"))
        .sort("before", "after")
    )
    got = t.select("before", "after", "customers").sort("before", "after")
    assert got.equals(ref)
    # revenue per cell against the same full join
    p = p.with_columns(revenue_before=prev.revenue)
    c = c.with_columns(revenue_after=cur.revenue)
    cells = (
        p.join(c, on="customer_id", how="full", coalesce=True)
        .with_columns(pl.col("before").fill_null(NEW), pl.col("after").fill_null(GONE))
        .group_by("before", "after")
        .agg(pl.col("revenue_before").sum(), pl.col("revenue_after").sum())
        .sort("before", "after")
    )
    mine = t.sort("before", "after")
    for col in ("revenue_before", "revenue_after"):
        want = cells[col].to_numpy()
        have = mine[col].fill_null(0.0).to_numpy()
        assert np.allclose(have, want, atol=0.006), (col, mine, cells)
    assert (
        t.filter(pl.col("before") == NEW)["revenue_before"].null_count()
        == t.filter(pl.col("before") == NEW).height
    )


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 700),
    st.integers(0, 700),
    st.integers(0, 2**32 - 1),
)
def test_changes_kernel_equals_numpy(n_dst: int, n_src: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    dst = rng.random((3, n_dst)) < rng.random()
    src = rng.random((2, n_src)) < rng.random()
    mapping = rng.integers(-1, n_src, n_dst) if n_src else np.full(n_dst, -1)
    rows_d, rows_s = np.array([2, 0, 1]), np.array([0, 1, 1])
    only, both = bs.changes(bs.pack_bool(dst), rows_d, bs.pack_bool(src), rows_s, mapping)
    got = bs.unpack(only, n_dst) if n_dst else np.zeros((3, 0), bool)
    for k in range(3):
        remap = np.zeros(n_dst, bool)
        ok = mapping >= 0
        remap[ok] = src[rows_s[k]][mapping[ok]]
        assert np.array_equal(got[k], dst[rows_d[k]] & ~remap)
        assert both[k] == int((dst[rows_d[k]] & remap).sum())
    # tail bits stay zero
    if n_dst % 64:
        assert not (only[:, -1] >> np.uint64(n_dst % 64)).any()


def test_changes_kernel_rejects_bad_mapping() -> None:
    w = bs.pack_bool(np.ones((1, 10), bool))
    with pytest.raises(fastseg.ParameterError):
        bs.changes(w, np.array([0]), w, np.array([0]), np.full(10, 64))


def test_id_kinds_must_match() -> None:
    a = side([1, 2], ["x"], np.ones((1, 2), bool), ["a", "b"], [1.0, 2.0])
    b = side(["1", "2"], ["x"], np.ones((1, 2), bool), ["a", "b"], [1.0, 2.0])
    with pytest.raises(InputError, match="integers.*text.*cannot be matched"):
        diff_sides(a, b)


def test_unsorted_ids_fall_back_to_the_join() -> None:
    a = side(["x", "y", "z"], ["s"], np.array([[1, 0, 1]], bool), ["a"] * 3, [1.0] * 3)
    b = side(["z", "w", "x"], ["s"], np.array([[0, 1, 1]], bool), ["a"] * 3, [1.0] * 3)
    ch = diff_sides(a, b)
    assert sorted(ch.changes.select("customer_id", pl.col("change").cast(str)).rows()) == [
        ("w", "joined"),
        ("z", "left"),
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40),
    st.booleans(),
)
def test_merge_kernels_equal_a_dict_reference(a: list[int], b: list[int], text: bool) -> None:
    from fastseg.kernels.align import merge_sorted_int, merge_sorted_text
    from fastseg.segmenting import text_buffers

    a = sorted(set(a)) if len(a) % 2 == 0 else list(dict.fromkeys(a))
    b = sorted(set(b))
    if text:  # texts sharing prefixes, unicode, empty
        a = [f"é{x % 97}" if x % 3 else str(x) for x in a]
        b = [f"é{x % 97}" if x % 3 else str(x) for x in b]
        a, b = list(dict.fromkeys(a)), sorted(set(b))
        got = merge_sorted_text(
            text_buffers(pl.Series(a, dtype=pl.String)),
            text_buffers(pl.Series(b, dtype=pl.String)),
        )
        ordered = all(x.encode() < y.encode() for x, y in zip(a, a[1:], strict=False))
    else:
        got = merge_sorted_int(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64))
        ordered = all(x < y for x, y in zip(a, a[1:], strict=False))
    if not ordered:
        assert got is None
        return
    assert got is not None
    where = {v: i for i, v in enumerate(b)}
    assert got[0].tolist() == [where.get(v, -1) for v in a]
    back = {v: i for i, v in enumerate(a)}
    assert got[1].tolist() == [back.get(v, -1) for v in b]


# ------------------------------------------------------------------------------------ end to end


def orders_frame(seed: int, n_customers: int, text: bool, day: dt.date) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_customers * 4
    ids = rng.integers(0, n_customers, n)
    cust = [f"C{i:05d}" for i in ids] if text else (ids * 1_000_003 + 10**12).tolist()
    days = rng.integers(0, 700, n)
    return pl.DataFrame(
        {
            "customer_id": cust,
            "order_ts": [
                dt.datetime.combine(day, dt.time()) - dt.timedelta(days=int(d)) for d in days
            ],
            "amount": np.round(rng.gamma(2.0, 40.0, n), 2),
        }
    )


RULES_A = """
[[segment]]
name = "big"
description = "over 300"
rule = "monetary > 300"
[[segment]]
name = "old_only"
description = "only in the first run"
rule = "frequency >= 5"
"""
RULES_B = """
[[segment]]
name = "big"
description = "over 300"
rule = "monetary > 300"
[[segment]]
name = "new_only"
description = "only in the second run"
rule = "recency_days <= 30"
"""


@pytest.mark.parametrize("text", [False, True])
def test_diff_of_two_runs_equals_reference(tmp_path: Path, text: bool) -> None:
    d1, d2 = dt.date(2026, 5, 1), dt.date(2026, 6, 1)
    o = orders_frame(1, 400, text, d2)
    day1 = o.filter(pl.col("order_ts") <= dt.datetime(2026, 5, 1))
    # customers gone: the second history drops some; new: customers only after day 1
    day2 = o.filter(~pl.col("customer_id").is_in(day1["customer_id"].unique().head(25).implode()))
    (tmp_path / "a.toml").write_text(RULES_A)
    (tmp_path / "b.toml").write_text(RULES_B)
    r1 = fastseg.run(day1, as_of=d1, rules=tmp_path / "a.toml", out=tmp_path / "r1")
    r2 = fastseg.run(
        day2, as_of=d2, rules=tmp_path / "b.toml", out=tmp_path / "r2", previous=tmp_path / "r1"
    )
    ch = fastseg.diff(tmp_path / "r1", tmp_path / "r2", out=tmp_path / "d")
    p_long = pl.read_parquet(tmp_path / "r1" / "segments.parquet").with_columns(
        pl.col("segment").cast(pl.String)
    )
    c_long = pl.read_parquet(tmp_path / "r2" / "segments.parquet").with_columns(
        pl.col("segment").cast(pl.String)
    )
    names1 = pl.read_csv(tmp_path / "r1" / "summary.csv")["segment"].to_list()
    names2 = pl.read_csv(tmp_path / "r2" / "summary.csv")["segment"].to_list()
    ref = ref_changes(p_long, c_long, [n for n in names2 if n in names1])
    assert normalized(ch.changes).equals(ref.select("customer_id", "segment", "change"))
    assert ch.customers["new"] > 0 and ch.customers["gone"] > 0
    assert "new_only" in ch.segments_added and "old_only" in ch.segments_removed
    # the run folder's copy, the diff folder's and the API's agree
    for folder in (tmp_path / "r2", tmp_path / "d"):
        assert normalized(pl.read_parquet(folder / "changes.parquet")).equals(
            normalized(ch.changes)
        )
        summary = pl.read_csv(folder / "changes.csv")
        assert summary.columns == [
            "segment",
            "status",
            "before",
            "after",
            "joined",
            "left",
            "stayed",
        ]
        assert summary.filter(pl.col("segment") == "new_only")["status"].item() == "added"
        assert summary.filter(pl.col("segment") == "old_only")["status"].item() == "removed"
        t = pl.read_csv(folder / "transitions.csv")
        assert t.filter(pl.col("after") != GONE)["customers"].sum() == r2.n_customers
        assert t.filter(pl.col("before") != NEW)["customers"].sum() == r1.n_customers
    assert normalized(r2.changes.changes).equals(normalized(ch.changes))
    assert normalized(r2.diff(r1).changes).equals(normalized(ch.changes))
    doc = json.loads((tmp_path / "d" / "diff.json").read_text())
    assert doc["customers"] == ch.customers and doc["rfm_edges_changed"] is True
    assert any("--edges-in" in n for n in doc["notes"])
    run_doc = json.loads((tmp_path / "r2" / "run.json").read_text())
    assert run_doc["previous"]["customers"] == ch.customers
    assert (
        run_doc["previous"]["previous"]["run_id"]
        == json.loads((tmp_path / "r1" / "run.json").read_text())["run_id"]
    )


def test_same_edges_give_no_note_and_identical_runs_no_changes(tmp_path: Path) -> None:
    o = orders_frame(2, 200, False, dt.date(2026, 6, 1))
    fastseg.run(o, as_of="2026-06-01", out=tmp_path / "a", edges_out=tmp_path / "e.json")
    fastseg.run(o, as_of="2026-06-01", out=tmp_path / "b", edges_in=tmp_path / "e.json")
    ch = fastseg.diff(tmp_path / "a", tmp_path / "b")
    assert ch.changes.height == 0 and not ch.edges_changed
    (note,) = ch.notes  # the same day twice: a rerun?
    assert "both runs were scored for the same date (2026-06-01)" in note
    t = ch.transitions
    assert (t["before"] == t["after"]).all()
    assert ch.summary["joined"].sum() == 0 and ch.summary["left"].sum() == 0


def test_previous_may_be_the_output_folder(tmp_path: Path) -> None:
    """The daily pattern ``run --out results --previous results``: results holds the latest run
    and its changes since the one before."""
    o = orders_frame(3, 200, False, dt.date(2026, 6, 1))
    out = tmp_path / "results"
    r1 = fastseg.run(o, as_of="2026-05-01", out=out)
    r2 = fastseg.run(o, as_of="2026-06-01", out=out, previous=out)
    assert (out / "changes.parquet").exists()
    ref = fastseg.run(o, as_of="2026-06-01").diff(r1)
    assert normalized(pl.read_parquet(out / "changes.parquet")).equals(normalized(ref.changes))
    assert r2.changes is not None and r2.changes.previous["as_of"] == "2026-05-01"


def test_csv_run_folder_keeps_text_ids(tmp_path: Path) -> None:
    """Text ids that look like numbers ("007") stay text when the run folder is CSV."""
    o = orders_frame(4, 150, True, dt.date(2026, 6, 1)).with_columns(
        pl.col("customer_id").str.replace("C", "0")
    )
    fastseg.run(o, as_of="2026-05-01", out=tmp_path / "a", out_format="csv")
    fastseg.run(o, as_of="2026-06-01", out=tmp_path / "b", out_format="csv")
    assert (tmp_path / "a" / "scores.csv").exists() and not (
        tmp_path / "a" / "scores.parquet"
    ).exists()
    ch = fastseg.diff(tmp_path / "a", tmp_path / "b")
    assert ch.changes["customer_id"].dtype == pl.String
    assert ch.changes["customer_id"].str.starts_with("0").all()
    direct = fastseg.run(o, as_of="2026-06-01").diff(tmp_path / "a")
    assert normalized(ch.changes).equals(normalized(direct.changes))


def test_folder_of_an_earlier_version_without_membership(tmp_path: Path) -> None:
    o = orders_frame(5, 200, False, dt.date(2026, 6, 1))
    fastseg.run(o, as_of="2026-05-01", out=tmp_path / "a")
    fastseg.run(o, as_of="2026-06-01", out=tmp_path / "b")
    new = fastseg.diff(tmp_path / "a", tmp_path / "b")
    os.remove(tmp_path / "a" / "membership.npz")
    old = fastseg.diff(tmp_path / "a", tmp_path / "b")
    assert normalized(old.changes).equals(normalized(new.changes))
    assert old.summary.equals(new.summary)


def test_run_json_records_how_it_was_made(tmp_path: Path) -> None:
    o = orders_frame(6, 100, False, dt.date(2026, 6, 1))
    o.write_parquet(tmp_path / "o.parquet")
    (tmp_path / "a.toml").write_text(RULES_A)
    res = runner.invoke(
        app,
        [
            "run",
            str(tmp_path / "o.parquet"),
            "--rules",
            str(tmp_path / "a.toml"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r" / "run.json").read_text())
    import hashlib

    assert doc["rules"]["sha256"] == hashlib.sha256((tmp_path / "a.toml").read_bytes()).hexdigest()
    assert doc["command"][0] == "fastseg" and doc["run_id"]
    (entry,) = doc["inputs"]
    assert entry["role"] == "orders" and entry["bytes"] == (tmp_path / "o.parquet").stat().st_size
    assert "write" in doc["timings_seconds"] and doc["fastseg"] == fastseg.__version__
    assert doc["files"]["membership.npz"] > 0
    summary = pl.read_csv(tmp_path / "r" / "summary.csv")
    assert (summary["revenue"] == summary["revenue"].round(2)).all()


def test_cli_diff(tmp_path: Path) -> None:
    o = orders_frame(7, 200, False, dt.date(2026, 6, 1))
    fastseg.run(o, as_of="2026-05-01", out=tmp_path / "a")
    fastseg.run(o, as_of="2026-06-01", out=tmp_path / "b")
    res = runner.invoke(
        app, ["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "d")]
    )
    assert res.exit_code == 0, res.output
    assert "changes since 2026-05-01" in res.output and "joined" in res.output
    assert sorted(os.listdir(tmp_path / "d")) == [
        "changes.csv",
        "changes.parquet",
        "diff.json",
        "transitions.csv",
    ]
    # a second diff into the same folder replaces it as a whole
    res = runner.invoke(
        app, ["diff", str(tmp_path / "b"), str(tmp_path / "a"), "--out", str(tmp_path / "d")]
    )
    assert res.exit_code == 0, res.output
    assert (
        json.loads((tmp_path / "d" / "diff.json").read_text())["current"]["as_of"] == "2026-05-01"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diff", "{t}/nope", "{t}/b"], "previous run {t}/nope: does not exist"),
        (["diff", "{t}/a", "{t}/plain"], "no run.json, not a fastseg run folder"),
        (["diff", "{t}/a", "{t}/b", "--out", "{t}/a"], "is also an input"),
        (
            ["run", "{t}/o.parquet", "--previous", "{t}/plain", "--out", "{t}/x"],
            "--previous {t}/plain: no run.json",
        ),
    ],
)
def test_cli_diff_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    o = orders_frame(8, 50, False, dt.date(2026, 6, 1))
    o.write_parquet(tmp_path / "o.parquet")
    fastseg.run(o, out=tmp_path / "a")
    fastseg.run(o, out=tmp_path / "b")
    (tmp_path / "plain").mkdir()
    res = runner.invoke(app, [a.format(t=tmp_path) for a in args])
    assert res.exit_code == 1, res.output
    lines = _error_lines(res.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert message.format(t=tmp_path) in lines[0]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("ids", ["int", "uuid"])
def test_bench_diff_smoke(tmp_path: Path, ids: str) -> None:
    """bench/bench_diff.py runs end to end at a tiny size and finds fastseg and the Polars
    anti-join recipe agreeing row for row (timings are never asserted)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "bench_diff.py"),
            "--customers",
            "3000",
            "--segments",
            "6",
            "--ids",
            ids,
            "--order",
            "shuffled" if ids == "int" else "sorted",
            "--repeat",
            "1",
            "--data-dir",
            str(tmp_path / "data"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["same_rows"] is True and report["change_rows"] > 0
    assert set(report["contenders"]) == {"fastseg", "polars"}


def test_damaged_run_folders_are_one_line_each(tmp_path: Path) -> None:
    import shutil

    o = orders_frame(9, 60, False, dt.date(2026, 6, 1))
    fastseg.run(o, out=tmp_path / "good")
    cases = {
        "junk membership": (
            lambda d: (d / "membership.npz").write_bytes(b"junk"),
            "is not a fastseg-membership-1 file",
        ),
        "wrong customers": (
            lambda d: np.savez(
                d / "membership.npz",
                format=np.array("fastseg-membership-1"),
                names=np.array(["a"]),
                words=np.zeros((1, 1), np.uint64),
                n_customers=np.array(5),
            ),
            "has 5 customers but scores.parquet has",
        ),
        "no scores": (
            lambda d: (d / "scores.parquet").unlink(),
            "no scores table in this run folder",
        ),
        "no run.json": (
            lambda d: (d / "run.json").unlink(),
            "no run.json, not a fastseg run folder",
        ),
        "run.json not a record": (
            lambda d: (d / "run.json").write_text("[1]"),
            "not a fastseg run record",
        ),
        "scores without rfm_group": (
            lambda d: (
                pl.read_parquet(d / "scores.parquet")
                .drop("rfm_group")
                .write_parquet(d / "scores.parquet")
            ),
            "no column 'rfm_group'",
        ),
    }
    for name, (damage, message) in cases.items():
        d = tmp_path / name.replace(" ", "_")
        shutil.copytree(tmp_path / "good", d)
        damage(d)
        res = runner.invoke(app, ["diff", str(d), str(tmp_path / "good")])
        assert res.exit_code == 1, (name, res.output)
        lines = _error_lines(res.output)
        assert len(lines) == 1 and message in lines[0], (name, res.output)


def test_transition_matrix_columns_in_label_order() -> None:
    a = side([1, 2, 3], [], np.zeros((0, 3), bool), ["b", "a", "c"], [1.0, 2.0, 3.0])
    b = side([2, 3, 4], [], np.zeros((0, 3), bool), ["c", "a", "b"], [1.0, 2.0, 3.0])
    m = diff_sides(a, b).transition_matrix()
    assert m.columns == ["before", "a", "b", "c", GONE]
    assert m["before"].to_list() == [NEW, "a", "b", "c"]


def test_tail_bits_of_a_membership_file_are_refused(tmp_path: Path) -> None:
    from fastseg.runs import write_membership

    o = orders_frame(10, 70, False, dt.date(2026, 6, 1))  # 70 customers: a tail of 58 bits
    fastseg.run(o, out=tmp_path / "a")
    fastseg.run(o, out=tmp_path / "b")
    z = np.load(tmp_path / "b" / "membership.npz")
    words = z["words"].copy()
    words[:, -1] = np.uint64(0xFFFFFFFFFFFFFFFF)
    write_membership(
        tmp_path / "b" / "membership.npz", tuple(z["names"]), words, int(z["n_customers"])
    )
    for args in (
        ["diff", str(tmp_path / "a"), str(tmp_path / "b")],
        [
            "export",
            str(tmp_path / "b"),
            "--segment",
            str(z["names"][0]),
            "--out",
            str(tmp_path / "x"),
        ],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 1, res.output
        assert "bits set past the last of the" in res.output and len(_error_lines(res.output)) == 1


def test_csv_folder_without_membership_keeps_its_empty_segments(tmp_path: Path) -> None:
    o = orders_frame(11, 120, True, dt.date(2026, 6, 1))
    fastseg.run(o, as_of="2026-05-01", out=tmp_path / "a", out_format="csv")
    fastseg.run(o, as_of="2026-06-01", out=tmp_path / "b", out_format="csv")
    new = fastseg.diff(tmp_path / "a", tmp_path / "b")
    sizes = pl.read_csv(tmp_path / "a" / "summary.csv")
    assert (sizes["customers"] == 0).any()  # some segment is empty: it must not go missing
    os.remove(tmp_path / "a" / "membership.npz")
    old = fastseg.diff(tmp_path / "a", tmp_path / "b")
    assert old.segments_added == [] and old.summary.equals(new.summary)
    assert normalized(old.changes).equals(normalized(new.changes))


@pytest.mark.parametrize("dtype", [pl.Int32, pl.UInt64])
def test_run_folders_written_elsewhere_with_other_integer_types(tmp_path: Path, dtype) -> None:  # noqa: ANN001
    o = orders_frame(12, 80, False, dt.date(2026, 6, 1)).with_columns(
        pl.col("customer_id") % 1_000_000
    )
    fastseg.run(o, as_of="2026-05-01", out=tmp_path / "a")
    fastseg.run(o, as_of="2026-06-01", out=tmp_path / "b")
    want = fastseg.diff(tmp_path / "a", tmp_path / "b")
    f = tmp_path / "a" / "scores.parquet"
    pl.read_parquet(f).with_columns(pl.col("customer_id").cast(dtype)).write_parquet(f)
    got = fastseg.diff(tmp_path / "a", tmp_path / "b")
    assert normalized(got.changes).equals(normalized(want.changes))
    if dtype == pl.UInt64:  # beyond the signed range: one clear line
        pl.read_parquet(f).with_columns(pl.col("customer_id") + 2**63).write_parquet(f)
        res = runner.invoke(app, ["diff", str(tmp_path / "a"), str(tmp_path / "b")])
        assert res.exit_code == 1 and "beyond the 64-bit signed range" in res.output, res.output


def test_previous_checked_before_any_row_is_read(tmp_path: Path) -> None:
    o = orders_frame(13, 50, False, dt.date(2026, 6, 1))
    o.write_parquet(tmp_path / "o.parquet")
    fastseg.run(o, out=tmp_path / "a")
    (tmp_path / "a" / "membership.npz").write_bytes(b"junk")
    calls = []
    import fastseg.api as api

    real = api.score_job
    try:
        api.score_job = lambda *a, **k: calls.append(1) or real(*a, **k)
        with pytest.raises(InputError, match="is not a fastseg-membership-1 file"):
            fastseg.run(tmp_path / "o.parquet", previous=tmp_path / "a", out=tmp_path / "b")
    finally:
        api.score_job = real
    assert calls == [] and not (tmp_path / "b").exists()


def test_csv_run_folder_reads_back_as_written(tmp_path: Path) -> None:
    """Every column of a CSV run folder's scores comes back with its type (profiles with dates,
    flags, lists and digit-only text included), equal to the Parquet folder's."""
    from fastseg import synthetic
    from fastseg.runs import open_run

    ds = synthetic.generate(tmp_path / "shop", orders=3000, customers=300, with_events=False)
    for fmt in ("parquet", "csv"):
        fastseg.run(ds.orders, customers=ds.customers, out=tmp_path / fmt, out_format=fmt)
    want = open_run(tmp_path / "parquet").scan("scores")
    got = open_run(tmp_path / "csv").scan("scores")
    assert got.columns == want.columns
    for name in want.columns:
        w, g = want[name], got[name]
        if isinstance(w.dtype, pl.Enum | pl.Categorical):
            w = w.cast(pl.String)
        if w.dtype == pl.Float64:
            assert np.allclose(g.fill_null(-1).to_numpy(), w.fill_null(-1).to_numpy()), name
        else:
            assert g.dtype == w.dtype and g.equals(w), (name, g.head(3), w.head(3))


# ------------------------------------------------------------------------- hostile inputs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fastseg import synthetic

    base = tmp_path_factory.mktemp("hostile")
    ds = synthetic.generate(base / "shop", orders=4000, customers=400, with_events=False)
    fastseg.run(ds.orders, customers=ds.customers, as_of="2026-05-31", out=base / "may")
    fastseg.run(ds.orders, customers=ds.customers, out=base / "june", previous=base / "may")
    fastseg.export(base / "june", ["vip"], out=base / "exp", default_country="US")
    return base


def _copy(base: Path, name: str, to: str) -> Path:
    import shutil

    dst = base / to
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(base / name, dst)
    return dst


def _error_lines(output: str) -> list[str]:
    """The lines of a failed command without the progress lines of the stages it finished
    (``fastseg: orders  4,000 rows  0.01 s``) before the error."""
    return [ln for ln in output.strip().splitlines() if not ln.startswith("fastseg: ")]


def _one_error(args: list[str], message: str) -> None:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 1, res.output
    lines = _error_lines(res.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert message in lines[0], res.output


def test_an_output_folder_of_another_kind_is_never_replaced(two_runs: Path) -> None:
    b = two_runs
    victim = _copy(b, "may", "victim-run")
    before = sorted(os.listdir(victim))
    _one_error(
        ["export", b / "june", "--segment", "vip", "--out", victim],
        "holds a fastseg run (run.json)",
    )
    _one_error(["diff", b / "may", b / "june", "--out", victim], "holds a fastseg run (run.json)")
    assert sorted(os.listdir(victim)) == before
    exp = _copy(b, "exp", "victim-export")
    _one_error(
        ["run", b / "shop" / "orders.parquet", "--out", exp],
        "holds a fastseg export (manifest.json)",
    )
    _one_error(
        ["diff", b / "may", b / "june", "--out", exp], "holds a fastseg export (manifest.json)"
    )
    # the same kind is replaced as before
    res = runner.invoke(app, ["export", str(b / "june"), "--segment", "active", "--out", str(exp)])
    assert res.exit_code == 0, res.output
    assert "active.csv" in os.listdir(exp) and "vip.csv" not in os.listdir(exp)


def test_damaged_archives_and_ids(two_runs: Path) -> None:
    b = two_runs
    t = _copy(b, "june", "truncated")
    data = (t / "membership.npz").read_bytes()
    (t / "membership.npz").write_bytes(data[:1000])
    _one_error(["diff", b / "may", t], "is not a fastseg-membership-1 file")
    _one_error(
        ["run", b / "shop" / "orders.parquet", "--previous", t, "--out", b / "never"],
        "is not a fastseg-membership-1 file",
    )
    assert not (b / "never").exists()
    d = _copy(b, "june", "dup")
    scores = pl.read_parquet(d / "scores.parquet")
    ids = scores["customer_id"].to_list()
    ids[5] = ids[4]
    scores.with_columns(customer_id=pl.Series(ids)).write_parquet(d / "scores.parquet")
    _one_error(["diff", b / "may", d], f"customer_id {ids[4]} is on more than one row")
    _one_error(["export", d, "--segment", "vip", "--out", b / "x"], "is on more than one row")
    n = _copy(b, "june", "null")
    scores.with_columns(scores["customer_id"].scatter(3, None)).write_parquet(n / "scores.parquet")
    _one_error(["diff", b / "may", n], "customer_id is empty on row 5")


def test_hand_edited_change_records(two_runs: Path) -> None:
    b = two_runs
    r = _copy(b, "june", "edited1")
    doc = json.loads((r / "run.json").read_text())
    doc["previous"] = "oops"
    (r / "run.json").write_text(json.dumps(doc))
    _one_error(["export", r, "--segment", "vip", "--changes", "--out", b / "x"], "changed by hand")
    r = _copy(b, "june", "edited2")
    pl.read_parquet(r / "changes.parquet").rename({"change": "kind"}).write_parquet(
        r / "changes.parquet"
    )
    _one_error(
        ["export", r, "--segment", "vip", "--changes", "--out", b / "x"], "no column 'change'"
    )
    r = _copy(b, "june", "edited3")
    pl.read_parquet(r / "changes.parquet").with_columns(change=pl.lit("moved")).write_parquet(
        r / "changes.parquet"
    )
    _one_error(
        ["export", r, "--segment", "vip", "--changes", "--out", b / "x"], "has change 'moved'"
    )
    r = _copy(b, "june", "edited4")
    (r / "changes.parquet").unlink()
    _one_error(
        ["export", r, "--segment", "vip", "--changes", "--out", b / "x"],
        "made with --previous but its changes.parquet is missing",
    )
    assert not (b / "x").exists()


def test_run_folder_with_glob_characters_in_its_name(two_runs: Path) -> None:
    r = _copy(two_runs, "june", "[red]run")
    ch = fastseg.diff(two_runs / "may", r)
    assert ch.changes.height > 0
    res = runner.invoke(
        app, ["export", str(r), "--segment", "vip", "--out", str(two_runs / "[x]exp")]
    )
    assert res.exit_code == 0, res.output
    assert "[red]run" in runner.invoke(app, ["diff", str(r), str(two_runs / "may")]).output


def test_two_canonical_columns_cannot_map_to_one(two_runs: Path) -> None:
    _one_error(
        [
            "run",
            two_runs / "shop" / "orders.parquet",
            "--customers",
            two_runs / "shop" / "customers.parquet",
            "--customers-col",
            "email=email",
            "--customers-col",
            "phone=email",
            "--out",
            two_runs / "y",
        ],
        "'email' and 'phone' both map to 'email'",
    )


def test_nested_identifier_values_are_invalid_not_a_crash(two_runs: Path) -> None:
    prof = pl.read_parquet(two_runs / "shop" / "customers.parquet").select(
        "customer_id", list_email=pl.concat_list(pl.col("email"))
    )
    prof.write_parquet(two_runs / "nested.parquet")
    res = fastseg.export(
        two_runs / "may",
        ["vip"],
        customers=two_runs / "nested.parquet",
        columns="list_email",
        out=two_runs / "nested-exp",
    )
    (f,) = res.files
    assert f.unusable["list_email"]["invalid"] == f.rows - f.unusable["list_email"]["missing"]
