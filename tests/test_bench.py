"""`fastseg bench`: the runner, its self-check, its sizing fit, the baseline recipes and the CLI.

The smoke runs use tiny sizes (2e4 and 4e4 orders, one repetition): they check the structure of
the report, the verification flag, the sizing output and the ratios, never timings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from fastseg import api, synthetic
from fastseg.bench import baselines
from fastseg.bench import stages as bench
from fastseg.bench import whole as bench_whole
from fastseg.cli import app
from fastseg.errors import DataError, FastsegError, ParameterError

runner = CliRunner()


def _one_line_error(result, *fragments: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for frag in fragments:
        assert frag in text, (frag, text)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> synthetic.SyntheticDataset:
    return synthetic.generate(
        tmp_path_factory.mktemp("bench-data"),
        orders=30_000,
        seed=3,
        with_customers=False,
        with_events=False,
    )


# ------------------------------------------------------------------------------ smoke runs


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict]:
    """`fastseg bench` with baselines and a target, through the CLI."""
    out = tmp_path_factory.mktemp("bench-smoke") / "report.json"
    result = runner.invoke(
        app,
        ["bench", "--orders", "2e4,4e4", "--repeat", "1", "--baselines", "--json", str(out),
         "--target-orders", "2e9", "--target-customers", "8e7"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text())


def test_smoke_report_structure(smoke) -> None:  # noqa: ANN001
    _, rep = smoke
    assert rep["format"] == "fastseg.bench" and rep["format_version"] == 1
    env = rep["environment"]
    for key in ("cpu", "cores_logical", "memory_bytes", "os", "python", "polars_version",
                "numba_version", "fastseg_version", "numba_threads"):  # fmt: skip
        assert env[key] not in (None, ""), key
    assert rep["parameters"]["orders"] == [20_000, 40_000]
    assert [r["orders"] for r in rep["runs"]] == [20_000, 40_000]
    for run in rep["runs"]:
        assert set(run["stages"]) == set(bench.STAGES)
        assert 0 < run["customers"] <= run["orders"]
        for st in run["stages"].values():
            assert st["first_s"] >= 0 and st["median_s"] >= 0 and len(st["runs_s"]) == 1
            assert st["peak_rss_bytes"] > 0 and st["peak_increase_bytes"] >= 0
        job = run["job"]
        assert job["median_s"] == pytest.approx(
            sum(st["median_s"] for st in run["stages"].values() if st["in_total"])
        )
        assert run["read_to_scores"]["stages"] == ["orders", "features", "scoring"]
        assert run["peak_rss_bytes"] >= run["read_to_scores"]["peak_rss_bytes"] > 0
        assert run["segments"] > 0


def test_smoke_verified(smoke) -> None:  # noqa: ANN001
    _, rep = smoke
    assert rep["verified"] is True
    for run in rep["runs"]:
        v = run["verification"]
        assert v["ok"] and v["customers"] and v["features"] and v["scores"] and v["segments"]
        assert (
            v["sample"] == 1000
            and v["scores_checked"] == run["customers"]
            and v["segments_checked"] > 0
        )
        assert v["mismatches"] == []


def test_smoke_baselines_and_ratios(smoke) -> None:  # noqa: ANN001
    result, rep = smoke
    for run in rep["runs"]:
        assert set(run["baselines"]) == set(baselines.RECIPES)
        for b in run["baselines"].values():
            assert b["customers"] == run["customers"]
            assert b["speedup"] == pytest.approx(b["median_s"] / run["read_to_scores"]["median_s"])
            assert b["memory_ratio"] == pytest.approx(
                run["read_to_scores"]["peak_rss_bytes"] / b["peak_rss_bytes"]
            )
    comp = rep["comparison"]["40000"]
    assert comp["fastest_baseline"] in baselines.RECIPES and comp["speedup_vs_fastest"] > 0
    text = " ".join(result.output.split())
    for frag in (
        "read→scores",
        "pandas",
        "duckdb",
        "fastseg memory",
        "verified against plain numpy/Polars",
    ):
        assert frag in text, frag


def test_smoke_sizing(smoke) -> None:  # noqa: ANN001
    result, rep = smoke
    sizing = rep["sizing"]
    assert set(sizing["time_models"]) == set(bench.STAGES)
    target = sizing["target"]
    assert target["orders"] == 2_000_000_000 and target["customers"] == 80_000_000
    assert target["job_seconds"] > 0 and target["peak_rss_bytes"] > 0
    assert target["memory_needed_bytes"] > target["peak_rss_bytes"]
    assert target["fits_this_machine"] is (
        target["memory_needed_bytes"] <= rep["environment"]["memory_bytes"]
    )
    text = " ".join(result.output.split())
    assert "predicted on this machine for 2,000,000,000 orders" in text
    assert "memory to hold the job" in text
    if not target["fits_this_machine"]:
        assert "does NOT fit" in text and "--memory-limit" in text


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[bench.BenchReport, dict, list[dict]]:
    """One size, no baselines, 7 synthetic segments, through the API; keeps the worker's output."""
    raws: list[dict] = []
    real = bench._run_job_worker

    def keep(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raws.append(real(*args, **kwargs))
        return json.loads(json.dumps(raws[-1]))

    out = tmp_path_factory.mktemp("bench-plain") / "r.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "_run_job_worker", keep)
        rep = bench.run_bench("2e4", repeat=1, segments=7, warmup=False, json_path=out)
    return rep, json.loads(out.read_text()), raws


def test_run_without_baselines_synthetic_segments(plain) -> None:  # noqa: ANN001
    rep, data, _ = plain
    assert rep.verified and data["verified"]
    assert "baselines" not in data["runs"][0] and "comparison" not in data
    assert data["runs"][0]["segments"] == 7
    assert "proportional" in data["sizing"]["time_models"]["orders"]["kind"]
    assert any("one size measured" in n for n in data["sizing"]["notes"])
    assert "target" not in data["sizing"]
    assert rep.baseline_rows() == [] and len(rep.stage_rows()) == len(bench.STAGES) + 2


def test_mismatch_is_an_error(plain, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: ANN001
    raw = json.loads(json.dumps(plain[2][0]))
    raw["verification"]["ok"] = False
    raw["verification"]["mismatches"] = ["r_score: 3 customers differ"]
    monkeypatch.setattr(bench, "_run_job_worker", lambda *a, **k: raw)
    out = tmp_path / "r.json"
    with pytest.raises(
        DataError, match="does not match the reference.*r_score: 3 customers differ"
    ):
        bench.run_bench("2e4", repeat=1, segments=7, warmup=False, json_path=out)
    assert json.loads(out.read_text())["verified"] is False  # the report is still written


# ------------------------------------------------------------------------------ the pieces


def test_bench_pipeline_equals_run_job(data: synthetic.SyntheticDataset, tmp_path: Path) -> None:
    """The stage-by-stage pipeline of the bench is the main job: same scores, same segments."""
    meter = bench._Meter(0, lambda line: None)
    scores, _compiled, seg = bench._job_once(str(data.orders), "builtin", tmp_path / "out", meter)
    ref = api.run_job(data.orders)
    assert scores.equals(ref.scores)
    assert seg.names == ref.segments.names
    assert seg.sizes.tolist() == ref.segments.sizes.tolist()
    assert set(meter.seconds) == set(bench.STAGES)
    assert (tmp_path / "out" / "scores.parquet").exists()


def test_verify_scores_accepts_and_catches(data: synthetic.SyntheticDataset) -> None:
    scores = api.score(data.orders)
    good = bench.verify_scores(scores, data.orders, sample=200)
    assert good["ok"] and good["features"] and good["scores"] and good["customers"]
    i = int(np.flatnonzero(scores["r_score"].fill_null(0).to_numpy() == 3)[0])
    bad_score = scores.with_columns(scores["r_score"].scatter(i, 4))
    v = bench.verify_scores(bad_score, data.orders, sample=200)
    assert not v["ok"] and not v["scores"] and "r_score: 1 customers differ" in v["mismatches"][0]
    bad_feat = scores.with_columns(pl.col("monetary") + 0.01)
    v = bench.verify_scores(bad_feat, data.orders, sample=50)
    assert not v["ok"] and not v["features"]
    v = bench.verify_scores(scores.head(scores.height - 1), data.orders, sample=50)
    assert not v["customers"]


def test_verify_scores_segments(data: synthetic.SyntheticDataset) -> None:
    res = api.run_job(data.orders)
    from fastseg.rules.compile import compile_catalog

    compiled = compile_catalog(api.load_rules(), res.scores.schema, res.as_of, sources=res.sources)
    v = bench.verify_scores(
        res.scores, data.orders, sample=20, segments=res.segments, compiled=compiled
    )
    assert v["ok"] and v["segments"] and v["segments_checked"] == min(50, len(res.segments.names))
    res.segments.sizes[0] += 1
    v = bench.verify_scores(
        res.scores, data.orders, sample=20, segments=res.segments, compiled=compiled
    )
    assert not v["ok"] and not v["segments"]


def test_rank_scores_is_the_formula() -> None:
    vals = np.array([3.0, 1.0, 3.0, 2.0, 5.0, 1.0, 4.0])
    n, k = vals.size, 5
    expect = [1 + (k * sum(v < x for v in vals)) // n for x in vals]
    assert bench._rank_scores(vals, k).tolist() == expect


def test_fit_cost_recovers_linear_models() -> None:
    pts = [
        (1e6, 1e5, 0.2 + 3e-7 * 1e6 + 2e-6 * 1e5),
        (1e7, 1e6, 0.2 + 3.0 + 2.0),
        (1e7, 4e6, 0.2 + 3.0 + 8.0),
    ]
    m = bench.fit_cost(pts)
    assert m["kind"] == "a + b*orders + c*customers"
    assert m["intercept"] == pytest.approx(0.2) and m["per_order"] == pytest.approx(3e-7)
    assert m["per_customer"] == pytest.approx(2e-6)
    # collinear: only the driver
    m = bench.fit_cost([(1e6, 1e5, 1.0), (2e6, 2e5, 1.5), (4e6, 4e5, 2.5)], driver="customers")
    assert m["kind"].startswith("a + b*customers") and m["per_order"] == 0
    assert m["intercept"] == pytest.approx(0.5) and m["per_customer"] == pytest.approx(5e-6)
    # one point: proportional
    m = bench.fit_cost([(1e6, 1e5, 2.0)])
    assert (
        m["intercept"] == 0
        and m["per_order"] == pytest.approx(2e-6)
        and "proportional" in m["kind"]
    )
    # never negative: a decreasing series falls back to a non-negative fit
    m = bench.fit_cost([(1e6, 1e5, 3.0), (2e6, 2e5, 1.0)])
    assert m["intercept"] >= 0 and m["per_order"] >= 0 and m["per_customer"] >= 0


def test_parse_sizes_and_parameters() -> None:
    assert bench.parse_sizes("3e7, 1e6,1_000_000") == [1_000_000, 30_000_000]
    assert bench.parse_sizes([20000, "4e4"]) == [20_000, 40_000]
    for bad in ("", "abc", "1.5", "0", "-1e6", "1e11", "nan"):
        with pytest.raises(ParameterError, match="orders"):
            bench.parse_sizes(bad)
    with pytest.raises(ParameterError, match="customers_per_order"):
        bench.run_bench("1e4", customers_per_order=0)
    with pytest.raises(ParameterError, match="segments"):
        bench.run_bench("1e4", segments="many")
    with pytest.raises(ParameterError, match="repeat"):
        bench.run_bench("1e4", repeat=0)
    with pytest.raises(ParameterError, match="target_orders"):
        bench.run_bench("1e4", target_orders=-5)


def test_synthetic_rules_compile_against_scores(data: synthetic.SyntheticDataset) -> None:
    from fastseg.rules.compile import compile_catalog

    scores = api.score(data.orders)
    cat = bench.synthetic_rules(40, seed=1)
    assert len(cat) == 40 and bench.synthetic_rules(40, seed=1) == cat
    compiled = compile_catalog(cat, scores.schema, scores["last_order_date"].max(), missing="error")
    assert len(compiled.segments) == 40 and not compiled.skipped
    with pytest.raises(ParameterError):
        bench.synthetic_rules(0)


# ------------------------------------------------------------------------------ baselines


def test_polars_recipe_equals_fastseg(data: synthetic.SyntheticDataset) -> None:
    fs = api.score(data.orders).filter(pl.col("frequency") > 0)
    out = baselines.rfm_polars(data.orders).sort("customer_id")
    cols = ["customer_id", "recency_days", "frequency", "r_score", "f_score", "m_score"]
    assert out.select(cols).equals(fs.select(cols))
    assert np.allclose(out["monetary"].to_numpy(), fs["monetary"].to_numpy(), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("recipe", ["pandas", "duckdb"])
def test_other_recipes_same_features_equal_bins(
    data: synthetic.SyntheticDataset, recipe: str
) -> None:
    fs = api.score(data.orders).filter(pl.col("frequency") > 0)
    raw = baselines.run_recipe(recipe, data.orders)
    out = (pl.from_pandas(raw) if recipe == "pandas" else pl.from_arrow(raw)).sort("customer_id")
    assert list(out.columns) == list(baselines.COLUMNS)
    assert out["customer_id"].equals(fs["customer_id"])
    assert out["recency_days"].cast(pl.Int64).equals(fs["recency_days"])
    assert out["frequency"].cast(pl.Int64).equals(fs["frequency"])
    assert np.allclose(out["monetary"].to_numpy(), fs["monetary"].to_numpy(), rtol=1e-12, atol=1e-9)
    n = out.height
    for col in ("r_score", "f_score", "m_score"):
        counts = out[col].cast(pl.Int64).value_counts().sort(col)
        assert counts[col].to_list() == [1, 2, 3, 4, 5]
        assert all(
            n // 5 <= c <= -(-n // 5) for c in counts["count"]
        )  # equal-size bins: ties split


def test_missing_optional_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def fake(name: str, *a, **k):  # noqa: ANN002, ANN003, ANN202
        if name == "duckdb":
            raise ImportError("No module named 'duckdb'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(FastsegError, match=r"pip install 'fastseg\[bench\]'"):
        baselines.require("duckdb")
    with pytest.raises(FastsegError, match="unknown baseline recipe"):
        baselines.require("spark")


# ------------------------------------------------------------------------------ CLI errors


def test_cli_errors_are_one_line() -> None:
    _one_line_error(runner.invoke(app, ["bench", "--orders", "lots"]), "error:", "orders", "1e6")
    _one_line_error(
        runner.invoke(app, ["bench", "--orders", "1e4", "--segments", "all"]), "segments", "builtin"
    )
    result = runner.invoke(app, ["bench", "--orders", "1e4", "--customers-per-order", "2"])
    _one_line_error(result, "customers_per_order")


# ------------------------------------------------------------------------------ whole process


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict, Path]:
    """`fastseg bench --whole-process` at 2,000 orders, one round, two shapes, through the CLI."""
    tmp = tmp_path_factory.mktemp("bench-whole")
    out, data_dir = tmp / "whole.json", tmp / "data"
    result = runner.invoke(
        app,
        ["bench", "--whole-process", "--orders", "2000", "--shapes", "uuid,sparse", "--repeat",
         "1", "--data-dir", str(data_dir), "--workdir", str(tmp / "work"), "--json", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text()), data_dir


def test_whole_process_report(whole) -> None:  # noqa: ANN001
    result, rep, data_dir = whole
    assert rep["format"] == "fastseg.bench.whole_process" and rep["verified"] is True
    assert rep["parameters"]["shapes"] == ["sparse", "uuid"]  # in the order of SHAPES
    assert rep["parameters"]["contenders"] == list(bench_whole.CONTENDERS)
    assert set(rep["recipes"]) == {"polars", "duckdb", "pandas"}
    assert "git_commit" in rep["source"] or "fastseg_path" in rep["source"]
    assert [r["shape"] for r in rep["runs"]] == ["sparse", "uuid"]
    for run in rep["runs"]:
        assert run["orders"] == 2000 and Path(run["file"]).is_relative_to(data_dir)
        for name, c in run["contenders"].items():
            assert "error" not in c, (name, c)
            assert len(c["runs_s"]) == 1 and c["warmup_s"] > 0
            assert c["median_s"] == pytest.approx(c["runs_s"][0]) and c["median_s"] > 0
            assert c["peak_rss_bytes"] == c["runs"][0]["peak_rss_bytes"] > 10 * 2**20
        fs = run["contenders"]["fastseg"]
        per = run["ratios"]["per_contender"]
        for name in ("polars", "duckdb", "pandas"):
            c = run["contenders"][name]
            assert per[name]["speedup"] == pytest.approx(c["median_s"] / fs["median_s"])
            assert per[name]["memory_ratio"] == pytest.approx(
                fs["peak_rss_bytes"] / c["peak_rss_bytes"]
            )
        best = min(("polars", "duckdb"), key=lambda n: run["contenders"][n]["median_s"])
        assert run["ratios"]["vs_best"] == {"contender": best, **per[best]}
    text = " ".join(result.output.split())
    for frag in ("spawn to exit", "sparse", "uuid", "fastseg vs best", "outputs checked"):
        assert frag in text, frag


def test_whole_process_outputs_agree(whole) -> None:  # noqa: ANN001
    _, rep, _ = whole
    for run in rep["runs"]:
        v = run["verification"]
        assert v["ok"] and v["mismatches"] == [] and run["customers_scored"] == v["customers"] > 0
        counts = {n: c["score_counts"] for n, c in v["contenders"].items()}
        for name, c in v["contenders"].items():
            assert c["customers"] == v["customers"], name
            assert c["scores_in_range"] and c["scores_monotone"], name
            if name != "fastseg":
                assert c["same_customers"] and c["same_values"], name
            for s in ("r_score", "f_score", "m_score"):
                assert sum(counts[name][s]) == v["customers"] and counts[name][s][-1] == 0
        assert v["contenders"]["polars"]["same_scores"]
        assert counts["polars"] == counts["fastseg"]  # the same tie rule
        n = v["customers"]
        for name in ("duckdb", "pandas"):  # equal-size bins, ties split
            assert all(n // 5 <= c <= -(-n // 5) for c in counts[name]["m_score"][:5]), name


def test_whole_process_data_cached(whole) -> None:  # noqa: ANN001
    _, rep, data_dir = whole
    assert all(not r["data_cached"] for r in rep["runs"])
    again = bench_whole.prepare_shape("uuid", 2000, customers=200, seed=0, data_dir=data_dir)
    assert again.cached and str(again.path) == rep["runs"][1]["file"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bench_whole.ShapeFile]:
    root = tmp_path_factory.mktemp("shapes")
    return {
        s: bench_whole.prepare_shape(s, 3000, customers=400, seed=5, data_dir=root)
        for s in bench_whole.SHAPES
    }


def test_shapes_are_the_same_orders(shapes) -> None:  # noqa: ANN001
    dense = pl.read_parquet(shapes["dense"].path)
    assert dense.height == 3000 and dense["order_ts"].is_sorted()
    ids = dense["customer_id"]
    for name in ("sparse", "store13", "uuid"):
        df = pl.read_parquet(shapes[name].path)
        assert df.columns == dense.columns and df.height == dense.height, name
        # the same rows up to the id map: sorted by order id, all other columns equal
        same = df.sort("order_id")
        assert same.drop("customer_id").equals(dense.drop("customer_id")), name
        mapped = pl.DataFrame({"a": ids, "b": same["customer_id"]}).unique()
        assert mapped["a"].n_unique() == mapped["b"].n_unique() == mapped.height, name
    sparse = pl.read_parquet(shapes["sparse"].path)
    assert not sparse["order_id"].is_sorted()  # shuffled
    assert sparse["customer_id"].max() > 2**40 and sparse["customer_id"].min() >= 0
    store = pl.read_parquet(shapes["store13"].path)
    assert store["order_ts"].is_sorted()
    assert store["customer_id"].cast(pl.String).str.len_chars().unique().to_list() == [13]
    pairs = pl.DataFrame({"a": ids, "b": store["customer_id"]}).unique().sort("a")
    assert pairs["b"].is_sorted()  # increasing with the original (signup) ids
    uid = pl.read_parquet(shapes["uuid"].path)["customer_id"]
    assert uid.str.contains(
        r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
    ).all()
    csv = pl.read_csv(shapes["csv"].path, try_parse_dates=True)
    assert csv.drop("order_ts").equals(sparse.drop("order_ts"))
    assert (csv["order_ts"].cast(pl.Datetime("us")) == sparse["order_ts"]).all()
    tiny = pl.read_parquet(shapes["tiny"].path)
    assert tiny.height == bench_whole.TINY_ORDERS


def test_shapes_are_deterministic(shapes, tmp_path: Path) -> None:  # noqa: ANN001
    for name in ("sparse", "uuid"):
        again = bench_whole.prepare_shape(name, 3000, customers=400, seed=5, data_dir=tmp_path)
        assert not again.cached
        assert pl.read_parquet(again.path).equals(pl.read_parquet(shapes[name].path)), name
    other = bench_whole.prepare_shape("sparse", 3000, customers=400, seed=6, data_dir=tmp_path)
    assert not pl.read_parquet(other.path).equals(pl.read_parquet(shapes["sparse"].path))


def test_measure_process_peak_is_the_childs(tmp_path: Path) -> None:
    import sys

    ballast = bytearray(300 * 2**20)  # this process grows; a child must not inherit its peak
    small = bench_whole.measure_process([sys.executable, "-c", "pass"], tmp_path / "a")
    big = bench_whole.measure_process(
        [sys.executable, "-c", "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
        tmp_path / "b",
    )
    del ballast
    assert small.error is None and small.exit == 0 and small.wall_s > 0
    assert small.peak_rss_bytes < 100 * 2**20 < 200 * 2**20 <= big.peak_rss_bytes
    fail = bench_whole.measure_process(
        [sys.executable, "-c", "import sys; sys.exit('no such column: order_ts')"], tmp_path / "c"
    )
    assert fail.exit == 1 and fail.error == "no such column: order_ts"


def test_verify_outputs_catches(tmp_path: Path) -> None:
    n = 50
    ref = pl.DataFrame(
        {
            "customer_id": np.arange(n) * 7,
            "recency_days": np.arange(n)[::-1],
            "frequency": np.ones(n, np.int64) + np.arange(n) // 10,
            "monetary": np.arange(n) * 1.5,
        }
    )
    rank = lambda x: (1 + 5 * (x.rank("min") - 1) // n).cast(pl.UInt8)  # noqa: E731
    ref = ref.with_columns(
        r_score=rank(-pl.col("recency_days")),
        f_score=rank(pl.col("frequency")),
        m_score=rank(pl.col("monetary")),
    )
    paths = {"fastseg": tmp_path / "f.parquet", "polars": tmp_path / "p.parquet"}
    ref.write_parquet(paths["fastseg"])
    ref.write_parquet(paths["polars"])
    assert bench_whole.verify_outputs(paths)["ok"]
    ref.with_columns(ref["frequency"].scatter(3, 9)).write_parquet(paths["polars"])
    v = bench_whole.verify_outputs(paths)
    assert not v["ok"] and "recency/frequency/monetary differ" in v["mismatches"][0]
    ref.with_columns(ref["m_score"].scatter(0, 5)).write_parquet(paths["polars"])
    v = bench_whole.verify_outputs(paths)
    assert not v["ok"] and not v["contenders"]["polars"]["same_scores"]
    assert not v["contenders"]["polars"]["scores_monotone"]
    ref.head(n - 1).write_parquet(paths["polars"])
    assert not bench_whole.verify_outputs(paths)["contenders"]["polars"]["same_customers"]


def test_verify_outputs_allows_float_ties(tmp_path: Path) -> None:
    """Equal totals summed in another order can differ in the last bit and so not tie."""
    n = 50
    money = np.arange(n) * 1.5
    money[10] = money[9]  # a tie across the edge between levels 1 and 2
    other = money.copy()
    other[10] = np.nextafter(money[9], np.inf)  # the same total, one ulp apart

    def frame(m: np.ndarray) -> pl.DataFrame:
        df = pl.DataFrame(
            {
                "customer_id": np.arange(n),
                "recency_days": np.arange(n),
                "frequency": np.ones(n, np.int64),
                "monetary": m,
            }
        )
        return df.with_columns(
            r_score=(1 + 5 * ((-pl.col("recency_days")).rank("min") - 1) // n).cast(pl.UInt8),
            f_score=pl.lit(1, pl.UInt8),
            m_score=(1 + 5 * (pl.col("monetary").rank("min") - 1) // n).cast(pl.UInt8),
        )

    paths = {"fastseg": tmp_path / "f.parquet", "polars": tmp_path / "p.parquet"}
    frame(money).write_parquet(paths["fastseg"])
    frame(other).write_parquet(paths["polars"])
    assert frame(money)["m_score"][10] != frame(other)["m_score"][10]
    v = bench_whole.verify_outputs(paths)
    assert v["ok"], v["mismatches"]
    assert v["contenders"]["polars"]["scores_differing_by_float_ties"] == 1


def test_whole_process_cli_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "--whole-process", "--baselines"])
    assert result.exit_code == 2 and "cannot be combined" in result.output
    _one_line_error(
        runner.invoke(app, ["bench", "--whole-process", "--shapes", "dense,parquet"]),
        "shapes",
        "'parquet'",
    )
    _one_line_error(
        runner.invoke(app, ["bench", "--whole-process", "--contenders", "spark"]), "contenders"
    )
    with pytest.raises(ParameterError, match="repeat"):
        bench_whole.run_whole_process("1e3", repeat=0, data_dir=tmp_path)
    result = runner.invoke(app, ["bench", "--memory-limit", "2GB"])
    assert result.exit_code == 2 and "goes with --whole-process" in result.output
    result = runner.invoke(app, ["bench", "--whole-process", "--memory-limit", "lots"])
    assert result.exit_code != 0 and "expected a size" in result.output


def test_recipe_scripts_run_standalone(data: synthetic.SyntheticDataset, tmp_path: Path) -> None:
    """Each script is what its in-process recipe computes, run as `python script IN OUT`."""
    import subprocess
    import sys

    scripts = baselines.write_scripts(tmp_path)
    fs = api.score(data.orders).filter(pl.col("frequency") > 0)
    for name, script in scripts.items():
        out = tmp_path / f"{name}.parquet"
        subprocess.run([sys.executable, str(script), str(data.orders), str(out)], check=True)
        df = pl.read_parquet(out).sort("customer_id")
        assert df.columns == list(baselines.COLUMNS), name
        assert df["customer_id"].equals(fs["customer_id"]), name
        assert df["frequency"].cast(pl.Int64).equals(fs["frequency"]), name
        assert df["recency_days"].cast(pl.Int64).equals(fs["recency_days"]), name


@pytest.mark.slow
def test_whole_process_every_shape(tmp_path: Path) -> None:
    """Every shape and contender at 20,000 orders, two rounds: all outputs agree."""
    rep = bench_whole.run_whole_process(
        "2e4", repeat=2, data_dir=tmp_path / "data", workdir=tmp_path, json_path=tmp_path / "r.json"
    )
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["verified"] and [r["shape"] for r in data["runs"]] == list(bench_whole.SHAPES)
    assert data["runs"][0]["orders"] == bench_whole.TINY_ORDERS
    for run in data["runs"]:
        assert all(len(c["runs_s"]) == 2 for c in run["contenders"].values())
        assert run["ratios"]["vs_best"]["contender"] in ("polars", "duckdb")
    assert len(rep.rows()) == len(bench_whole.SHAPES)


def test_whole_process_memory_limit_line(tmp_path: Path) -> None:
    """`--memory-limit` goes to fastseg's command and the summary says peak against limit."""
    result = runner.invoke(
        app,
        [
            "bench",
            "--whole-process",
            "--shapes",
            "tiny",
            "--contenders",
            "fastseg",
            "--repeat",
            "1",
            "--memory-limit",
            "1GB",
            "--data-dir",
            str(tmp_path / "d"),
            "--workdir",
            str(tmp_path / "w"),
            "--json",
            str(tmp_path / "r.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "tiny: fastseg --memory-limit 1GB: peak RSS" in text and "under the limit" in text
    import json

    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["parameters"]["memory_limit"] == "1GB"
