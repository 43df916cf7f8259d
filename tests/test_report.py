"""The HTML report: its aggregates against plain Polars/Python references, the page's safety
(escaping, no network), its size, and the command line. The page in a real browser:
tests/test_report_browser.py."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import fastseg
from fastseg import reporting as R
from fastseg.cli import app
from fastseg.errors import ParameterError
from fastseg.runs import open_run

runner = CliRunner()

HOSTILE = "</script><script>alert('x')</script> & <b>bold</b> \"quoted\""
RULES = f"""
[[segment]]
name = "big_spenders"
description = '''{HOSTILE}'''
rule = "monetary > 300"
[[segment]]
name = "regulars"
description = "three orders or more"
rule = "frequency >= 3"
[[segment]]
name = "nobody"
description = "an empty segment"
rule = "frequency > 1000000"
"""


def orders_frame(seed: int, n_customers: int, day: dt.date, *, text: bool = False) -> pl.DataFrame:
    """Orders with ties, refunds (negative amounts, some customers net zero or below) and a
    skewed spend."""
    rng = np.random.default_rng(seed)
    n = n_customers * 4
    ids = rng.integers(0, n_customers, n)
    cust = [f"C{i:05d}" for i in ids] if text else (ids * 1_000_003 + 10**12).tolist()
    days = rng.integers(0, 700, n)
    amount = np.round(rng.lognormal(3.5, 1.4, n), 2)
    amount[rng.random(n) < 0.05] *= -1
    return pl.DataFrame(
        {
            "customer_id": cust,
            "order_ts": [
                dt.datetime.combine(day, dt.time()) - dt.timedelta(days=int(d)) for d in days
            ],
            "amount": amount,
        }
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    rules = base / "rules.toml"
    rules.write_text(RULES)
    o = orders_frame(3, 600, dt.date(2026, 6, 1))
    fastseg.run(o, rules=rules, as_of="2026-05-01", out=base / "a")
    fastseg.run(
        o, rules=rules, as_of="2026-06-01", out=base / "b", previous=base / "a", report=True
    )
    return {"a": base / "a", "b": base / "b", "rules": rules}


# ------------------------------------------------------------------------------- aggregates


def test_aggregates_equal_the_references(runs: dict[str, Path]) -> None:
    run = open_run(runs["b"])
    data = R.collect_folder(run)
    scores = pl.read_parquet(runs["b"] / "scores.parquet")
    assert data.totals["customers"] == scores.height
    assert data.totals["orders"] == scores["frequency"].sum()
    assert math.isclose(data.totals["revenue"], scores["monetary"].sum(), rel_tol=1e-12)

    ref = (
        scores.drop_nulls("r_score")
        .group_by("r_score", "f_score")
        .agg(
            pl.len().alias("n"), pl.col("monetary").sum().alias("rev"), pl.col("rfm_group").unique()
        )
    )
    got = {(r["r_score"], r["f_score"]): r for r in data.grid.to_dicts()}
    assert len(got) == ref.height
    for r in ref.to_dicts():
        cell = got[(r["r_score"], r["f_score"])]
        assert cell["customers"] == r["n"]
        assert math.isclose(cell["revenue"], r["rev"], rel_tol=1e-12, abs_tol=1e-9)
        assert r["rfm_group"] == [cell["rfm_group"]]  # one group per cell
    assert data.grid["customers"].sum() == data.totals["scored"]

    groups = dict(zip(data.groups["rfm_group"], data.groups["customers"], strict=True))
    assert groups == dict(scores["rfm_group"].value_counts().iter_rows())

    # every customer is in a bar or counted as not shown
    for d in data.distributions:
        assert d.bins["customers"].sum() + d.outside == scores.height, d.column
        with_orders = scores.filter(pl.col("frequency") > 0)[d.column]
        assert d.median == pytest.approx(float(with_orders.median()))
        positive = with_orders.drop_nulls().filter(with_orders.drop_nulls() > 0)
        skewed = positive.quantile(0.99, "linear") / positive.median() >= R.SKEW_RATIO
        assert d.log == skewed, d.column  # the documented rule for a log axis
        if d.log:
            assert d.outside == scores.height - positive.len()
        else:
            assert d.outside == scores.height - with_orders.drop_nulls().len()

    # overlaps against Python sets from the long membership table
    long = pl.read_parquet(runs["b"] / "segments.parquet")
    members = {
        s: set(g["customer_id"].to_list())
        for (s,), g in long.with_columns(pl.col("segment").cast(pl.String)).group_by("segment")
    }
    sizes = sorted((-len(v), k) for k, v in members.items() if v)
    assert data.overlap_order == [k for _, k in sizes[: R.TOP_OVERLAP]]
    for r in data.overlap.to_dicts():
        both = len(members[r["a"]] & members[r["b"]])
        assert r["customers"] == both
        assert r["share"] == pytest.approx(both / len(members[r["a"]]))
    assert "nobody" not in data.overlap_order  # empty segments have no row share


def test_the_largest_segments_are_in_the_overlap() -> None:
    names = [f"s{i}" for i in range(R.TOP_OVERLAP + 5)]
    sizes = list(range(len(names), 0, -1))
    summary = pl.DataFrame({"segment": names, "customers": sizes})
    overlaps = pl.DataFrame({"segment": names, **{n: sizes for n in names}})
    frame, order = R._overlap(overlaps, R._summary(summary))
    assert order == names[: R.TOP_OVERLAP]
    assert frame.height == R.TOP_OVERLAP**2


values_st = st.lists(
    st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=False, width=32),
        st.sampled_from([0.0, -1.0, 1.0, 1.0, 5.0, 1e6]),
    ),
    max_size=200,
)


@given(values_st, st.booleans(), st.integers(0, 5))
def test_histogram_counts_every_value_once(values: list, integer: bool, no_orders: int) -> None:
    if integer:
        values = [None if v is None or v != v else float(round(v)) for v in values]
    s = pl.Series("v", values, dtype=pl.Float64)
    d = R._histogram(s, "v", "V", "unit", integer=integer, no_orders=no_orders)
    assert d.bins["customers"].sum() + d.outside == len(values) + no_orders
    if not d.bins.is_empty():
        lo, hi = d.bins["lo"].to_numpy(), d.bins["hi"].to_numpy()
        assert (hi > lo).all() and (lo[1:] == hi[:-1]).all()
        assert (d.bins["customers"] >= 0).all()
        if d.log:
            assert lo[0] > 0


def test_skew_decides_the_axis() -> None:
    even = pl.Series(np.arange(1.0, 1001.0))
    skewed = pl.Series(np.r_[np.ones(900), np.geomspace(2, 1e6, 100)])
    assert not R._histogram(even, "x", "X", "u", integer=True, no_orders=0).log
    assert R._histogram(skewed, "x", "X", "u", integer=True, no_orders=0).log


def test_people_formats() -> None:
    assert R.fmt_int(1234567) == "1,234,567"
    assert R.fmt_money(1234.5) == "1,234.50"
    assert R.fmt_money(-0.004) == "-0.00"
    assert R.fmt_share(0.1234) == "12.3%"
    assert R.fmt_share(0.0004) == "<0.1%"
    assert R.fmt_share(0) == "0.0%"
    assert R.fmt_int(None) == R.fmt_money(float("nan")) == R.fmt_share(None) == "–"
    assert R.fmt_bytes(1_234_567) == "1.2 MB"


# ------------------------------------------------------------------------------- the page


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.ids: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(str(a[key]))


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_page_escapes_user_text_and_loads_nothing(runs: dict[str, Path]) -> None:
    page = (runs["b"] / "report.html").read_text()
    parsed = _Scripts()
    parsed.feed(page)
    # ours only: the chart data, the Vega bundle, the embedding code
    assert len(parsed.scripts) == 3
    assert parsed.scripts[0] == {"type": "application/json", "id": "fastseg-specs"}
    assert parsed.external == []  # no src=, no href=: nothing to fetch
    assert "alert('x')</script>" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(&#x27;x&#x27;)" in page  # shown as text
    specs = json.loads(
        re.search(r'id="fastseg-specs">(.*?)</script>', page, re.S).group(1)  # type: ignore[union-attr]
    )
    assert HOSTILE in set(_strings(specs))  # the tooltip data, intact
    # every chart has its element
    assert set(specs) <= set(parsed.ids)
    assert {
        "chart-segments",
        "chart-grid",
        "chart-overlap",
        "chart-changes",
        "chart-transitions",
    } <= set(specs)


def test_page_shows_the_figures_formatted(runs: dict[str, Path]) -> None:
    page = (runs["b"] / "report.html").read_text()
    scores = pl.read_parquet(runs["b"] / "scores.parquet")
    meta = json.loads((runs["b"] / "run.json").read_text())
    assert f"{scores.height:,}" in page
    assert R.fmt_money(scores["monetary"].sum()) in page
    assert f"{meta['orders']['rows_read']:,}" in page
    assert meta["run_id"] in page and "2026-06-01" in page and "2026-05-01" in page
    assert "RFM transitions" in page and "Joined and left" in page


def test_report_of_the_run_equals_the_report_of_its_folder(runs: dict[str, Path]) -> None:
    """``run --report`` builds from memory, ``fastseg report`` from the files: same aggregates."""
    folder = R.collect_folder(open_run(runs["b"]))
    fresh = R.collect_folder(open_run(runs["b"]), open_run(runs["a"]))
    page = (runs["b"] / "report.html").read_text()
    specs = json.loads(re.search(r'id="fastseg-specs">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert _rounded(specs) == _rounded(R.chart_specs(folder))  # sums in another order
    assert fresh.changes is not None and folder.changes is not None
    assert fresh.changes.equals(folder.changes.select(fresh.changes.columns))
    t = ["before", "after", "customers"]
    assert fresh.transitions.select(t).sort(t).equals(folder.transitions.select(t).sort(t))  # type: ignore[union-attr]


def test_report_size_does_not_grow_with_customers(tmp_path: Path) -> None:
    sizes = []
    for n in (50, 5000):
        fastseg.run(orders_frame(5, n, dt.date(2026, 6, 1)), out=tmp_path / f"r{n}")
        rep = fastseg.report(tmp_path / f"r{n}", out=tmp_path / f"r{n}.html")
        assert rep.path.stat().st_size == rep.bytes
        sizes.append(rep.bytes)
    assert abs(sizes[1] - sizes[0]) < 60_000, sizes  # aggregates only: a few KB either way
    assert max(sizes) < 5_000_000


def test_text_ids_and_a_csv_run_folder(tmp_path: Path) -> None:
    o = orders_frame(9, 300, dt.date(2026, 6, 1), text=True)
    fastseg.run(o, out=tmp_path / "r", out_format="csv")
    rep = fastseg.report(tmp_path / "r", out=tmp_path / "r.html")
    assert rep.charts >= 5
    assert "R × F grid" in rep.path.read_text()


def test_one_customer_and_prospects(tmp_path: Path) -> None:
    o = pl.DataFrame({"customer_id": [1], "order_ts": [dt.datetime(2026, 5, 1)], "amount": [10.0]})
    customers = pl.DataFrame({"customer_id": [1, 2, 3]})
    fastseg.run(o, customers=customers, as_of="2026-06-01", out=tmp_path / "r")
    rep = fastseg.report(tmp_path / "r", out=tmp_path / "r.html")
    data = R.collect_folder(open_run(tmp_path / "r"))
    assert data.grid["customers"].to_list() == [1]
    assert [d.bins["customers"].sum() for d in data.distributions] == [1, 1, 1]
    assert [d.outside for d in data.distributions] == [2, 2, 2]
    page = rep.path.read_text()
    assert "At a glance" in page and ">3<" in page and "2 customers without an order" in page


# ------------------------------------------------------------------------------- command line


def test_cli_report(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    res = runner.invoke(
        app, ["report", str(runs["b"]), "--previous", str(runs["a"]), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "report written to" in res.output and "charts" in res.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    meta = json.loads((runs["b"] / "run.json").read_text())
    assert "report.html" in meta["files"] and "report" in meta["timings_seconds"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "{t}/nope"], "run folder {t}/nope: does not exist"),
        (["report", "{t}/plain"], "no run.json, not a fastseg run folder"),
        (["report", "{b}", "--out", "{b}/run.json"], "inside the run folder only report.html"),
        (["report", "{b}", "--out", "{b}/segments.parquet"], "inside the run folder only"),
        (["report", "{b}", "--out", "{b}"], "the report is an HTML page"),
        (
            ["report", "{b}", "--out", "{t}/page.txt"],
            "give a file name ending in .html (e.g. page.html)",
        ),
        (["report", "{b}", "--previous", "{b}"], "that is the run folder itself"),
        (["report", "{b}", "--previous", "{t}/plain"], "--previous {t}/plain: no run.json"),
    ],
)
def test_cli_report_errors_are_one_line(
    runs: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "plain").mkdir()
    before = (runs["b"] / "run.json").read_bytes()
    res = runner.invoke(app, [a.format(t=tmp_path, b=runs["b"]) for a in args])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert message.format(t=tmp_path, b=runs["b"]) in lines[0]
    assert (runs["b"] / "run.json").read_bytes() == before


def test_cli_report_defaults_to_the_run_folder(runs: dict[str, Path]) -> None:
    before = {p.name: p.read_bytes() for p in runs["b"].iterdir() if p.name != "report.html"}
    (runs["b"] / "report.html").unlink()
    res = runner.invoke(app, ["report", str(runs["b"])])
    assert res.exit_code == 0, res.output
    assert (runs["b"] / "report.html").is_file()
    after = {p.name: p.read_bytes() for p in runs["b"].iterdir() if p.name != "report.html"}
    assert after == before  # the run's own files untouched
    assert open_run(runs["b"]).meta == json.loads(before["run.json"])


def test_cli_run_report(tmp_path: Path) -> None:
    orders_frame(4, 100, dt.date(2026, 6, 1)).write_parquet(tmp_path / "o.parquet")
    res = runner.invoke(
        app, ["run", str(tmp_path / "o.parquet"), "--out", str(tmp_path / "r"), "--report"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "report.html").is_file()
    assert "report" in res.output


def test_api_report_needs_a_run_folder() -> None:
    with pytest.raises(ParameterError, match="report: give out"):
        fastseg.run(orders_frame(4, 10, dt.date(2026, 6, 1)), report=True)


def test_the_javascript_bundle_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSEG_CACHE_DIR", str(tmp_path / "cache"))
    first = R._bundle()
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and "window.vegaEmbed" in first
    sealed = files[0].read_bytes()
    assert sealed.startswith(first.encode()) and b"//fastseg-sha256:" in sealed[-90:]
    assert R._bundle() == first  # read back
    for damage in (b"garbage", b"\xff\xfe\x00", sealed[:1000], sealed.replace(b"vega", b"vegb", 1)):
        files[0].write_bytes(damage)  # damaged: made again, and replaced
        assert R._bundle() == first
        assert files[0].read_bytes() == sealed
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("FASTSEG_CACHE_DIR", str(blocked / "sub"))  # cannot be created
    assert R._bundle() == first


def test_a_folder_without_summary_is_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["b"], copy)
    (copy / "summary.csv").unlink()
    res = runner.invoke(app, ["report", str(copy), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"error: {copy}: no summary.csv in this run folder; the report needs a folder written by "
        "`fastseg run --out` (run it again to make one)"
    )
    assert not (tmp_path / "x.html").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({"overlaps.csv": ""}, "overlaps.csv: cannot be read as the file fastseg wrote"),
        ({"summary.csv": "segment,customers\nvip,lots\n"}, "summary.csv: cannot be read"),
        ({"summary.csv": "name,count\nvip,3\n"}, "no column 'segment', 'customers'"),
        (
            {
                "changes.csv": "segment,status,before,after,joined,left,stayed\nvip,kept,1,2,three,0,1\n"
            },
            "changes.csv: cannot be read",
        ),
        ({"transitions.csv": "before,after\nx,y\n"}, "transitions.csv: cannot be read"),
        ({"overlaps.csv": "FIRST_TWO_LINES"}, "overlaps.csv has no row for segment"),
    ],
)
def test_damaged_files_are_one_line(
    runs: dict[str, Path], tmp_path: Path, damage: dict[str, str], message: str
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["b"], copy)
    for name, text in damage.items():
        if text == "FIRST_TWO_LINES":
            text = "".join((copy / name).read_text().splitlines(keepends=True)[:2])
        (copy / name).write_text(text)
    res = runner.invoke(app, ["report", str(copy), "--out", str(tmp_path / "x.html")])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert message in lines[0]
    assert not (tmp_path / "x.html").exists()


def test_run_json_of_another_shape_still_gives_a_page(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["b"], copy)
    meta = json.loads((copy / "run.json").read_text())
    scored = meta.pop("scored")
    meta["customers"] = "many"
    meta["orders"] = {"rows_read": "<b>x</b>", "left_out": ["a"]}
    meta["inputs"] = "not a list"
    meta["timings_seconds"] = {"orders": "fast"}
    meta["previous"] = {"notes": "one string", "customers": 3}
    (copy / "run.json").write_text(json.dumps(meta))
    rep = fastseg.report(copy, out=tmp_path / "x.html")
    page = rep.path.read_text()
    assert f"{scored:,}" in page  # scored customers counted from the scores
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert '<p class="note">o</p>' not in page  # a string is not a list of notes


def _small_run(tmp_path: Path, o: pl.DataFrame, **options: object) -> R.ReportData:
    fastseg.run(o, out=tmp_path / "r", report=True, **options)
    return R.collect_folder(open_run(tmp_path / "r"))


def test_zero_revenue_and_all_prospects(tmp_path: Path) -> None:
    o = orders_frame(2, 50, dt.date(2026, 6, 1)).with_columns(pl.lit(0.0).alias("amount"))
    data = _small_run(tmp_path / "zero", o)
    assert data.groups["share_revenue"].is_null().all()
    assert "report.html" in os.listdir(tmp_path / "zero" / "r")
    refunds = orders_frame(2, 50, dt.date(2026, 6, 1)).with_columns(-pl.col("amount").abs())
    data = _small_run(
        tmp_path / "refunds",
        refunds,
        method="thresholds",
        thresholds=["r=30,90,180,365", "f=2,3,5,8", "m=0,1,2,3"],
    )
    page = (tmp_path / "refunds" / "r" / "report.html").read_text()
    assert "Customer segments" in page


@pytest.mark.parametrize("bins", [3, 10])
def test_the_grid_has_the_runs_levels(tmp_path: Path, bins: int) -> None:
    data = _small_run(tmp_path, orders_frame(6, 400, dt.date(2026, 6, 1)), bins=bins)
    assert R._levels(data) == bins
    spec = R.chart_specs(data)["chart-grid"]
    assert spec["layer"][0]["encoding"]["x"]["scale"]["domain"] == list(range(1, bins + 1))
    page = (tmp_path / "r" / "report.html").read_text()
    assert f"({bins}: most recent)" in page


def test_thresholds_explain_empty_levels_without_ties(tmp_path: Path) -> None:
    o = orders_frame(6, 200, dt.date(2026, 6, 1))
    _small_run(
        tmp_path,
        o,
        method="thresholds",
        thresholds=["r=1000,2000,3000,4000", "f=1000,2000,3000,4000", "m=10,20,30,40"],
    )
    page = (tmp_path / "r" / "report.html").read_text()
    assert "falls in that range of the thresholds" in page
    assert "quantile cut" not in page


def test_bar_labels_say_what_the_end_bars_hold() -> None:
    v = pl.Series(np.r_[np.arange(1.0, 1001.0), [5000.0]])
    d = R._histogram(v, "frequency", "F", "orders", integer=True, no_orders=0)
    labels = d.bins["range"].to_list()
    assert labels[0].startswith("up to ")  # the lowest 0.1% folded in
    assert labels[-1].endswith(" and more")  # 5,000 is in the last bar
    assert labels[1] == f"{int(d.bins['lo'][1]):,}–{int(d.bins['hi'][1]) - 1:,}"
    m = R._histogram(
        pl.Series([1.0] * 10 + [2.0] + [3.5] * 10),
        "monetary",
        "M",
        "revenue",
        integer=False,
        no_orders=0,
    )
    assert m.bins["range"][0] == "1.00 to under " + f"{m.bins['hi'][0]:,.2f}"
    assert m.bins["range"][-1] == f"{m.bins['lo'][-1]:,.2f} to 3.50"
