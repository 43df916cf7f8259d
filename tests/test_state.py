"""Daily refresh from a saved state (``score_job``/``run_job`` with ``state=DIR``).

The documented semantics ("exact", fastseg/state.py): after applying inputs D1..Dk one run after
another to an initially empty state folder, the k-th run's outputs equal ONE run over all of them
concatenated in the order applied, with the same options: every scores column bit for bit, the
scoring date, the segment files, and the cumulative row report.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fastseg.api import run_job, score_job
from fastseg.cli import app
from fastseg.errors import DataError, FastsegError

END = dt.date(2025, 6, 30)
RULES = """
[[segment]]
name = "app60"
rule = "orders(since: -60d, channel: 'app') >= 1"

[[segment]]
name = "rev1y"
rule = "revenue(since: -1y) > 100"

[[segment]]
name = "dist90"
rule = "distinct(category, since: -90d) >= 2"

[[segment]]
name = "units30"
rule = "units(since: -30d) > 2"

[[segment]]
name = "web_all"
rule = "revenue(channel: 'web') > 50"

[[segment]]
name = "top_a"
rule = "top_category = 'a'"
"""


# ------------------------------------------------------------------------------ helpers


def history(
    seed: int,
    n_customers: int = 120,
    *,
    ids: str = "int",
    order_ids: bool = True,
    days: int = 540,
    end: dt.date = END,
) -> pl.DataFrame:
    """An order history (BG/NBD-like buyers, multi-line orders, refunds), in date order.

    ``ids``: "int" (small), "big" (13 digits), "text" (with surrounding spaces)."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, days, n_customers)
    rate = rng.gamma(1.0, 1 / 25.0, n_customers)
    drop = rng.beta(1.0, 5.0, n_customers)
    cust: list[int] = []
    back: list[int] = []
    for c in range(n_customers):
        t = float(start[c])
        while True:
            cust.append(c)
            back.append(int(t))
            t -= rng.exponential(1 / rate[c])
            if t < 0 or rng.random() < drop[c]:
                break
    n_orders = len(cust)
    order_no = np.arange(n_orders) + 1000
    n_lines = rng.integers(1, 4, n_orders)  # 1-3 lines an order
    c = np.repeat(np.array(cust), n_lines)
    b = np.repeat(np.array(back), n_lines)
    oid = np.repeat(order_no, n_lines)
    n = c.size
    amount = np.round(rng.gamma(2.0, 20.0, n), 2)
    amount[rng.random(n) < 0.04] *= -1  # refunds
    if ids == "int":
        cid: Any = (c + 1).tolist()
    elif ids == "big":
        cid = (c * 7919 + 10**12).tolist()
    else:
        pads = rng.integers(0, 3, n)
        cid = [" " * int(p) + f"C{x:05d}" + " " * int(2 - p) for x, p in zip(c, pads, strict=True)]
    frame = pl.DataFrame(
        {
            "customer_id": cid,
            "order_id": oid.tolist(),
            "order_ts": [end - dt.timedelta(days=int(d)) for d in b],
            "amount": amount.tolist(),
            "channel": rng.choice(["web", "app", "store"], n).tolist(),
            "category": rng.choice(["a", "b", "c", "d"], n).tolist(),
            "quantity": rng.integers(1, 4, n).tolist(),
        }
    ).sort("order_ts", maintain_order=True)
    if not order_ids:
        frame = frame.drop("order_id")
    return frame


