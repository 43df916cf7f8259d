"""Larger than memory: a run in customer buckets on disk equals the in-memory run exactly.

The budgets here are tiny (:class:`fastseg.buckets.Budget` with a state of a few dozen
customers), so a few hundred customers go through the spill, several units of buckets, the
exact edge rounds and the bucket-by-bucket outputs.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fastseg import buckets as B
from fastseg.api import run_job, score_job
from fastseg.cli import app
from fastseg.errors import ParameterError
from fastseg.kernels.partition import bucket_order, buckets_of_hashes
from fastseg.runs import open_run

#: a state of about 50 customers: a few hundred customers make several units
TINY = B.Budget(B.FIXED_BYTES + 50 * B.BYTES_PER_CUSTOMER)
RULES = """
[[segment]]
name = "cat_a_recent"
rule = "orders(category: 'a', since: -180d) >= 1 and revenue_365d > 20"

[[segment]]
name = "gold"
rule = "tier = 'gold' and frequency >= 1"

[[segment]]
name = "opened"
rule = "events('email_open', since: -90d) >= 1"

[[segment]]
name = "declining"
rule = "orders(since: -180d, until: -90d) > orders_90d"

[[group]]
name = "lifecycle"
segments = ["gold", "cat_a_recent"]
fallback = "other"
"""


def _orders(seed: int, n: int, customers: int, ids: str, *, lines: bool = True) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    c = rng.integers(0, customers, n)
    if ids == "int":
        cid: list | np.ndarray = c * 7919 + 13
    elif ids == "text":
        cid = [f" u-{v:05d} " if v % 5 == 0 else f"u-{v:05d}" for v in c]
    else:
        cid = c + 1_000_000_000_000
    day = rng.integers(0, 500, n)
    amount = rng.gamma(2.0, 30.0, n).round(2)
    amount[rng.random(n) < 0.05] *= -1  # refunds
    df = pl.DataFrame(
        {
            "customer_id": cid,
            "order_ts": [dt.datetime(2025, 1, 1) + dt.timedelta(days=int(d)) for d in day],
            "amount": amount,
            "category": rng.choice(["a", "b", "c"], n),
        }
    )
    if lines:  # lines of one order: the same order id on a few rows of one customer
        df = df.with_columns(order_id=pl.Series(rng.integers(0, n // 2, n)) * 1000 + pl.Series(c))
    nulls = rng.random(n)
    df = df.with_columns(
        pl.when(pl.Series(nulls < 0.02)).then(None).otherwise(pl.col("amount")).alias("amount"),
        pl.when(pl.Series((nulls > 0.02) & (nulls < 0.03)))
        .then(None)
        .otherwise(pl.col("customer_id"))
        .alias("customer_id"),
    )
    return pl.concat([df, df.head(5)])  # exact duplicate rows


def _profiles(orders: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed + 1)
    ids = orders["customer_id"].drop_nulls().unique().sort()
    extra = ids.head(0)
    if ids.dtype == pl.Int64:
        extra = pl.Series("customer_id", [int(ids.max()) + k for k in range(1, 30)])
    else:
        extra = pl.Series("customer_id", [f"p-{k}" for k in range(30)])
    ids = pl.concat(
        [
            ids.sample(fraction=0.7, seed=seed).str.strip_chars()
            if ids.dtype == pl.String
            else ids.sample(fraction=0.7, seed=seed),
            extra,
        ]
    ).unique()
    return pl.DataFrame(
        {
            "customer_id": ids,
            "tier": rng.choice(["gold", "silver"], ids.len()),
            "signup": [f"2024-0{1 + i % 9}-1{i % 10}" for i in range(ids.len())],
        }
    )


def _events(orders: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed + 2)
    ids = orders["customer_id"].drop_nulls().unique().sort()
    if ids.dtype == pl.String:
        ids = ids.str.strip_chars().unique().sort()
    pick = ids.gather(rng.integers(0, ids.len(), 800))
    return pl.DataFrame(
        {
            "customer_id": pick,
            "event_ts": [
                dt.date(2026, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 150, 800)
            ],
            "event": rng.choice(["email_open", "email_click"], 800),
        }
    )


def _write(df: pl.DataFrame, tmp: Path, kind: str, name: str) -> object:
    if kind == "frame":
        return df
    if kind == "csv":
        p = tmp / f"{name}.csv"
        df.write_csv(p)
        return p
    p = tmp / f"{name}.parquet"
    df.write_parquet(p, row_group_size=700)
    return p


def _same(a: pl.DataFrame, b: pl.DataFrame, key: list[str]) -> None:
    assert a.schema == b.schema
    assert a.height == b.height
    assert a.sort(key, nulls_last=True).equals(b.sort(key, nulls_last=True))


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 10_000),
    ids=st.sampled_from(["int", "text", "store13"]),
    kind=st.sampled_from(["parquet", "csv", "frame"]),
    lines=st.sampled_from(["none", "shuffled", "sorted"]),
    as_of=st.sampled_from([None, dt.date(2026, 3, 1)]),
)
def test_score_in_buckets_equals_in_memory(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    ids: str,
    kind: str,
    lines: str,
    as_of: dt.date | None,
) -> None:
    tmp = tmp_path_factory.mktemp("b")
    o = _orders(seed, 3000, 400, ids, lines=lines != "none")
    if lines == "sorted":  # row groups of disjoint order-id ranges: lines counted group by group
        o = o.sort("order_id", nulls_last=True)
    orders = _write(o, tmp, kind, "orders")
    mem = score_job(orders, as_of=as_of, memory_limit=False, rejects=tmp / "r1.parquet")
    spill_root = tmp / "spill"
    spill_root.mkdir()
    got = score_job(
        orders, as_of=as_of, memory_limit=TINY, tmp_dir=spill_root, rejects=tmp / "r2.parquet"
    )
    assert got.buckets is not None and got.buckets.units >= 2
    _same(mem.scores, got.scores, ["customer_id"])
    assert got.scorer.edges_ == mem.scorer.edges_
    assert got.as_of == mem.as_of
    assert got.orders.to_dict() | {"rejects_path": None} == mem.orders.to_dict() | {
        "rejects_path": None
    }
    r1, r2 = pl.read_parquet(tmp / "r1.parquet"), pl.read_parquet(tmp / "r2.parquet")
    assert r1.schema == r2.schema and r1.height == r2.height
    assert sorted(r1.rows(), key=repr) == sorted(r2.rows(), key=repr)
    assert list(spill_root.iterdir()) == []  # the spill files are gone


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(0, 10_000),
    ids=st.sampled_from(["int", "text"]),
    fmt=st.sampled_from(["parquet", "csv"]),
)
def test_run_in_buckets_equals_in_memory(
    tmp_path_factory: pytest.TempPathFactory, seed: int, ids: str, fmt: str
) -> None:
    tmp = tmp_path_factory.mktemp("r")
    o = _orders(seed, 3000, 400, ids)
    orders = _write(o, tmp, "parquet", "orders")
    customers = _write(_profiles(o, seed), tmp, "csv", "customers")
    events = _write(_events(o, seed), tmp, "parquet", "events")
    rules = tmp / "rules.toml"
    rules.write_text(RULES)
    kw = {"rules": rules, "customers": customers, "events": events, "out_format": fmt}
    mem = run_job(orders, out=tmp / "mem", memory_limit=False, **kw)
    got = run_job(orders, out=tmp / "bkt", memory_limit=TINY, tmp_dir=tmp, **kw)
    assert got.buckets is not None and got.buckets.units >= 2
    assert mem.buckets is None
    read = pl.read_csv if fmt == "csv" else pl.read_parquet
    for name, key in (
        ("scores", ["customer_id"]),
        ("segments", ["customer_id", "segment"]),
        ("groups", ["customer_id"]),
    ):
        a, b = read(tmp / "mem" / f"{name}.{fmt}"), read(tmp / "bkt" / f"{name}.{fmt}")
        _same(a, b, key)
    for name in ("summary", "overlaps"):
        a, b = pl.read_csv(tmp / "mem" / f"{name}.csv"), pl.read_csv(tmp / "bkt" / f"{name}.csv")
        assert a.columns == b.columns and a.height == b.height
        for col in a.columns:
            if a[col].dtype.is_float():  # sums added bucket by bucket: equal to rounding
                # money is written in cents: a total on a half cent may round either way
                atol = 0.0100001 if col in ("revenue", "aov") else 0.0
                x, y = a[col].fill_null(np.nan), b[col].fill_null(np.nan)
                assert np.allclose(x, y, rtol=1e-12, atol=atol, equal_nan=True), col
            else:
                assert a[col].equals(b[col]), col
    # membership.npz: bit i of each segment is the customer on row i of scores
    run = open_run(tmp / "bkt")
    ids_b = read(tmp / "bkt" / f"scores.{fmt}")["customer_id"]
    with np.load(tmp / "bkt" / "membership.npz") as z:
        words, names = z["words"], list(z["names"])
        assert int(z["n_customers"]) == ids_b.len()
    long = read(tmp / "bkt" / f"segments.{fmt}")
    for k, name in enumerate(names):
        bits = np.unpackbits(words[k].view(np.uint8), bitorder="little")[: ids_b.len()].astype(bool)
        want = set(long.filter(pl.col("segment").cast(pl.String) == name)["customer_id"].to_list())
        assert set(ids_b.filter(pl.Series(bits)).to_list()) == want, name
    assert run.meta["buckets"]["units"] == got.buckets.units
    assert not [p for p in tmp.iterdir() if p.name.startswith("fastseg-spill-")]


def test_latest_rows_unusable_reread_in_buckets(tmp_path: Path) -> None:
    o = _orders(5, 3000, 400, "int", lines=False)
    late = pl.DataFrame(
        {
            "customer_id": [None, None],
            "order_ts": [dt.datetime(2027, 1, 1)] * 2,
            "amount": [1.0, 2.0],
            "category": ["a", "b"],
        },
        schema=o.schema,
    )
    o = pl.concat([o, late])
    mem = score_job(o, memory_limit=False)
    got = score_job(o, memory_limit=TINY, tmp_dir=tmp_path)
    assert got.buckets is not None
    assert got.as_of == mem.as_of < dt.date(2027, 1, 1)
    _same(mem.scores, got.scores, ["customer_id"])


def test_no_usable_row_is_the_in_memory_error(tmp_path: Path) -> None:
    """Every row left out (after the scoring date): the same one line as in memory."""
    from fastseg.errors import DataError

    o = _orders(6, 3000, 400, "int")
    with pytest.raises(DataError) as mem:
        score_job(o, memory_limit=False, as_of=dt.date(2020, 1, 1))
    with pytest.raises(DataError) as got:
        score_job(o, memory_limit=TINY, tmp_dir=tmp_path, as_of=dt.date(2020, 1, 1))
    assert str(got.value) == str(mem.value)


def test_failure_removes_the_spill_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastseg.scoring import RFMScorer

    o = _write(_orders(9, 3000, 400, "int"), tmp_path, "parquet", "orders")
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous")
    spill = tmp_path / "spill"
    spill.mkdir()
    calls = {"n": 0}
    real = RFMScorer.transform

    def failing(self: RFMScorer, frame: pl.DataFrame) -> pl.DataFrame:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(self, frame)

    monkeypatch.setattr(RFMScorer, "transform", failing)
    with pytest.raises(OSError, match="disk full"):
        score_job(o, out=out, memory_limit=TINY, tmp_dir=spill)
    assert list(spill.iterdir()) == []
    assert out.read_bytes() == b"previous"  # the previous output is whole


def test_parse_size() -> None:
    assert B.parse_size("1500MB") == 1_500_000_000
    assert B.parse_size("4GB") == 4_000_000_000
    assert B.parse_size("4GiB") == 4 << 30
    assert B.parse_size("512 mib") == 512 << 20
    assert B.parse_size(2048) == 2048
    for bad in ("", "lots", "-1GB", "4XB", "0"):
        with pytest.raises(ParameterError, match="--memory-limit"):
            B.parse_size(bad)


def test_bucket_order_is_a_stable_partition() -> None:
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 10_000, dtype=np.uint64) * np.uint64(2)
    b = buckets_of_hashes(h, 37)
    assert b.min() >= 0 and b.max() < 37
    order, starts = bucket_order(b, 37)
    assert np.array_equal(order, np.argsort(b, kind="stable"))
    assert np.array_equal(np.diff(starts), np.bincount(b, minlength=37))


def test_text_and_integer_ids_hash_alike_for_csv() -> None:
    import pyarrow as pa

    ints = B.id_hashes(pa.array([7, -12, 300]), as_text=True)
    text = B.id_hashes(pa.array([" 7", "-12 ", "300"]), as_text=True)
    assert np.array_equal(ints, text)
    d = B.id_hashes(pa.array(["a", " b", "a"]).dictionary_encode(), as_text=True)
    assert np.array_equal(d, B.id_hashes(pa.array(["a", "b", "a"]), as_text=True))


def test_cli_memory_limit(tmp_path: Path) -> None:
    o = _write(_orders(3, 2000, 300, "int"), tmp_path, "parquet", "orders")
    runner = CliRunner()
    res = runner.invoke(
        app, ["score", str(o), "-o", str(tmp_path / "s.parquet"), "--memory-limit", "100MB"]
    )
    assert res.exit_code != 0
    assert "--memory-limit 100.00 MB is below" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(
        app, ["score", str(o), "-o", str(tmp_path / "s.parquet"), "--memory-limit", "lots"]
    )
    assert res.exit_code != 0 and "expected a size such as 1500MB" in res.output
    res = runner.invoke(
        app, ["run", str(o), "--out", str(tmp_path / "run"), "--predict", "--memory-limit", "2GB"]
    )
    assert res.exit_code != 0 and "cannot predict (--predict)" in res.output
    res = runner.invoke(
        app, ["run", str(o), "--out", str(tmp_path / "run"), "--predict", "--memory-limit", "lots"]
    )
    assert res.exit_code != 0 and "expected a size such as 1500MB" in res.output  # said first
    for bad, said in (("1" + "0" * 400, "larger than any machine"), ("0.4", "is 0 bytes")):
        res = runner.invoke(app, ["score", str(o), "--memory-limit", bad])
        assert res.exit_code != 0 and said in res.output and "Traceback" not in res.output
    res = runner.invoke(
        app,
        ["score", str(o), "-o", str(tmp_path / "s.parquet"), "--tmp-dir", str(tmp_path / "nope")],
    )
    assert res.exit_code != 0 and "--tmp-dir" in res.output and "is not a folder" in res.output
    res = runner.invoke(
        app, ["score", str(o), "-o", str(tmp_path / "s.parquet"), "--memory-limit", "4GB"]
    )
    assert res.exit_code == 0, res.output
    assert "in buckets" not in res.output  # it fits: in memory, as before


def test_cli_run_in_buckets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    o = _write(_orders(4, 3000, 400, "int"), tmp_path, "parquet", "orders")
    monkeypatch.setattr(B, "FIXED_BYTES", 1 << 20)  # a real limit small enough for 400 customers
    monkeypatch.setattr(B, "MIN_STATE", 1 << 10)
    runner = CliRunner()
    res = runner.invoke(
        app, ["run", str(o), "--out", str(tmp_path / "run"), "--memory-limit", "1100kB"]
    )
    assert res.exit_code == 0, res.output
    assert "in buckets" in res.output
    run_job(o, out=tmp_path / "mem", memory_limit=False)
    _same(
        pl.read_parquet(tmp_path / "mem" / "scores.parquet"),
        pl.read_parquet(tmp_path / "run" / "scores.parquet"),
        ["customer_id"],
    )
    assert os.path.exists(tmp_path / "run" / "run.json")


def test_docs_performance_larger_than_memory_example(tmp_path: Path) -> None:
    """The bash block of docs/performance.md's "Larger than memory" section runs as written."""
    from tests.docblocks import BLOCK

    doc = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
    text = doc.read_text(encoding="utf-8")
    section = text[text.index("## Larger than memory") : text.index("## The limits of one machine")]
    bodies = [body for k, body in BLOCK.findall(section) if k == "bash"]
    assert len(bodies) == 1
    import subprocess
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", bodies[0]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "results" / "scores.parquet").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("fastseg-spill-")]


def test_full_tmp_dir_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spill file that cannot be written (the disk full) names --tmp-dir and says what to do;
    nothing is left behind."""
    import pyarrow.ipc as ipc

    from fastseg.errors import OutputError

    o = _write(_orders(11, 2000, 300, "int"), tmp_path, "parquet", "orders")

    def full(*args: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ipc, "new_stream", full)
    spill = tmp_path / "spill"
    spill.mkdir()
    with pytest.raises(
        OutputError,
        match=r"--tmp-dir '.*spill': cannot write the spill files \(No space left on device\)",
    ):
        score_job(o, memory_limit=TINY, tmp_dir=spill)
    assert list(spill.iterdir()) == []


def test_api_run_in_buckets_without_out_returns_the_scores(tmp_path: Path) -> None:
    o = _orders(12, 3000, 400, "int")
    mem = run_job(o, memory_limit=False)
    got = run_job(o, memory_limit=TINY, tmp_dir=tmp_path)
    assert got.buckets is not None
    _same(mem.scores, got.scores, ["customer_id"])
    assert (
        got.segments.summary()["customers"].to_list()
        == mem.segments.summary()["customers"].to_list()
    )
    assert list(tmp_path.iterdir()) == []
