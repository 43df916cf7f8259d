"""fastseg cluster: the model against plain references (a hand-written transform, scikit-learn's
own MiniBatchKMeans and silhouette score), persistence, determinism, the customers left out, the
edge cases, the CLI's one-line errors and the rules integration."""

from __future__ import annotations

import builtins
import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import fastseg
from fastseg.cli import app
from fastseg.clustering import (
    MISSING_LABEL,
    PROSPECTS_LABEL,
    ClusterModel,
    _unique_labels,
    nearest,
    silhouette_scores,
)
from fastseg.config import SKEW_RATIO
from fastseg.errors import DataError, MissingDependencyError, ParameterError, SchemaError

runner = CliRunner()

#: three well-separated groups in RFM space: (recency_days, frequency, monetary)
BLOBS = ((8, 30, 4000.0), (150, 6, 400.0), (700, 1, 30.0))


def blobs(n_per: int = 300, seed: int = 1, prospects: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rec, freq, mon = [], [], []
    for r, f, m in BLOBS:
        rec += list(np.maximum(0, rng.normal(r, r * 0.08 + 1, n_per)).round().astype(int))
        freq += list(np.maximum(1, rng.normal(f, f * 0.08, n_per)).round().astype(int))
        mon += list(rng.normal(m, m * 0.08, n_per))
    n = len(rec)
    return pl.DataFrame(
        {
            "customer_id": list(range(1, n + prospects + 1)),
            "recency_days": rec + [None] * prospects,
            "frequency": freq + [0] * prospects,
            "monetary": mon + [0.0] * prospects,
        },
        schema_overrides={"recency_days": pl.Int64, "frequency": pl.Int64},
    )


def hand_transform(x: np.ndarray) -> tuple[np.ndarray, list[bool]]:
    """The documented transform, written out: skewed columns (p99 of the positive values at
    least SKEW_RATIO times their median) through sign(x)*log1p(|x|), then standardized."""
    cols, skewed = [], []
    for j in range(x.shape[1]):
        v = x[:, j]
        pos = v[v > 0]
        sk = pos.size > 0 and np.quantile(pos, 0.99) / np.median(pos) >= SKEW_RATIO
        skewed.append(bool(sk))
        cols.append(np.sign(v) * np.log1p(np.abs(v)) if sk else v)
    t = np.column_stack(cols)
    sd = t.std(axis=0)
    sd[sd == 0] = 1.0
    return (t - t.mean(axis=0)) / sd, skewed


# ------------------------------------------------------------------------------------ references


def test_transform_equals_a_hand_written_numpy_transform() -> None:
    frame = blobs()
    # a heavy tail and refunds in monetary: skewed, and negatives keep their sign
    frame = frame.with_columns(
        pl.when(pl.col("customer_id") % 50 == 0)
        .then(-pl.col("monetary"))
        .when(pl.col("customer_id") % 25 == 1)
        .then(pl.col("monetary") * 60)
        .otherwise(pl.col("monetary"))
    )
    model = ClusterModel(k=3).fit(frame)
    x = frame.select("recency_days", "frequency", "monetary").to_numpy().astype(float)
    expected, skewed = hand_transform(x)
    assert model.transforms_ == tuple("signed_log1p" if s else "identity" for s in skewed)
    assert "signed_log1p" in model.transforms_
    np.testing.assert_allclose(model.transform(frame), expected, rtol=1e-12, atol=1e-12)


def test_assignment_equals_sklearn_predict_on_the_transformed_data() -> None:
    from sklearn.cluster import MiniBatchKMeans

    frame = blobs(seed=3)
    model = ClusterModel(k=4, seed=7).fit(frame)
    z = model.transform(frame)
    km = MiniBatchKMeans(n_clusters=4, random_state=7, n_init=3, batch_size=z.shape[0])
    km.fit(z)
    # the same fit as fastseg's, its clusters renumbered: match the centroids
    perm = [
        int(np.argmin(((km.cluster_centers_ - c) ** 2).sum(axis=1))) for c in model.cluster_centers_
    ]
    np.testing.assert_allclose(km.cluster_centers_[perm], model.cluster_centers_, atol=1e-9)
    sk = km.predict(z)
    ours = model.predict(frame)
    assert (np.asarray(perm)[ours] == sk).all()


def test_nearest_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    z, c = rng.normal(size=(500, 3)), rng.normal(size=(6, 3))
    brute = [min(range(6), key=lambda j, row=row: float(((row - c[j]) ** 2).sum())) for row in z]
    assert nearest(z, c).tolist() == brute


def test_silhouette_scores_equal_sklearn() -> None:
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(2)
    z = rng.normal(size=(700, 3))
    labelings = [rng.integers(0, k, 700).astype(np.int32) for k in (2, 3, 7)]
    labelings.append(np.array([0] * 699 + [1], dtype=np.int32))  # a cluster of one
    ours = silhouette_scores(z, labelings)
    theirs = [silhouette_score(z, lab) for lab in labelings]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    assert silhouette_scores(z, [np.zeros(700, dtype=np.int32)]) == [None]


# ------------------------------------------------------------------------------------ behaviour


def test_model_json_round_trip_assigns_identically() -> None:
    frame = blobs(prospects=5)
    model = ClusterModel(k=3).fit(frame)
    text = model.to_json()
    data = json.loads(text)
    assert data["format"] == "fastseg.cluster_model" and data["version"] == 1
    loaded = ClusterModel.from_json(text)
    assert loaded.to_json() == text
    tomorrow = blobs(seed=9, prospects=2)
    assert model.assign(tomorrow).equals(loaded.assign(tomorrow))
    assert model.assign(frame).equals(loaded.assign(frame))


def test_same_seed_same_clusters() -> None:
    frame = blobs(seed=4)
    a = ClusterModel(k=4, seed=11).fit(frame)
    b = ClusterModel(k=4, seed=11).fit(frame)
    assert a.to_json() == b.to_json()
    assert a.assign(frame).equals(b.assign(frame))


def test_auto_finds_the_planted_k_and_orders_and_labels_the_clusters() -> None:
    frame = blobs(prospects=10)
    res = fastseg.cluster(frame, k="auto")
    assert sorted(res.silhouette) == list(range(2, 9))
    assert res.k == 3
    assert max(res.silhouette, key=lambda k: res.silhouette[k] or -1) == 3
    labels = res.model.cluster_labels_
    assert labels == (
        "recent · frequent · high spend",
        "lapsing · regular · mid spend",
        "lapsed · occasional · low spend",
    )
    prof = res.profile
    means = prof.filter(pl.col("cluster").is_not_null())["mean_monetary"].to_list()
    assert means == sorted(means, reverse=True)  # cluster 0 spends most
    # each planted group is one cluster
    got = res.clusters.head(900)["cluster"].to_list()
    assert got == [0] * 300 + [1] * 300 + [2] * 300
    assert prof["customers"].sum() == frame.height
    assert abs(prof["share"].sum() - 1) < 1e-12
    assert abs(prof["revenue_share"].sum() - 1) < 1e-12


def test_prospects_and_missing_features_are_counted_never_clustered() -> None:
    frame = blobs(prospects=7).with_columns(
        pl.when(pl.col("customer_id").is_in([1, 2, 3]))
        .then(None)
        .otherwise(pl.col("monetary"))
        .alias("monetary")
    )
    res = fastseg.cluster(frame, k=3)
    c = res.clusters
    assert c.height == frame.height
    assert c.schema["cluster"] == pl.Int32
    prospects = c.filter(pl.col("cluster_label") == PROSPECTS_LABEL)
    missing = c.filter(pl.col("cluster_label") == MISSING_LABEL)
    assert prospects.height == 7 and prospects["cluster"].null_count() == 7
    assert sorted(missing["customer_id"]) == [1, 2, 3] and missing["cluster"].null_count() == 3
    assert c["cluster"].null_count() == 10
    prof = res.profile.filter(pl.col("cluster").is_null())
    assert dict(zip(prof["label"], prof["customers"], strict=True)) == {
        PROSPECTS_LABEL: 7,
        MISSING_LABEL: 3,
    }
    assert res.model.n_fit_ == frame.height - 10
    # an empty cluster tomorrow is still a row of the profile
    tomorrow = blobs().filter(pl.col("customer_id") <= 300)
    assert res.model.profile(tomorrow, res.model.assign(tomorrow)).height == 3


@pytest.mark.parametrize(
    ("frame", "k", "fragment"),
    [
        (blobs().head(1), 2, "only one distinct value"),
        (blobs().head(0), 5, "no customer to cluster"),
        (
            blobs().with_columns(
                pl.lit(3).alias("frequency"),
                pl.lit(10).alias("recency_days"),
                pl.lit(5.0).alias("monetary"),
            ),
            "auto",
            "only one distinct value",
        ),
        (blobs().head(3), 5, "use --k 3 or less"),
        (blobs(prospects=4).tail(4), 3, "4 without an order"),
    ],
)
def test_too_little_to_cluster_is_one_line(
    frame: pl.DataFrame, k: int | str, fragment: str
) -> None:
    with pytest.raises(DataError, match=fragment) as exc:
        ClusterModel(k=k).fit(frame)
    assert "\n" not in str(exc.value)


def test_two_distinct_customers_with_auto_use_k_2() -> None:
    frame = pl.DataFrame(
        {
            "customer_id": [1, 2, 3, 4],
            "recency_days": [1, 1, 500, 500],
            "frequency": [9, 9, 1, 1],
            "monetary": [900.0, 900.0, 10.0, 10.0],
        }
    )
    model = ClusterModel(k="auto").fit(frame)
    assert model.k_ == 2 and sorted(model.silhouette_) == [2]
    assert model.predict(frame).tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"k": 1}, "k: expected a whole number from 2 to 100 or 'auto', got 1"),
        ({"k": "many"}, "got 'many'"),
        ({"features": []}, "features: expected column names"),
        ({"features": ["frequency", "frequency"]}, "given twice"),
        ({"features": ["customer_id"]}, "cannot be a feature"),
        ({"seed": -1}, "seed: expected a whole number"),
        ({"k_range": (5, 3)}, "k_range"),
    ],
)
def test_bad_parameters(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        ClusterModel(**kwargs).fit(blobs())


def test_unique_labels() -> None:
    assert _unique_labels(["a", "b", "a", "c", "a"]) == ["a (1)", "b", "a (2)", "c", "a (3)"]


def test_other_features_and_a_bad_feature() -> None:
    frame = blobs().with_columns((pl.col("monetary") / pl.col("frequency")).alias("aov"))
    model = ClusterModel(k=3, features=["recency_days", "aov"]).fit(frame)
    assert all(" · " in lab and "aov" in lab for lab in model.cluster_labels_)
    with pytest.raises(SchemaError, match="feature 'name' is String, not a number"):
        ClusterModel(k=3, features=["name"]).fit(frame.with_columns(pl.lit("x").alias("name")))


def test_from_dict_rejects_other_files() -> None:
    model = ClusterModel(k=3).fit(blobs())
    data = model.to_dict()
    with pytest.raises(ParameterError, match="not a fastseg cluster model"):
        ClusterModel.from_dict({**data, "format": "other"})
    with pytest.raises(ParameterError, match="version 9 is not supported"):
        ClusterModel.from_dict({**data, "version": 9})
    with pytest.raises(ParameterError, match="invalid centroids"):
        ClusterModel.from_dict({**data, "centroids": data["centroids"][:2]})


# ------------------------------------------------------------------------------------ files, CLI


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *fragments: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    # progress lines may come first (stderr); the error is one line, the last
    assert "Traceback" not in text and errors == text.splitlines()[-1:], text
    for frag in fragments:
        assert frag in errors[0], (frag, text)


@pytest.fixture
def scores_file(tmp_path: Path) -> Path:
    path = tmp_path / "scores.parquet"
    blobs(prospects=5).write_parquet(path)
    return path


def test_cli_fits_saves_and_reuses_the_model(scores_file: Path, tmp_path: Path) -> None:
    out, model = tmp_path / "clusters.parquet", tmp_path / "model.json"
    res = invoke("cluster", scores_file, "--k", "auto", "--model-out", model, "--out", out)
    assert res.exit_code == 0, res.output
    assert "silhouette" in res.output and "chose k=3" in res.output
    assert "recent · frequent · high spend" in res.output
    first = pl.read_parquet(out)
    assert first.columns == ["customer_id", "cluster", "cluster_label"]
    again = tmp_path / "again.csv"
    res = invoke("cluster", scores_file, "--model-in", model, "--out", again, "-q")
    assert res.exit_code == 0 and res.output == ""
    assert pl.read_csv(again, schema=first.schema).equals(first)


def test_cli_errors_are_one_line(scores_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.parquet"
    one_line_error(
        invoke("cluster", scores_file, "--features", "recency_days,visits", "--out", out),
        "no column 'visits' for --features",
        "numeric columns: recency_days, frequency, monetary",
    )
    one_line_error(invoke("cluster", scores_file, "--k", "0", "--out", out), "k: expected")
    one_line_error(invoke("cluster", scores_file, "--k", "lots", "--out", out), "'lots'")
    model = tmp_path / "m.json"
    assert invoke("cluster", scores_file, "--model-out", model, "--out", out, "-q").exit_code == 0
    one_line_error(
        invoke(
            "cluster", scores_file, "--model-in", model, "--features", "frequency", "--out", out
        ),
        "--features frequency differs from the model's recency_days,frequency,monetary",
    )
    one_line_error(
        invoke("cluster", scores_file, "--model-in", model, "--k", "3", "--out", out),
        "--k 3 differs from the model's 5",
    )
    one_line_error(
        invoke("cluster", scores_file, "--model-in", model, "--model-out", model, "--out", out),
        "give one",
    )
    one_line_error(invoke("cluster", scores_file, "--out", scores_file), "--out")
    one_line_error(
        invoke("cluster", scores_file, "--model-in", scores_file, "--out", out), "--model-in"
    )


def test_missing_sklearn_names_the_extra(
    scores_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, out = tmp_path / "m.json", tmp_path / "c.parquet"
    assert invoke("cluster", scores_file, "--model-out", model, "--out", out, "-q").exit_code == 0
    real = builtins.__import__

    def no_sklearn(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    one_line_error(
        invoke("cluster", scores_file, "--out", tmp_path / "x.parquet"),
        "fastseg cluster needs scikit-learn: pip install 'fastseg[ml]'",
    )
    assert not (tmp_path / "x.parquet").exists()
    with pytest.raises(MissingDependencyError):
        ClusterModel(k=3).fit(blobs())
    # a saved model assigns without scikit-learn
    res = invoke("cluster", scores_file, "--model-in", model, "--out", tmp_path / "y.parquet", "-q")
    assert res.exit_code == 0, res.output
    assert pl.read_parquet(tmp_path / "y.parquet").equals(pl.read_parquet(out))


def test_a_run_folder_as_input(tmp_path: Path) -> None:
    n = 600
    orders = pl.DataFrame(
        {
            "customer_id": [i % 150 for i in range(n)],
            "order_ts": [
                dt.date(2026, 6, 30) - dt.timedelta(days=(i * 37) % 700) for i in range(n)
            ],
            "amount": [20.0 + (i * 13) % 400 for i in range(n)],
        }
    )
    fastseg.run(orders, out=tmp_path / "run")
    res = fastseg.cluster(tmp_path / "run", k=3, out=tmp_path / "clusters.parquet")
    assert res.clusters.height == 150
    with pytest.raises(SchemaError, match="no column 'visits' for --features"):
        fastseg.cluster(tmp_path / "run", features=["visits"])


# ------------------------------------------------------------------------------------ rules


def test_clusters_in_rules_end_to_end(scores_file: Path, tmp_path: Path) -> None:
    clusters = tmp_path / "clusters.parquet"
    assert invoke("cluster", scores_file, "--k", "3", "--out", clusters, "-q").exit_code == 0
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "[[segment]]\n"
        'name = "best_cluster"\n'
        "rule = \"cluster_label = 'recent · frequent · high spend'\"\n\n"
        "[[segment]]\n"
        'name = "cluster_two_big"\n'
        'rule = "cluster = 2 AND monetary >= 30"\n\n'
        "[[segment]]\n"
        'name = "unclustered"\n'
        "rule = \"cluster_label = 'prospects'\"\n",
        encoding="utf-8",
    )
    seg_out = tmp_path / "segments.parquet"
    res = invoke(
        "segment", scores_file, "--rules", rules, "--no-builtin", "--clusters", clusters,
        "--out", seg_out, "-q",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    got = pl.read_parquet(seg_out)
    c = pl.read_parquet(clusters).join(pl.read_parquet(scores_file), on="customer_id")

    def members(name: str) -> list[int]:
        return sorted(got.filter(pl.col("segment") == name)["customer_id"])

    assert members("best_cluster") == sorted(c.filter(pl.col("cluster") == 0)["customer_id"])
    assert members("cluster_two_big") == sorted(
        c.filter((pl.col("cluster") == 2) & (pl.col("monetary") >= 30))["customer_id"]
    )
    assert members("unclustered") == [901, 902, 903, 904, 905]
    # the API takes the frame too
    seg = fastseg.segment(scores_file, rules, builtin=False, clusters=pl.read_parquet(clusters))
    assert sorted(seg.members("best_cluster").to_list()) == members("best_cluster")


def test_clusters_of_other_customers_are_refused(scores_file: Path, tmp_path: Path) -> None:
    clusters = tmp_path / "clusters.parquet"
    fastseg.cluster(blobs().head(800), k=3, out=clusters)
    rules = tmp_path / "rules.toml"
    rules.write_text('[[segment]]\nname = "c0"\nrule = "cluster = 0"\n', encoding="utf-8")
    one_line_error(
        invoke(
            "segment",
            scores_file,
            "--rules",
            rules,
            "--clusters",
            clusters,
            "--out",
            tmp_path / "s.parquet",
        ),
        "105 of the 905 customers of the scores are not in it",
        "--model-in",
    )
    one_line_error(
        invoke(
            "segment",
            scores_file,
            "--rules",
            rules,
            "--clusters",
            scores_file,
            "--out",
            tmp_path / "s.parquet",
        ),
        "no column 'cluster'",
    )