def split(frame: pl.DataFrame, cuts: Sequence[int]) -> list[pl.DataFrame]:
    edges = [0, *sorted(set(cuts)), frame.height]
    return [frame[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def as_inputs(parts: Sequence[pl.DataFrame], fmt: str, folder: Path) -> list[Any]:
    """The parts as frames or as files (one a part)."""
    if fmt == "frame":
        return list(parts)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(parts):
        path = folder / f"day{i:03d}.{fmt}"
        if fmt == "parquet":
            p.write_parquet(path)
        else:
            p.write_csv(path)
        out.append(path)
    return out


def whole(inputs: Sequence[Any]) -> Any:
    """One input of every part, in order (a frame, or the list of files)."""
    if isinstance(inputs[0], pl.DataFrame):
        return pl.concat(list(inputs), how="vertical_relaxed")
    return [str(p) for p in inputs]


def apply_all(job: Callable[..., Any], inputs: Sequence[Any], state: Path, **kw: Any) -> Any:
    res = None
    for x in inputs:
        res = job(x, state=state, **kw)
    return res


def counts(report: Any) -> dict[str, Any]:
    return {
        "rows_read": report.rows_read,
        "rows_used": report.rows_used,
        "left_out": dict(report.left_out),
        "exact_duplicate_rows": report.duplicates,
    }


def state_counts(res: Any) -> dict[str, Any]:
    rows = res.state["rows"]
    return {k: rows[k] for k in ("rows_read", "rows_used", "left_out", "exact_duplicate_rows")}


def assert_scores_equal(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.columns == want.columns
    assert got.height == want.height
    bad = [c for c in want.columns if not got[c].equals(want[c])]
    assert not bad, f"columns differ from the one full run: {bad}"
    assert got.equals(want)


def assert_same(got: Any, want: Any) -> None:
    assert got.as_of == want.as_of
    assert_scores_equal(got.scores, want.scores)
    assert state_counts(got) == counts(want.orders)


def run_files(folder: Path) -> dict[str, Any]:
    """The tables of a run folder (not run.json: it records timings and options)."""
    out: dict[str, Any] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix == ".parquet":
            out[p.name] = pl.read_parquet(p)
        elif p.suffix == ".csv":
            out[p.name] = p.read_text()
    return out


def assert_runs_equal(got: Path, want: Path) -> None:
    a, b = run_files(got), run_files(want)
    assert sorted(a) == sorted(b)
    for name, v in b.items():
        if isinstance(v, pl.DataFrame):
            assert a[name].equals(v), name
        else:
            assert a[name] == v, name


def listed(folder: Path) -> set[str]:
    return _listed(json.loads((folder / "state.json").read_text()))


def _listed(m: dict[str, Any] | None) -> set[str]:
    """The files a manifest names (and the state before it, kept for a re-run of the last
    input: docs/refresh.md)."""
    if not isinstance(m, dict):  # None, or "empty": the state before the first input
        return set()
    files = m["files"]
    names = _listed(m.get("previous"))
    names |= {files["customers"], files["ids"], files["extra"]}
    names |= {r["name"] for r in files["recent"]}
    for k in ("orders", "nulls", "rows"):
        names |= set(files[k])
    return names


def assert_only_listed(folder: Path) -> None:
    extra = set(os.listdir(folder)) - listed(folder) - {"state.json", ".lock"}
    assert not extra, f"files no manifest names left in the state folder: {sorted(extra)}"


def one_line(msg: str) -> bool:
    return "\n" not in msg.strip() and "Traceback" not in msg


# ------------------------------------------------------------------- random splits (property)


@settings(max_examples=14, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cut_share=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=4),
    order=st.sampled_from(["sorted", "shuffled"]),
    ids=st.sampled_from(["int", "big", "text"]),
    fmt=st.sampled_from(["frame", "parquet", "csv"]),
)
def test_random_splits_equal_one_run(
    seed: int, cut_share: list[float], order: str, ids: str, fmt: str
) -> None:
    frame = history(seed, 60, ids=ids)
    if order == "shuffled":
        frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    cuts = [int(s * frame.height) for s in cut_share]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        inputs = as_inputs(split(frame, cuts), fmt, t / "in")
        got = apply_all(score_job, inputs, t / "state")
        want = score_job(whole(inputs))
        assert_same(got, want)
        assert got.state["inputs_applied"] == len(inputs)
        assert got.state["customers"] == want.scores.height
        assert_only_listed(t / "state")


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_parts=st.integers(2, 5),
    ages=st.lists(st.integers(0, 40), min_size=5, max_size=5),
)
def test_daily_parts_with_explicit_scoring_dates_equal_one_run(
    seed: int, n_parts: int, ages: list[int]
) -> None:
    """Days applied with an explicit as_of each (at or after their latest order)."""
    frame = history(seed, 60)
    day = frame["order_ts"]
    lo, hi = day.min(), day.max()
    assert isinstance(lo, dt.date) and isinstance(hi, dt.date)
    span = (hi - lo).days
    bounds = [lo + dt.timedelta(days=span * (i + 1) // n_parts) for i in range(n_parts)]
    parts, as_ofs, prev = [], [], None
    for i, b in enumerate(bounds):
        sel = day <= b if prev is None else (day > prev) & (day <= b)
        parts.append(frame.filter(sel))
        as_ofs.append(b + dt.timedelta(days=ages[i]) if i < n_parts - 1 else b)
        prev = b
    # an as_of never goes back: later ones are at least the earlier
    as_ofs = list(np.maximum.accumulate(np.array(as_ofs, dtype="datetime64[D]")).astype(object))
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        got = None
        for p, a in zip(parts, as_ofs, strict=True):
            if p.height == 0:
                got = score_job(None, state=t / "s", as_of=a)
            else:
                got = score_job(p, state=t / "s", as_of=a)
        want = score_job(pl.concat(parts), as_of=as_ofs[-1])
        assert_same(got, want)


# ------------------------------------------------------------------------- late arrivals


def test_late_arrivals_and_late_refunds(tmp_path: Path) -> None:
    frame = history(3, 80)
    cut = END - dt.timedelta(days=120)
    early = frame.filter(pl.col("order_ts") <= cut)
    later = frame.filter(pl.col("order_ts") > cut)
    # late: rows dated long before the first run's scoring date, arriving with the next part
    late = early.sample(n=40, seed=1)
    early = early.join(late, on=early.columns, how="anti")
    old = early.filter(pl.col("order_ts") < cut - dt.timedelta(days=200)).head(10)
    refunds = old.with_columns(
        (-pl.col("amount").abs()).alias("amount"),
        (pl.col("order_ts") + pl.duration(days=3)).alias("order_ts"),
        pl.lit(1, dtype=pl.Int64).alias("quantity"),
    )
    d2 = pl.concat([late, later.head(later.height // 2), refunds])
    d3 = later.tail(later.height - later.height // 2)
    r1 = score_job(early, state=tmp_path / "s")
    assert r1.as_of == early["order_ts"].max()
    r2 = score_job(d2, state=tmp_path / "s")
    assert_same(r2, score_job(pl.concat([early, d2])))
    r3 = score_job(d3, state=tmp_path / "s")
    assert_same(r3, score_job(pl.concat([early, d2, d3])))


def test_late_rows_within_the_windows_age_out_exactly(tmp_path: Path) -> None:
    """Rows dated inside the 30-day window of the state's scoring date, applied late, then aged."""
    frame = history(4, 80)
    d1 = frame.filter(pl.col("order_ts") <= END - dt.timedelta(days=20))
    d2 = frame.filter(pl.col("order_ts") > END - dt.timedelta(days=20))
    late = d1.filter(pl.col("order_ts") > END - dt.timedelta(days=50)).head(30)
    d1 = d1.join(late, on=d1.columns, how="anti")
    score_job(d1, state=tmp_path / "s")
    score_job(pl.concat([late, d2]), state=tmp_path / "s")
    for days in (10, 25, 70, 400):
        later = END + dt.timedelta(days=days)
        got = score_job(None, state=tmp_path / "s", as_of=later)
        assert_same(got, score_job(pl.concat([d1, late, d2]), as_of=later))


# ------------------------------------------------------------------------ lines of orders


def test_lines_of_one_order_over_two_parts_count_once(tmp_path: Path) -> None:
    d1 = pl.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "order_id": [10, 11, 20],
            "order_ts": [dt.date(2025, 1, 5), dt.date(2025, 1, 9), dt.date(2025, 1, 9)],
            "amount": [10.0, 5.0, 7.0],
        }
    )
    d2 = pl.DataFrame(
        {
            "customer_id": [1, 1, 2, 3],
            "order_id": [10, 12, 20, 10],  # 10 of 1 and 20 of 2: lines of earlier orders
            "order_ts": [dt.date(2025, 1, 5), dt.date(2025, 1, 20), dt.date(2025, 1, 9)]
            + [dt.date(2025, 1, 20)],
            "amount": [2.5, 4.0, 1.0, 3.0],
        }
    )
    score_job(d1, state=tmp_path / "s")
    got = score_job(d2, state=tmp_path / "s")
    want = score_job(pl.concat([d1, d2]))
    assert_same(got, want)
    freq = dict(zip(got.scores["customer_id"], got.scores["frequency"], strict=True))
    assert freq == {1: 3, 2: 1, 3: 1}
    money = dict(zip(got.scores["customer_id"], got.scores["monetary"], strict=True))
    assert money[1] == pytest.approx(21.5)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n_parts=st.integers(2, 4))
def test_lines_split_over_parts_property(seed: int, n_parts: int) -> None:
    """Each order's lines dealt out over random parts."""
    frame = history(seed, 50)
    rng = np.random.default_rng(seed)
    part = rng.integers(0, n_parts, frame.height)
    parts = [frame.filter(pl.Series(part == i)) for i in range(n_parts)]
    parts = [p for p in parts if p.height]
    with tempfile.TemporaryDirectory() as tmp:
        got = apply_all(score_job, parts, Path(tmp) / "s")
        assert_same(got, score_job(pl.concat(parts)))


# ------------------------------------------------------- no order ids, null ids, null values


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_dups=st.integers(1, 30),
    fmt=st.sampled_from(["frame", "parquet", "csv"]),
    ids=st.sampled_from(["int", "big", "text"]),
)
def test_without_order_ids_duplicates_across_inputs_are_counted(
    seed: int, n_dups: int, fmt: str, ids: str
) -> None:
    frame = history(seed, 50, order_ids=False, ids=ids)
    half = frame.height // 2
    d1, d2 = frame[:half], frame[half:]
    dups = d1.sample(n=min(n_dups, half), seed=seed)  # exact copies of earlier rows
    if ids == "text":  # and the same rows with the ids padded otherwise (trimmed: equal ids)
        dups = pl.concat([dups, dups.head(2).with_columns(pl.col("customer_id") + " ")])
    d2 = pl.concat([d2, dups, d2.head(3)])  # and within the input too
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        inputs = as_inputs([d1, d2], fmt, t / "in")
        got = apply_all(score_job, inputs, t / "s")
        want = score_job(whole(inputs))
        assert want.orders.duplicates >= min(n_dups, half)
        assert_same(got, want)
        assert got.state["rows"]["exact_duplicate_rows"] == want.orders.duplicates
        assert not got.state["order_lines"]


def test_null_order_ids(tmp_path: Path) -> None:
    frame = history(5, 60)
    rng = np.random.default_rng(5)
    nulls = pl.Series(rng.random(frame.height) < 0.2)
    frame = frame.with_columns(
        pl.when(nulls).then(None).otherwise(pl.col("order_id")).alias("order_id")
    )
    parts = split(frame, [frame.height // 3, 2 * frame.height // 3])
    got = apply_all(score_job, parts, tmp_path / "s")
    assert_same(got, score_job(pl.concat(parts)))


def test_null_customer_ids_and_amounts_are_left_out_by_reason(tmp_path: Path) -> None:
    frame = history(6, 60)
    rng = np.random.default_rng(6)
    r = rng.random(frame.height)
    frame = frame.with_columns(
        pl.when(pl.Series(r < 0.05))
        .then(None)
        .otherwise(pl.col("customer_id"))
        .alias("customer_id"),
        pl.when(pl.Series((r > 0.5) & (r < 0.55)))
        .then(None)
        .otherwise(pl.col("amount"))
        .alias("amount"),
    )
    parts = split(frame, [frame.height // 2])
    got = apply_all(score_job, parts, tmp_path / "s")
    want = score_job(pl.concat(parts))
    assert want.orders.left_out["missing_customer_id"] > 0
    assert want.orders.left_out["missing_amount"] > 0
    assert_same(got, want)
    assert got.state["rows"]["rows_left_out"] == want.orders.rows_left_out


def test_text_ids_trimmed_across_inputs(tmp_path: Path) -> None:
    d1 = pl.DataFrame(
        {
            "customer_id": ["A1", " B2"],
            "order_id": [1, 2],
            "order_ts": [dt.date(2025, 1, 1)] * 2,
            "amount": [5.0, 6.0],
        }
    )
    d2 = pl.DataFrame(
        {
            "customer_id": ["A1  ", "B2", " C3 "],
            "order_id": [3, 2, 4],
            "order_ts": [dt.date(2025, 1, 3)] * 3,
            "amount": [1.0, 2.0, 3.0],
        }
    )
    score_job(d1, state=tmp_path / "s")
    got = score_job(d2, state=tmp_path / "s")
    assert_same(got, score_job(pl.concat([d1, d2])))
    assert sorted(got.scores["customer_id"]) == ["A1", "B2", "C3"]
    freq = dict(zip(got.scores["customer_id"], got.scores["frequency"], strict=True))
    assert freq == {"A1": 2, "B2": 1, "C3": 1}


# ------------------------------------------------------------------------- inputs applied


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_file_applied_before_is_refused(tmp_path: Path, fmt: str) -> None:
    """An input applied before (not the last one) is refused, by content, and nothing changes."""
    frame = history(7, 40)
    d1, d2 = split(frame, [frame.height // 2])
    f1, f2 = as_inputs([d1, d2], fmt, tmp_path / "in")
    state = tmp_path / "s"
    score_job(f1, state=state)
    score_job(f2, state=state)
    before = (state / "state.json").read_bytes()
    names = set(os.listdir(state))
    with pytest.raises(DataError, match="applied .*already") as exc:
        score_job(f1, state=state)
    assert one_line(str(exc.value))
    copy = tmp_path / "in" / f"copy.{fmt}"
    shutil.copyfile(f1, copy)
    with pytest.raises(DataError, match="applied .*already"):
        score_job(copy, state=state)
    with pytest.raises(DataError, match="applied .*already"):  # among new files too
        score_job([str(copy), str(f2)], state=state)
    assert (state / "state.json").read_bytes() == before
    assert set(os.listdir(state)) == names
    # and the state still works, exactly
    d3 = history(8, 40).with_columns(pl.col("order_ts") + pl.duration(days=400))
    got = score_job(d3, state=state)
    assert_same(got, score_job(pl.concat([d1, d2, d3])))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_the_last_file_applied_again(tmp_path: Path, fmt: str) -> None:
    """docs/refresh.md: the last input given again is a re-run from the state before it (the
    same outputs, nothing counted twice)."""
    frame = history(7, 40)
    d1, d2, d3 = split(frame, [frame.height // 2, 3 * frame.height // 4])
    f1, f2, f3 = as_inputs([d1, d2, d3], fmt, tmp_path / "in")
    state = tmp_path / "s"
    score_job(f1, state=state)
    first = score_job(f2, state=state)
    want = score_job([str(f1), str(f2)])
    before = (state / "state.json").read_bytes()
    assert before
    for _ in range(2):
        again = score_job(f2, state=state)
        assert_same(again, want)
        assert again.state["inputs_applied"] == first.state["inputs_applied"] == 2
        assert again.state["reapplied"]
        assert_only_listed(state)
    copy = tmp_path / "in" / f"copy2.{fmt}"
    shutil.copyfile(f2, copy)  # the last one under another name: a re-run too (by content)
    assert_same(score_job(copy, state=state), want)
    got = score_job(f3, state=state)
    assert_same(got, score_job([str(f1), str(f2), str(f3)]))
    with pytest.raises(DataError, match="already"):  # no longer the last
        score_job(f2, state=state)


def test_the_last_file_again_after_an_aging_run(tmp_path: Path) -> None:
    """The scoring date never goes back: after a run that aged the state to a later date, the
    last input is refused (a re-run from the state before it would undo the later date)."""
    frame = history(32, 40)
    d1, d2 = split(frame, [frame.height // 2])
    state = tmp_path / "s"
    score_job(d1, state=state)
    score_job(d2, state=state)
    later = END + dt.timedelta(days=30)
    score_job(None, state=state, as_of=later)
    before = (state / "state.json").read_bytes()
    with pytest.raises(DataError, match="already") as exc:
        score_job(d2, state=state)
    assert one_line(str(exc.value)) and "later scoring date" in str(exc.value)
    assert (state / "state.json").read_bytes() == before
    got = score_job(None, state=state, as_of=later + dt.timedelta(days=1))
    assert_same(got, score_job(frame, as_of=later + dt.timedelta(days=1)))


def test_the_same_frame_applied_twice_is_refused(tmp_path: Path) -> None:
    frame = history(9, 40)
    score_job(frame, state=tmp_path / "s")
    score_job(history(10, 20, end=END + dt.timedelta(days=5), days=5), state=tmp_path / "s")
    before = (tmp_path / "s" / "state.json").read_bytes()
    with pytest.raises(DataError, match="already"):  # not the last one applied
        score_job(frame.clone(), state=tmp_path / "s")
    assert (tmp_path / "s" / "state.json").read_bytes() == before


# -------------------------------------------------------------------------- scoring dates


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.lists(st.integers(0, 200), min_size=1, max_size=3))
def test_new_scoring_date_without_orders_ages_exactly(seed: int, steps: list[int]) -> None:
    frame = history(seed, 60)
    with tempfile.TemporaryDirectory() as tmp:
        s = Path(tmp) / "s"
        score_job(frame, state=s)
        day = END
        for k in steps:
            day = day + dt.timedelta(days=k)
            got = score_job(None, state=s, as_of=day)
            want = score_job(frame, as_of=day)
            assert_same(got, want)
        # and new orders after the aging runs
        new = history(seed + 1, 30, end=day + dt.timedelta(days=15), days=10)
        got = score_job(new, state=s)
        assert_same(got, score_job(pl.concat([frame, new])))


def test_explicit_as_of_before_the_state_date_says_rebuild(tmp_path: Path) -> None:
    frame = history(10, 40)
    made = score_job(frame, state=tmp_path / "s").as_of
    before = (tmp_path / "s" / "state.json").read_bytes()
    with pytest.raises(DataError, match="rebuild") as exc:
        score_job(None, state=tmp_path / "s", as_of=made - dt.timedelta(days=1))
    assert one_line(str(exc.value))
    new = history(11, 10, end=made - dt.timedelta(days=10), days=5)
    with pytest.raises(DataError, match="rebuild"):
        score_job(new, state=tmp_path / "s", as_of=made - dt.timedelta(days=3))
    assert (tmp_path / "s" / "state.json").read_bytes() == before


def test_rows_after_an_explicit_as_of_are_refused(tmp_path: Path) -> None:
    frame = history(12, 40)
    s = tmp_path / "s"
    # the first run too: a state cannot hold rows dated after its scoring date
    with pytest.raises(DataError) as exc:
        score_job(frame, state=s, as_of=END - dt.timedelta(days=30))
    assert one_line(str(exc.value))
    assert not (s / "state.json").exists()
    score_job(frame, state=s)
    before = (s / "state.json").read_bytes()
    new = history(13, 10, end=END + dt.timedelta(days=20), days=15)
    with pytest.raises(DataError) as exc:
        score_job(new, state=s, as_of=END + dt.timedelta(days=5))
    assert one_line(str(exc.value))
    assert (s / "state.json").read_bytes() == before
    got = score_job(new, state=s)  # without as_of: fine
    assert_same(got, score_job(pl.concat([frame, new])))


# ------------------------------------------------------------------------------- rules


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    p = tmp_path / "rules.toml"
    p.write_text(RULES)
    return p


@pytest.mark.parametrize("ids", ["int", "text"])
def test_rules_equal_the_full_run_as_days_pass(tmp_path: Path, rules_file: Path, ids: str) -> None:
    frame = history(14, 100, ids=ids)
    cuts = [frame.height // 2, 3 * frame.height // 4, 7 * frame.height // 8]
    parts = split(frame, cuts)
    s = tmp_path / "s"
    for i, p in enumerate(parts):
        got = run_job(p, rules=rules_file, state=s, out=tmp_path / f"day{i}")
        want = run_job(pl.concat(parts[: i + 1]), rules=rules_file, out=tmp_path / f"full{i}")
        assert_same(got, want)
        assert_runs_equal(tmp_path / f"day{i}", tmp_path / f"full{i}")
    for k, days in enumerate((5, 45, 100, 380)):
        later = END + dt.timedelta(days=days)
        got = run_job(None, rules=rules_file, state=s, as_of=later, out=tmp_path / f"age{k}")
        run_job(frame, rules=rules_file, as_of=later, out=tmp_path / f"fullage{k}")
        assert_runs_equal(tmp_path / f"age{k}", tmp_path / f"fullage{k}")
        assert got.segments is not None
    assert_only_listed(s)


def test_rules_in_memory_segments_equal(tmp_path: Path, rules_file: Path) -> None:
    frame = history(15, 80).sample(fraction=1.0, shuffle=True, seed=2)
    parts = split(frame, [frame.height // 3, frame.height // 2])
    got = apply_all(run_job, parts, tmp_path / "s", rules=rules_file)
    want = run_job(frame, rules=rules_file)
    assert_same(got, want)
    g, w = got.segments, want.segments
    assert g.names == w.names
    assert g.customer_ids.equals(w.customer_ids)
    assert np.array_equal(g.sizes, w.sizes)
    assert np.array_equal(g.bitsets, w.bitsets)
    assert w.sizes.sum() > 0


def write_rule(path: Path, rule: str) -> Path:
    path.write_text(f'[[segment]]\nname = "x"\nrule = "{rule}"\n')
    return path


@pytest.mark.parametrize(
    "rule", ["revenue(channel: 'web') > 50", "top_category = 'a'", "orders(channel: 'app') >= 1"]
)
def test_a_later_all_history_rule_says_rebuild(tmp_path: Path, rule: str) -> None:
    frame = history(16, 40)
    d1, d2 = split(frame, [frame.height // 2])
    s = tmp_path / "s"
    run_job(d1, state=s, builtin=True)
    before = (s / "state.json").read_bytes()
    with pytest.raises(DataError, match="rebuild") as exc:
        run_job(d2, rules=write_rule(tmp_path / "r.toml", rule), state=s)
    assert one_line(str(exc.value))
    assert (s / "state.json").read_bytes() == before
    got = run_job(d2, state=s)  # without the rule: the input can still be applied
    assert_same(got, run_job(frame))


def test_a_longer_rule_window_than_kept_says_rebuild(tmp_path: Path) -> None:
    frame = history(17, 40)
    d1, d2 = split(frame, [frame.height // 2])
    rule = write_rule(tmp_path / "r.toml", "orders(since: -400d) > 0")
    s = tmp_path / "s"
    score_job(d1, state=s, windows=(30, 90))
    with pytest.raises(DataError, match="rebuild|keep-days") as exc:
        run_job(d2, rules=rule, state=s, windows=(30, 90))
    assert one_line(str(exc.value))
    with pytest.raises(DataError, match="rebuild|keep-days"):
        run_job(None, rules=rule, state=s, windows=(30, 90), as_of=END + dt.timedelta(days=1))
    # kept long enough from the start: it works, exactly
    s2 = tmp_path / "s2"
    score_job(d1, state=s2, windows=(30, 90), keep_days=400)
    got = run_job(d2, rules=rule, state=s2, windows=(30, 90), out=tmp_path / "o")
    want = run_job(frame, rules=rule, windows=(30, 90), out=tmp_path / "full")
    assert_same(got, want)
    assert_runs_equal(tmp_path / "o", tmp_path / "full")
    later = END + dt.timedelta(days=50)
    run_job(None, rules=rule, state=s2, windows=(30, 90), as_of=later, out=tmp_path / "o2")
    run_job(frame, rules=rule, windows=(30, 90), as_of=later, out=tmp_path / "full2")
    assert_runs_equal(tmp_path / "o2", tmp_path / "full2")


def test_keep_days_is_checked(tmp_path: Path) -> None:
    frame = history(18, 20)
    for bad in (-1, 1.5, True, 10**6):
        with pytest.raises(FastsegError):
            score_job(frame, state=tmp_path / f"s{bad}", keep_days=bad)


# ------------------------------------------------------------------------------- predict


def test_predict_equals_the_full_run(tmp_path: Path) -> None:
    frame = history(19, 600, days=600)
    parts = split(frame, [frame.height // 2, 4 * frame.height // 5])
    s = tmp_path / "s"
    got = apply_all(run_job, parts, s, predict=True)
    want = run_job(frame, predict=True)
    assert_same(got, want)
    btyd = [c for c in want.scores.columns if c.startswith("btyd_")]
    assert btyd
    assert got.prediction is not None
    a, b = got.prediction.frame, want.prediction.frame
    assert a.columns == b.columns
    assert a.equals(b)


def test_predict_on_a_state_without_purchase_days_says_rebuild(tmp_path: Path) -> None:
    frame = history(20, 300, days=600)
    d1, d2 = split(frame, [frame.height // 2])
    run_job(d1, state=tmp_path / "s")
    with pytest.raises(DataError, match="rebuild") as exc:
        run_job(d2, state=tmp_path / "s", predict=True)
    assert one_line(str(exc.value))


# ---------------------------------------------------------------------------- atomicity


def _failing_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastseg import outputs

    def boom(self: Any, *a: Any, **k: Any) -> None:
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(outputs.OutputSet, "commit", boom)


@pytest.mark.parametrize("job", ["score", "run"])
def test_a_failed_run_leaves_the_state_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: str
) -> None:
    fn = score_job if job == "score" else run_job
    frame = history(21, 60)
    d1, d2, d3 = split(frame, [frame.height // 3, 2 * frame.height // 3])
    s = tmp_path / "s"
    fn(d1, state=s)
    before = (s / "state.json").read_bytes()
    with monkeypatch.context() as m:
        _failing_commit(m)
        with pytest.raises(RuntimeError):
            fn(d2, state=s, out=tmp_path / "o")
    assert (s / "state.json").read_bytes() == before
    got = fn(d2, state=s)  # applied again: not "applied already"
    assert_same(got, fn(pl.concat([d1, d2])))
    assert_only_listed(s)
    got = fn(d3, state=s)
    assert_same(got, fn(frame))
    assert_only_listed(s)


def test_a_failed_first_run_leaves_a_usable_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = history(22, 60)
    s = tmp_path / "s"
    with monkeypatch.context() as m:
        _failing_commit(m)
        with pytest.raises(RuntimeError):
            score_job(frame, state=s)
    assert not (s / "state.json").exists()
    got = score_job(frame, state=s)
    assert_same(got, score_job(frame))
    assert_only_listed(s)


def test_a_run_failing_late_in_run_job_leaves_the_state_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rules_file: Path
) -> None:
    """The segments fail after the state files are written."""
    import fastseg.segmenting as seg

    frame = history(23, 60)
    d1, d2 = split(frame, [frame.height // 2])
    s = tmp_path / "s"
    run_job(d1, rules=rules_file, state=s)
    before = (s / "state.json").read_bytes()

    def boom(*a: Any, **k: Any) -> None:
        raise DataError("segments failed")

    with monkeypatch.context() as m:
        m.setattr(seg, "evaluate", boom)
        with pytest.raises(DataError, match="segments failed"):
            run_job(d2, rules=rules_file, state=s)
    assert (s / "state.json").read_bytes() == before
    got = run_job(d2, rules=rules_file, state=s, out=tmp_path / "o")
    run_job(frame, rules=rules_file, out=tmp_path / "full")
    assert_runs_equal(tmp_path / "o", tmp_path / "full")
    assert_same(got, run_job(frame, rules=rules_file))
    assert_only_listed(s)


def test_many_runs_leave_only_listed_files(tmp_path: Path) -> None:
    frame = history(24, 80)
    parts = split(frame, [int(frame.height * f) for f in np.linspace(0.1, 0.95, 12)])
    s = tmp_path / "s"
    for p in parts:
        score_job(p, state=s)
        assert_only_listed(s)
    got = score_job(None, state=s, as_of=END + dt.timedelta(days=500))
    assert_same(got, score_job(frame, as_of=END + dt.timedelta(days=500)))
    assert_only_listed(s)


def test_no_order_ids_many_runs_leave_only_listed_files(tmp_path: Path) -> None:
    frame = history(25, 60, order_ids=False)
    parts = split(frame, [int(frame.height * f) for f in np.linspace(0.1, 0.9, 10)])
    s = tmp_path / "s"
    for p in parts:
        got = score_job(p, state=s)
        assert_only_listed(s)
    assert_same(got, score_job(frame))


# ------------------------------------------------------------------------- the folder


def test_state_folder_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(FastsegError) as exc:
        score_job(history(26, 10), state=f)
    assert one_line(str(exc.value))
    assert f.read_text() == "x"


def test_non_empty_folder_that_is_not_a_state(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(FastsegError) as exc:
        score_job(history(27, 10), state=d)
    assert one_line(str(exc.value))
    assert "not a fastseg state" in str(exc.value)
    assert sorted(os.listdir(d)) == ["notes.txt"]  # nothing written into it


@pytest.mark.parametrize(
    "name",
    [
        "orders-summary.csv",
        "customers-2024.csv",
        "rows-old.npy",
        "ids-list.txt",
        "recent-notes.txt",
        "extra-data.csv",
        "pairs-matched.csv",
        "keys-backup.txt",
    ],
)
def test_user_files_that_look_like_state_files_are_not_taken(tmp_path: Path, name: str) -> None:
    """A folder of the user's files with names like a state's: not a state, nothing deleted."""
    d = tmp_path / "d"
    d.mkdir()
    (d / name).write_text("the user's file")
    try:
        score_job(history(28, 10), state=d)
    except FastsegError as exc:
        assert one_line(str(exc))
    assert (d / name).read_text() == "the user's file"


def _lock_is_free(folder: Path) -> bool:
    import fcntl

    with open(folder / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def _lock_leaks(call: Callable[[], Any], folder: Path) -> tuple[str, bool, list[str]]:
    """Run a call that must fail with a FastsegError: its message, whether the folder's lock
    was free right after it (the error still alive, as in a notebook keeping the last
    exception), and the ResourceWarnings of files left open once it is gone."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            call()
        except FastsegError as exc:
            msg = str(exc)
            free = _lock_is_free(folder)
        else:
            raise AssertionError("no error")
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    return msg, free, leaks


@pytest.mark.parametrize("content", ["{not json", '{"format": 99}', "[]"])
def test_unreadable_manifest_is_one_line_and_unlocks(tmp_path: Path, content: str) -> None:
    s = tmp_path / "s"
    score_job(history(29, 20), state=s)
    (s / "state.json").write_text(content)
    msg, free, leaks = _lock_leaks(
        lambda: score_job(None, state=s, as_of=END + dt.timedelta(days=3)), s
    )
    assert one_line(msg)
    assert "rebuild" in msg
    assert free, "the .lock stays locked after the manifest could not be read"
    assert not leaks, leaks


def test_a_locked_state_is_refused(tmp_path: Path) -> None:
    import fcntl

    s = tmp_path / "s"
    frame = history(33, 20)
    d1, d2 = split(frame, [frame.height // 2])
    score_job(d1, state=s)
    with open(s / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        msg, _free, leaks = _lock_leaks(lambda: score_job(d2, state=s), s)
        assert "another" in msg and one_line(msg)
    assert not leaks, f"the refused run left its lock file open: {leaks}"
    got = score_job(d2, state=s)
    assert_same(got, score_job(frame))


# -------------------------------------------------------------------------------- CLI


def test_cli_state_info_and_score(tmp_path: Path) -> None:
    runner = CliRunner()
    frame = history(30, 60)
    d1, d2 = split(frame, [frame.height // 2])
    f1, f2 = as_inputs([d1, d2], "parquet", tmp_path / "in")
    s = tmp_path / "s"
    r = runner.invoke(
        app, ["score", str(f1), "--state", str(s), "--out", str(tmp_path / "a.parquet")]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["score", str(f2), "--state", str(s), "--out", str(tmp_path / "b.parquet")]
    )
    assert r.exit_code == 0, r.output
    want = score_job([str(f1), str(f2)])
    assert_scores_equal(pl.read_parquet(tmp_path / "b.parquet"), want.scores)
    # an earlier input applied again: refused, one line, no traceback
    r = runner.invoke(
        app, ["score", str(f1), "--state", str(s), "--out", str(tmp_path / "c.parquet")]
    )
    assert r.exit_code != 0
    assert "already" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "c.parquet").exists()

    r = runner.invoke(app, ["state", "info", str(s)])
    assert r.exit_code == 0, r.output
    assert str(want.as_of) in r.output
    assert f"{want.scores.height:,}" in r.output
    assert "inputs applied" in r.output
    r = runner.invoke(app, ["state", "info", str(s), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["as_of"] == str(want.as_of)
    assert info["customers"] == want.scores.height
    assert info["inputs_applied"] == 2
    assert info["rows"]["rows_read"] == frame.height
    # a new scoring date without orders, from the CLI
    later = END + dt.timedelta(days=40)
    r = runner.invoke(
        app,
        ["score", "--state", str(s), "--as-of", str(later), "--out", str(tmp_path / "d.parquet")],
    )
    assert r.exit_code == 0, r.output
    assert_scores_equal(
        pl.read_parquet(tmp_path / "d.parquet"), score_job(frame, as_of=later).scores
    )


@pytest.mark.parametrize("kind", ["missing", "empty", "foreign", "file"])
def test_cli_state_info_on_a_non_state(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "x"
    if kind == "empty":
        p.mkdir()
    elif kind == "foreign":
        p.mkdir()
        (p / "a.txt").write_text("a")
    elif kind == "file":
        p.write_text("a")
    r = CliRunner().invoke(app, ["state", "info", str(p)])
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    r = CliRunner().invoke(app, ["state", "info", str(p), "--json"])
    assert r.exit_code != 0
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_cli_score_with_state_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    frame = history(31, 10)
    (orders := tmp_path / "o.parquet").write_bytes(b"")
    frame.write_parquet(orders)
    r = CliRunner().invoke(
        app, ["score", str(orders), "--state", str(f), "--out", str(tmp_path / "s.parquet")]
    )
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


# ------------------------------------------------------------- options that change later


def test_shorter_windows_later_equal_the_full_run(tmp_path: Path) -> None:
    frame = history(34, 60)
    d1, d2 = split(frame, [frame.height // 2])
    s = tmp_path / "s"
    score_job(d1, state=s)
    got = score_job(d2, state=s, windows=(30, 90))
    assert_same(got, score_job(frame, windows=(30, 90)))


def test_a_longer_window_later_says_rebuild(tmp_path: Path) -> None:
    frame = history(35, 60)
    d1, d2 = split(frame, [frame.height // 2])
    s = tmp_path / "s"
    score_job(d1, state=s)
    before = (s / "state.json").read_bytes()
    with pytest.raises(DataError, match="rebuild") as exc:
        score_job(d2, state=s, windows=(30, 90, 500))
    assert one_line(str(exc.value))
    assert (s / "state.json").read_bytes() == before


@pytest.mark.parametrize("first_with_ids", [True, False])
def test_order_ids_appearing_or_vanishing_says_rebuild(
    tmp_path: Path, first_with_ids: bool
) -> None:
    frame = history(36, 60)
    d1, d2 = split(frame, [frame.height // 2])
    if first_with_ids:
        d2 = d2.drop("order_id")
    else:
        d1 = d1.drop("order_id")
    s = tmp_path / "s"
    score_job(d1, state=s)
    with pytest.raises(DataError, match="rebuild") as exc:
        score_job(d2, state=s)
    assert one_line(str(exc.value))


def test_rows_with_no_usable_row_then_more(tmp_path: Path) -> None:
    """An input whose rows are all left out changes no customer; the counts still add up."""
    frame = history(37, 40)
    d1, d2 = split(frame, [frame.height // 2])
    bad = d2.head(5).with_columns(pl.lit(None, dtype=pl.Float64).alias("amount"))
    s = tmp_path / "s"
    score_job(d1, state=s)
    got = score_job(bad, state=s)
    assert_same(got, score_job(pl.concat([d1, bad])))
    got = score_job(d2, state=s)
    assert_same(got, score_job(pl.concat([d1, bad, d2])))


def test_cli_keep_days_needs_state(tmp_path: Path) -> None:
    f = tmp_path / "o.parquet"
    history(38, 10).write_parquet(f)
    r = CliRunner().invoke(
        app, ["score", str(f), "--keep-days", "400", "--out", str(tmp_path / "x.parquet")]
    )
    assert r.exit_code != 0
    assert "Traceback" not in r.output


# ------------------------------------------------------------- more rules, more options


def test_a_year_window_across_a_leap_day(tmp_path: Path) -> None:
    """``since: -1y`` is 365 days at a scoring date of 2023-06-30 and 366 at 2024-06-30: the
    state keeps what a year needs (docs/refresh.md: a year counted as 366 days)."""
    built = dt.date(2023, 6, 30)
    frame = history(40, 60, end=built, days=500)
    rule = write_rule(tmp_path / "r.toml", "revenue(since: -1y) > 100")
    s = tmp_path / "s"
    run_job(frame, rules=rule, state=s)
    for k, later in enumerate((dt.date(2024, 3, 1), dt.date(2024, 6, 30))):
        got = run_job(None, rules=rule, state=s, as_of=later, out=tmp_path / f"o{k}")
        want = run_job(frame, rules=rule, as_of=later, out=tmp_path / f"f{k}")
        assert_same(got, want)
        assert_runs_equal(tmp_path / f"o{k}", tmp_path / f"f{k}")


def test_a_months_window_of_varying_length(tmp_path: Path) -> None:
    """``since: -3m`` is 89 to 92 days depending on the scoring date."""
    built = dt.date(2025, 4, 30)  # -3m: 2025-01-30, 90 days
    frame = history(41, 60, end=built, days=300)
    rule = write_rule(tmp_path / "r.toml", "orders(since: -3m) >= 1")
    s = tmp_path / "s"
    run_job(frame, rules=rule, state=s, windows=(30,))
    for k, later in enumerate((dt.date(2025, 5, 31), dt.date(2025, 7, 31))):  # 92 days
        got = run_job(None, rules=rule, state=s, as_of=later, windows=(30,), out=tmp_path / f"o{k}")
        want = run_job(frame, rules=rule, as_of=later, windows=(30,), out=tmp_path / f"f{k}")
        assert_same(got, want)
        assert_runs_equal(tmp_path / f"o{k}", tmp_path / f"f{k}")


def test_a_day_without_rules_keeps_what_the_rules_need(tmp_path: Path, rules_file: Path) -> None:
    """A ``score`` day (no rules) between ``run --rules`` days: the state keeps carrying the
    rule aggregates, top_category and the rule columns of its recent rows (as it keeps the
    purchase days), so the next rules day is still exact."""
    frame = history(42, 80)
    d1, d2, d3 = split(frame, [frame.height // 2, 3 * frame.height // 4])
    s = tmp_path / "s"
    run_job(d1, rules=rules_file, state=s)
    score_job(d2, state=s)
    got = run_job(d3, rules=rules_file, state=s, out=tmp_path / "o")
    want = run_job(frame, rules=rules_file, out=tmp_path / "full")
    assert_same(got, want)
    assert_runs_equal(tmp_path / "o", tmp_path / "full")


@pytest.mark.parametrize(
    "rule",
    [
        "revenue(channel: 'web') > 50",  # carried over all history
        "orders(since: -60d, channel: 'app') >= 1",  # channel kept in the recent rows
        "top_category = 'a'",
    ],
)
def test_a_day_without_rules_keeps_each_rule_need(tmp_path: Path, rule: str) -> None:
    frame = history(42, 80)
    d1, d2, d3 = split(frame, [frame.height // 2, 3 * frame.height // 4])
    r = write_rule(tmp_path / "r.toml", rule)
    s = tmp_path / "s"
    run_job(d1, rules=r, state=s)
    score_job(d2, state=s)
    got = run_job(d3, rules=r, state=s, out=tmp_path / "o")
    want = run_job(frame, rules=r, out=tmp_path / "full")
    assert_same(got, want)
    assert_runs_equal(tmp_path / "o", tmp_path / "full")


def test_predict_state_used_without_predict_then_with(tmp_path: Path) -> None:
    frame = history(43, 500, days=600)
    d1, d2, d3 = split(frame, [frame.height // 2, 3 * frame.height // 4])
    s = tmp_path / "s"
    run_job(d1, state=s, predict=True)
    run_job(d2, state=s)
    got = run_job(d3, state=s, predict=True)
    want = run_job(frame, predict=True)
    assert_same(got, want)
    assert got.prediction.frame.equals(want.prediction.frame)


def test_fixed_date_range_rules_carried(tmp_path: Path) -> None:
    rule = write_rule(
        tmp_path / "r.toml",
        "orders(since: 2025-01-01, until: 2025-03-31, channel: 'web') >= 1 AND "
        "revenue(since: 2024-07-01) > 30",
    )
    frame = history(44, 80).sample(fraction=1.0, shuffle=True, seed=4)  # late rows in every part
    parts = split(frame, [frame.height // 3, 2 * frame.height // 3])
    s = tmp_path / "s"
    for i, p in enumerate(parts):
        run_job(p, rules=rule, state=s, out=tmp_path / f"o{i}")
    run_job(frame, rules=rule, out=tmp_path / "full")
    assert_runs_equal(tmp_path / "o2", tmp_path / "full")


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cut_share=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3),
    shuffled=st.booleans(),
    ids=st.sampled_from(["int", "text"]),
    age=st.integers(0, 120),
)
def test_rules_random_splits(
    seed: int, cut_share: list[float], shuffled: bool, ids: str, age: int
) -> None:
    frame = history(seed, 50, ids=ids)
    if shuffled:
        frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    parts = split(frame, [int(x * frame.height) for x in cut_share])
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "r.toml").write_text(RULES)
        for i, p in enumerate(parts):
            got = run_job(p, rules=t / "r.toml", state=t / "s", out=t / f"o{i}")
        want = run_job(frame, rules=t / "r.toml", out=t / "full")
        assert_same(got, want)
        assert_runs_equal(t / f"o{len(parts) - 1}", t / "full")
        later = want.as_of + dt.timedelta(days=age)
        run_job(None, rules=t / "r.toml", state=t / "s", as_of=later, out=t / "aged")
        run_job(frame, rules=t / "r.toml", as_of=later, out=t / "fullaged")
        assert_runs_equal(t / "aged", t / "fullaged")


def test_fixed_edges_given_once(tmp_path: Path) -> None:
    frame = history(45, 80)
    d1, d2 = split(frame, [frame.height // 2])
    edges = tmp_path / "edges.json"
    score_job(d1, edges_out=edges)
    s = tmp_path / "s"
    score_job(d1, state=s, edges_in=edges)
    got = score_job(d2, state=s)  # the state scores with the fixed edges
    assert_same(got, score_job(frame, edges_in=edges))
    assert got.state["edges"] == "fixed"
    with pytest.raises(FastsegError) as exc:
        score_job(None, state=s, as_of=END + dt.timedelta(days=3), bins=4)
    assert one_line(str(exc.value))


def test_profiles_joined_each_run(tmp_path: Path) -> None:
    frame = history(46, 60)
    ids = frame["customer_id"].unique().sort()
    profiles = pl.DataFrame(
        {"customer_id": ids, "region": [("n", "s")[i % 2] for i in range(ids.len())]}
    )
    d1, d2 = split(frame, [frame.height // 2])
    s = tmp_path / "s"
    score_job(d1, state=s, customers=profiles)
    got = score_job(d2, state=s, customers=profiles)
    assert_same(got, score_job(frame, customers=profiles))


def test_an_empty_input_changes_nothing(tmp_path: Path) -> None:
    frame = history(47, 40)
    d1, d2 = split(frame, [frame.height // 2])
    s = tmp_path / "s"
    score_job(d1, state=s)
    got = score_job(d2.head(0), state=s)
    assert_same(got, score_job(d1))
    got = score_job(d2, state=s)
    assert_same(got, score_job(frame))


def test_datetime_timestamps(tmp_path: Path) -> None:
    frame = history(48, 60)
    rng = np.random.default_rng(48)
    secs = pl.Series(rng.integers(0, 86_400, frame.height))
    frame = frame.with_columns(
        (pl.col("order_ts").cast(pl.Datetime("us")) + pl.duration(seconds=secs)).alias("order_ts")
    ).sample(fraction=1.0, shuffle=True, seed=1)
    parts = split(frame, [frame.height // 3, 2 * frame.height // 3])
    got = apply_all(score_job, parts, tmp_path / "s")
    assert_same(got, score_job(frame))


def test_the_only_input_applied_again(tmp_path: Path) -> None:
    """The first input is also "the last applied": given again it is a re-run from the empty
    state (docs/refresh.md: a retried first build), never counted twice."""
    frame = history(49, 40)
    s = tmp_path / "s"
    first = score_job(frame, state=s)
    again = score_job(frame, state=s)
    assert_same(again, first)
    assert again.state["inputs_applied"] == 1 and again.state["reapplied"]
    assert_only_listed(s)


def test_left_out_rows_dated_later_do_not_move_the_scoring_date(tmp_path: Path) -> None:
    """The latest rows of a day are left out (no amount, no customer): the scoring date is the
    full run's all the same."""
    frame = history(50, 40)
    d1, d2 = split(frame, [frame.height // 2])
    late = d2.tail(4).with_columns(
        pl.col("order_ts") + pl.duration(days=20),
        pl.Series("amount", [None, None, 1.0, 2.0], dtype=pl.Float64),
        pl.Series("customer_id", [1, 2, None, None], dtype=pl.Int64),
    )
    d2 = pl.concat([d2, late])
    s = tmp_path / "s"
    score_job(d1, state=s)
    got = score_job(d2, state=s)
    want = score_job(frame.vstack(late))
    assert_same(got, want)
    got = score_job(None, state=s, as_of=want.as_of + dt.timedelta(days=5))
    assert_same(got, score_job(frame.vstack(late), as_of=want.as_of + dt.timedelta(days=5)))


def test_text_ids_after_int_ids_is_one_line(tmp_path: Path) -> None:
    s = tmp_path / "s"
    score_job(history(51, 20), state=s)
    before = (s / "state.json").read_bytes()
    with pytest.raises(FastsegError) as exc:
        score_job(history(52, 20, ids="text"), state=s)
    assert one_line(str(exc.value))
    assert (s / "state.json").read_bytes() == before


def test_more_keep_days_later_says_rebuild(tmp_path: Path) -> None:
    frame = history(53, 30)
    d1, d2 = split(frame, [frame.height // 2])
    s = tmp_path / "s"
    score_job(d1, state=s)
    with pytest.raises(DataError, match="rebuild") as exc:
        score_job(d2, state=s, keep_days=800)
    assert one_line(str(exc.value))
    got = score_job(d2, state=s, keep_days=100)  # fewer than kept: fine, the state keeps 365
    assert_same(got, score_job(frame))
    assert got.state["keep_days"] >= 365


def test_a_failed_run_writes_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = history(54, 30)
    d1, d2 = split(frame, [frame.height // 2])
    s = tmp_path / "s"
    score_job(d1, state=s)
    with monkeypatch.context() as m:
        _failing_commit(m)
        with pytest.raises(RuntimeError):
            score_job(d2, state=s, out=tmp_path / "scores.parquet")
    assert not (tmp_path / "scores.parquet").exists()
    got = score_job(d2, state=s, out=tmp_path / "scores.parquet")
    assert_scores_equal(pl.read_parquet(tmp_path / "scores.parquet"), score_job(frame).scores)
    assert_same(got, score_job(frame))


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    plan=st.lists(
        st.tuples(st.sampled_from(["apply", "apply_at", "age"]), st.integers(0, 60)),
        min_size=2,
        max_size=6,
    ),
    shuffled=st.booleans(),
)
def test_a_schedule_of_days_and_aging_runs(
    seed: int, plan: list[tuple[str, int]], shuffled: bool
) -> None:
    """Days applied (scoring at the latest order, or at a later explicit date) and aging runs in
    any order: each run equals one run over everything applied so far at the state's date,
    which is never earlier than the one before."""
    frame = history(seed, 50)
    if shuffled:
        frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    n_apply = max(1, sum(op != "age" for op, _ in plan))
    parts = split(frame, [frame.height * (i + 1) // (n_apply + 1) for i in range(n_apply)])
    plan = [("apply", 0), *plan]  # the first run builds the state
    with tempfile.TemporaryDirectory() as tmp:
        s = Path(tmp) / "s"
        applied: list[pl.DataFrame] = []
        cur: dt.date | None = None
        for op, k in plan:
            if op == "age" or not parts:
                assert cur is not None
                a = cur + dt.timedelta(days=k)
                got = score_job(None, state=s, as_of=a)
            else:
                p = parts.pop(0)
                applied.append(p)
                latest = pl.concat(applied)["order_ts"].max()
                assert isinstance(latest, dt.date)
                a = max(d for d in (cur, latest) if d is not None)
                if op == "apply_at":
                    a = a + dt.timedelta(days=k)
                    got = score_job(p, state=s, as_of=a)
                else:
                    got = score_job(p, state=s)
            assert got.as_of == a
            assert_same(got, score_job(pl.concat(applied), as_of=a))
            cur = a


def test_cli_run_with_state_and_rules(tmp_path: Path, rules_file: Path) -> None:
    runner = CliRunner()
    frame = history(55, 60)
    d1, d2 = split(frame, [frame.height // 2])
    f1, f2 = as_inputs([d1, d2], "parquet", tmp_path / "in")
    s = tmp_path / "s"
    for i, f in enumerate((f1, f2)):
        r = runner.invoke(
            app,
            [
                "run",
                str(f),
                "--rules",
                str(rules_file),
                "--state",
                str(s),
                "--out",
                str(tmp_path / f"r{i}"),
            ],
        )
        assert r.exit_code == 0, r.output
    run_job([str(f1), str(f2)], rules=rules_file, out=tmp_path / "full")
    assert_runs_equal(tmp_path / "r1", tmp_path / "full")
    record = json.loads((tmp_path / "r1" / "run.json").read_text())
    assert record["state"]["inputs_applied"] == 2
    assert record["state"]["rows"]["rows_read"] == frame.height


def test_cli_score_without_orders_needs_state(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["score", "--out", str(tmp_path / "x.parquet")])
    assert r.exit_code != 0
    assert "Traceback" not in r.output


def test_a_folder_input_growing(tmp_path: Path) -> None:
    """A folder given again with a new file added: the old file is refused (applied already)."""
    frame = history(56, 40)
    d1, d2 = split(frame, [frame.height // 2])
    folder = tmp_path / "in"
    folder.mkdir()
    d1.write_parquet(folder / "a.parquet")
    s = tmp_path / "s"
    score_job(folder, state=s)
    d2.write_parquet(folder / "b.parquet")
    before = (s / "state.json").read_bytes()
    with pytest.raises(DataError, match="already") as exc:
        score_job(folder, state=s)
    assert one_line(str(exc.value))
    assert (s / "state.json").read_bytes() == before
    got = score_job(folder / "b.parquet", state=s)
    assert_same(got, score_job([str(folder / "a.parquet"), str(folder / "b.parquet")]))


@pytest.mark.parametrize("sort", [True, False])
def test_without_order_ids_duplicate_rows_without_a_timestamp(tmp_path: Path, sort: bool) -> None:
    """Exact duplicates among rows with no timestamp (left out), across inputs and within one."""
    frame = history(57, 40, order_ids=False)
    if not sort:
        frame = frame.sample(fraction=1.0, shuffle=True, seed=3)
    no_ts = frame.head(6).with_columns(pl.lit(None, dtype=pl.Date).alias("order_ts"))
    half = frame.height // 2
    d1 = pl.concat([frame[:half], no_ts])
    d2 = pl.concat([frame[half:], no_ts, no_ts.head(2)])
    s = tmp_path / "s"
    score_job(d1, state=s)
    got = score_job(d2, state=s)
    want = score_job(pl.concat([d1, d2]))
    assert want.orders.left_out["missing_timestamp"] == 14
    assert_same(got, want)


def test_awkward_text_ids(tmp_path: Path) -> None:
    """Unicode, blank (all spaces: no id), very long and look-alike ids, over two inputs."""
    ids = ["é-1", "  ", "", "x" * 300, "A", "a", "A ", "0012", "12", "日本"]
    rng = np.random.default_rng(58)
    n = 200
    frame = pl.DataFrame(
        {
            "customer_id": [ids[i] for i in rng.integers(0, len(ids), n)],
            "order_id": rng.integers(0, 50, n).tolist(),
            "order_ts": [END - dt.timedelta(days=int(d)) for d in rng.integers(0, 400, n)],
            "amount": np.round(rng.normal(30, 20, n), 2).tolist(),
        }
    )
    d1, d2 = split(frame, [n // 2])
    for fmt in ("frame", "csv"):
        inputs = as_inputs([d1, d2], fmt, tmp_path / f"in-{fmt}")
        got = apply_all(score_job, inputs, tmp_path / f"s-{fmt}")
        assert_same(got, score_job(whole(inputs)))


@contextlib.contextmanager
def small_batches(rows: int) -> Iterator[None]:
    """The order rows read in batches of ``rows`` (many batches a run)."""
    import fastseg.pipeline as P

    real = P.order_features

    def wrapped(*a: Any, **k: Any) -> Any:
        k.setdefault("batch_rows", rows)
        return real(*a, **k)

    P.order_features = wrapped
    try:
        yield
    finally:
        P.order_features = real


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch=st.sampled_from([5, 64, 500]),
    cut_share=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=3),
    shuffled=st.booleans(),
    order_ids=st.booleans(),
)
def test_many_batches_a_run(
    seed: int, batch: int, cut_share: list[float], shuffled: bool, order_ids: bool
) -> None:
    """Each run reads its rows in many small batches; the one full run in one batch."""
    frame = history(seed, 50, order_ids=order_ids)
    if shuffled:
        frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    parts = split(frame, [int(x * frame.height) for x in cut_share])
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "r.toml").write_text(RULES)
        with small_batches(batch):
            for i, p in enumerate(parts):
                got = run_job(p, rules=t / "r.toml", state=t / "s", out=t / f"o{i}")
        want = run_job(frame, rules=t / "r.toml", out=t / "full")
        assert_same(got, want)
        assert_runs_equal(t / f"o{len(parts) - 1}", t / "full")


@pytest.mark.parametrize("kind", ["customers", "ids", "extra", "recent", "pairs"])
def test_a_missing_data_file_is_one_line(tmp_path: Path, kind: str) -> None:
    """A file the manifest names is gone (deleted by hand, a partial copy): a FastsegError of
    one line saying to rebuild, not a traceback."""
    frame = history(59, 30)
    d1, d2 = split(frame, [frame.height // 2])
    s = tmp_path / "s"
    score_job(d1, state=s)
    victims = [n for n in listed(s) if n.startswith(f"{kind}-")]
    assert victims
    for n in victims:
        (s / n).unlink()
    with pytest.raises(FastsegError) as exc:
        score_job(d2, state=s)
    assert one_line(str(exc.value))
    assert "rebuild" in str(exc.value)


@pytest.mark.parametrize("manifest", ['{"format": 1}', '{"format": 1, "inputs": 3}'])
def test_a_manifest_missing_its_fields_is_one_line(tmp_path: Path, manifest: str) -> None:
    s = tmp_path / "s"
    score_job(history(60, 20), state=s)
    (s / "state.json").write_text(manifest)
    with pytest.raises(FastsegError) as exc:
        score_job(None, state=s, as_of=END + dt.timedelta(days=2))
    assert one_line(str(exc.value))
    r = CliRunner().invoke(app, ["state", "info", str(s)])
    assert r.exit_code != 0
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_categories_first_seen_in_a_later_input(tmp_path: Path) -> None:
    """All-history distinct counts and filters on values that only a later input has."""
    rule = tmp_path / "r.toml"
    rule.write_text(
        '[[segment]]\nname = "many"\nrule = "distinct(category) >= 3"\n'
        '[[segment]]\nname = "new_cat"\nrule = "revenue(category: \'zz\') > 0"\n'
        '[[segment]]\nname = "chan"\nrule = "distinct(channel, since: -90d) >= 2"\n'
        "[[segment]]\nname = \"top\"\nrule = \"top_category IN ('e', 'zz')\"\n"
    )
    frame = history(61, 60)
    d1, d2, d3 = split(frame, [frame.height // 3, 2 * frame.height // 3])
    rng = np.random.default_rng(61)
    d2 = d2.with_columns(
        pl.Series("category", rng.choice(["e", "zz", "a"], d2.height).tolist()),
        pl.Series("channel", rng.choice(["kiosk", "app"], d2.height).tolist()),
    )
    d3 = d3.with_columns(pl.Series("category", rng.choice(["f", "zz"], d3.height).tolist()))
    s = tmp_path / "s"
    for i, p in enumerate((d1, d2, d3)):
        run_job(p, rules=rule, state=s, out=tmp_path / f"o{i}")
        run_job(pl.concat([d1, d2, d3][: i + 1]), rules=rule, out=tmp_path / f"f{i}")
        assert_runs_equal(tmp_path / f"o{i}", tmp_path / f"f{i}")
