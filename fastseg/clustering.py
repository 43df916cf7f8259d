"""Behavioural clusters: k-means over standardized customer features, saved as a model that
assigns tomorrow's customers to the same clusters (``fastseg cluster``, :func:`fastseg.cluster`).

How a customer is placed (docs/clusters.md says the same for users):

- **Who is clustered.** Customers with an order (``frequency >= 1``) whose chosen features are
  all finite numbers. Customers without an order (``frequency`` 0 or null: prospects) get no
  cluster (null) and the label ``prospects``; customers with an order but a null, NaN or infinite
  chosen feature get no cluster and the label ``missing features``. Both are counted in the
  profile, never dropped, and never fed to k-means.
- **Transform.** A feature is *skewed* when, over the customers the model is fit on, the 99th
  percentile of its positive values is at least :data:`~fastseg.config.SKEW_RATIO` (20) times
  their median (the rule the report uses for its log axes). A skewed feature goes through the
  signed log ``sign(x) * log1p(|x|)``: monotone, 0 stays 0, and a negative value (a net refund
  in ``monetary``) stays negative instead of being clipped or undefined. Other features are used
  as they are.
- **Standardization.** Each transformed feature minus its mean, divided by its standard
  deviation (population, ``ddof=0``); a constant feature gets scale 1 (like scikit-learn's
  ``StandardScaler``).
- **Fit.** :class:`sklearn.cluster.MiniBatchKMeans` (``n_clusters=k``, ``random_state=seed``,
  ``n_init=3``, ``batch_size=4096``), its OpenMP threads limited to one. ``k="auto"`` fits every
  k of ``k_range`` (2 to 8) and keeps the one with the best silhouette score (as
  :func:`sklearn.metrics.silhouette_score` defines it, :func:`silhouette_scores`) on one seeded
  sample of 10,000 clustered customers (ties: the smaller k).
- **Assignment** to the nearest centroid (Euclidean, in the standardized space), computed with
  numpy from the saved transform, scaling and centroids: a saved model needs no scikit-learn to
  assign, and gives the same cluster to the same features every day.
- **Order and labels.** Clusters are numbered by descending mean ``monetary`` of their members
  on the fit data (cluster 0 spends most per customer; then by size). A label is built from where
  each centroid (back in original units) sits among the fit customers' values of each feature:
  bottom, middle or top third by mid-rank (a value shared by many customers counts at the middle
  of its tie) — ``recent``/``lapsing``/``lapsed`` for ``recency_days``,
  ``occasional``/``regular``/``frequent`` for ``frequency``, ``low``/``mid``/``high spend`` for
  ``monetary`` and ``low``/``mid``/``high X`` for any other feature X, joined by `` · ``. Labels
  that collide get `` (1)``, `` (2)``... in cluster order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fastseg.config import SKEW_RATIO
from fastseg.errors import (
    DataError,
    InputError,
    MissingDependencyError,
    ParameterError,
    SchemaError,
)

if TYPE_CHECKING:
    from fastseg.progress import Reporter

__all__ = [
    "DEFAULT_FEATURES",
    "FORMAT",
    "FORMAT_VERSION",
    "K_RANGE",
    "MISSING_LABEL",
    "PROSPECTS_LABEL",
    "ClusterModel",
    "ClusterResult",
    "cluster_scores",
    "join_clusters",
]

FORMAT = "fastseg.cluster_model"
FORMAT_VERSION = 1
#: the features clustered when none are chosen
DEFAULT_FEATURES: tuple[str, ...] = ("recency_days", "frequency", "monetary")
#: the k tried by ``k="auto"``, both ends included
K_RANGE: tuple[int, int] = (2, 8)
#: the largest k accepted
MAX_K = 100
#: customers in the seeded sample the silhouette scores of ``k="auto"`` are computed on
SILHOUETTE_SAMPLE = 10_000
#: k-means initializations (the best inertia is kept) and mini-batch size
N_INIT = 3
BATCH_SIZE = 4096
PROSPECTS_LABEL = "prospects"
MISSING_LABEL = "missing features"
SEPARATOR = " · "
#: what the clusters file holds, besides the customer ids
CLUSTER_COLUMNS = ("cluster", "cluster_label")
#: the words of the bottom, middle and top third of a feature
_WORDS: dict[str, tuple[str, str, str]] = {
    "recency_days": ("recent", "lapsing", "lapsed"),
    "frequency": ("occasional", "regular", "frequent"),
    "monetary": ("low spend", "mid spend", "high spend"),
}
#: status codes of :meth:`ClusterModel.predict` for customers without a cluster
PROSPECT = -1
MISSING = -2
_TRANSFORMS = ("identity", "signed_log1p")
_CHUNK = 1 << 18


def _sklearn() -> Any:
    """scikit-learn's MiniBatchKMeans, or one line naming the extra that brings it."""
    try:
        from sklearn.cluster import MiniBatchKMeans
    except ImportError:
        msg = "fastseg cluster needs scikit-learn: pip install 'fastseg[ml]'"
        raise MissingDependencyError(msg) from None
    return MiniBatchKMeans


# ------------------------------------------------------------------------------------ checks


def _check_k(k: Any) -> int | str:
    if k == "auto":
        return "auto"
    if isinstance(k, str) and k.strip().isdigit():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 2 <= k <= MAX_K:
        msg = f"k: expected a whole number from 2 to {MAX_K} or 'auto', got {k!r}"
        raise ParameterError(msg)
    return int(k)


def _check_features(features: Any) -> tuple[str, ...]:
    if isinstance(features, str):
        features = [f.strip() for f in features.split(",") if f.strip()]
    if (
        not isinstance(features, Sequence)
        or not features
        or not all(isinstance(f, str) and f for f in features)
    ):
        msg = f"features: expected column names such as recency_days,frequency,monetary, got {features!r}"
        raise ParameterError(msg)
    seen = [f for i, f in enumerate(features) if f in features[:i]]
    if seen:
        msg = f"features: {seen[0]!r} is given twice; give each column once"
        raise ParameterError(msg)
    if "customer_id" in features or any(f in CLUSTER_COLUMNS for f in features):
        bad = next(f for f in features if f == "customer_id" or f in CLUSTER_COLUMNS)
        msg = f"features: {bad!r} cannot be a feature; choose behavioural columns such as recency_days,frequency,monetary"
        raise ParameterError(msg)
    return tuple(features)


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or not low <= value <= high
    ):
        msg = f"{name}: expected a whole number from {low} to {high}, got {value!r}"
        raise ParameterError(msg)
    return int(value)


def _check_k_range(k_range: Any) -> tuple[int, int]:
    ok = isinstance(k_range, Sequence) and len(k_range) == 2
    lo, hi = k_range if ok else (0, 0)
    try:
        lo, hi = _check_int("k_range", lo, 2, MAX_K), _check_int("k_range", hi, 2, MAX_K)
    except ParameterError:
        ok = False
    if not ok or lo > hi:
        msg = f"k_range: expected (low, high) with 2 <= low <= high <= {MAX_K}, got {k_range!r}"
        raise ParameterError(msg)
    return lo, hi


# ------------------------------------------------------------------------------------ arrays


def signed_log1p(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``sign(x) * log1p(|x|)``: the transform of a skewed feature."""
    return np.sign(x) * np.log1p(np.abs(x))


def _inverse_signed_log1p(y: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.sign(y) * np.expm1(np.abs(y))


def is_skewed(values: NDArray[np.float64]) -> bool:
    """True when the 99th percentile of the positive ``values`` is at least
    :data:`~fastseg.config.SKEW_RATIO` times their median (no positive value: False)."""
    positive = values[values > 0]
    if positive.size == 0:
        return False
    median, p99 = np.quantile(positive, [0.5, 0.99])
    return bool(median > 0 and p99 / median >= SKEW_RATIO)


def nearest(z: NDArray[np.float64], centers: NDArray[np.float64]) -> NDArray[np.int32]:
    """Index of the nearest of ``centers`` (squared Euclidean, first on ties) of each row of
    ``z``, in bounded chunks of rows."""
    out = np.empty(z.shape[0], dtype=np.int32)
    for start in range(0, z.shape[0], _CHUNK):
        part = z[start : start + _CHUNK]
        dist = np.stack([((part - c) ** 2).sum(axis=1) for c in centers], axis=1)
        out[start : start + _CHUNK] = dist.argmin(axis=1)
    return out


def silhouette_scores(
    x: NDArray[np.float64], labelings: Sequence[NDArray[np.int32]]
) -> list[float | None]:
    """The mean silhouette coefficient of each labeling of the rows of ``x`` (Euclidean), as
    :func:`sklearn.metrics.silhouette_score` defines it (a point alone in its cluster scores 0),
    from one pass over the pairwise distances for all the labelings at once (the tests check it
    equals scikit-learn's). None where undefined: fewer than 2 or more than ``n - 1`` clusters
    used."""
    n = x.shape[0]
    ks = [int(lab.max()) + 1 if lab.size else 0 for lab in labelings]
    offsets = np.cumsum([0, *ks])
    onehot = np.zeros((n, offsets[-1]), dtype=np.float64)
    for lab, off in zip(labelings, offsets, strict=False):
        onehot[np.arange(n), off + lab] = 1.0
    counts = onehot.sum(axis=0)
    sums = np.empty_like(onehot)  # sums[i, c]: distance from point i to the members of c
    sq = (x**2).sum(axis=1)
    xt = np.ascontiguousarray(x.T)
    step = max(1, (1 << 23) // max(n, 1))  # blocks of about 8M distances
    for start in range(0, n, step):
        stop = min(n, start + step)
        d = x[start:stop] @ xt  # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, in place
        d *= -2.0
        d += sq[start:stop, None]
        d += sq[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        d[np.arange(stop - start), np.arange(start, stop)] = 0.0
        sums[start:stop] = d @ onehot
    out: list[float | None] = []
    rows = np.arange(n)
    for lab, off, k in zip(labelings, offsets, ks, strict=False):
        size = counts[off : off + k]
        used = int((size > 0).sum())
        if not 2 <= used <= n - 1:
            out.append(None)
            continue
        block = sums[:, off : off + k]
        own = size[lab]
        a = block[rows, lab] / np.maximum(own - 1, 1)
        mean_other = np.where(size > 0, block / np.maximum(size, 1), np.inf)
        mean_other[rows, lab] = np.inf
        b = mean_other.min(axis=1)
        denom = np.maximum(a, b)
        s = np.where((own > 1) & (denom > 0), (b - a) / np.where(denom > 0, denom, 1), 0.0)
        out.append(float(s.mean()))
    return out


def _mid_rank(sorted_values: NDArray[np.float64], v: float) -> float:
    """The share of ``sorted_values`` below ``v``, ties (within a relative 1e-9) counted half."""
    eps = 1e-9 * max(1.0, abs(v))
    below = np.searchsorted(sorted_values, v - eps, "left")
    upto = np.searchsorted(sorted_values, v + eps, "right")
    return float(below + (upto - below) / 2) / sorted_values.size


def _label(features: Sequence[str], ranks: Sequence[float]) -> str:
    parts = []
    for name, rank in zip(features, ranks, strict=True):
        level = 0 if rank < 1 / 3 else 2 if rank > 2 / 3 else 1
        words = _WORDS.get(name, (f"low {name}", f"mid {name}", f"high {name}"))
        parts.append(words[level])
    return SEPARATOR.join(parts)


def _unique_labels(labels: list[str]) -> list[str]:
    counts = {lab: labels.count(lab) for lab in labels}
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        if counts[lab] > 1:
            seen[lab] = seen.get(lab, 0) + 1
            lab = f"{lab} ({seen[lab]})"
        out.append(lab)
    return out


# ------------------------------------------------------------------------------------ frames


def _numeric_columns(schema: pl.Schema) -> list[str]:
    return [
        n for n, t in schema.items() if (t.is_numeric() or t == pl.Boolean) and n != "customer_id"
    ]


def check_columns(schema: pl.Schema, features: Sequence[str], where: str) -> None:
    """One line naming the first missing or non-numeric column, the columns there are and the fix."""
    numeric = ", ".join(_numeric_columns(schema)) or "none"
    for name in ("customer_id", "frequency", "monetary"):
        if name not in schema:
            msg = (
                f"{where}: no {name!r} column (numeric columns: {numeric}); pass scores written by "
                "`fastseg score` or a run folder"
            )
            raise SchemaError(msg)
    for name in features:
        if name not in schema:
            msg = (
                f"{where}: no column {name!r} for --features (numeric columns: {numeric}); "
                "choose features from those, e.g. --features recency_days,frequency,monetary"
            )
            raise SchemaError(msg)
        dtype = schema[name]
        if not (dtype.is_numeric() or dtype == pl.Boolean):
            msg = (
                f"{where}: feature {name!r} is {dtype}, not a number (numeric columns: {numeric}); "
                "choose numeric features"
            )
            raise SchemaError(msg)


def _arrays(
    frame: pl.DataFrame, features: Sequence[str]
) -> tuple[NDArray[np.float64], NDArray[np.int32]]:
    """The raw feature matrix (float64, NaN where null) and each row's status: 0 to be clustered,
    :data:`PROSPECT` (no order), :data:`MISSING` (a chosen feature null or not finite)."""
    check_columns(frame.schema, features, "scores")
    x = np.ascontiguousarray(
        frame.select(pl.col(f).cast(pl.Float64) for f in features).to_numpy(), dtype=np.float64
    ).reshape(frame.height, len(features))
    freq = frame.get_column("frequency").cast(pl.Float64).fill_null(0).to_numpy()
    status = np.where(freq >= 1, 0, PROSPECT).astype(np.int32)
    status[(status == 0) & ~np.isfinite(x).all(axis=1)] = MISSING
    return x, status


# ------------------------------------------------------------------------------------ the model


class ClusterModel:
    """k-means clusters of customers on standardized features, with persistence to JSON.

    scikit-learn conventions: ``__init__`` only stores, parameters are checked at :meth:`fit`,
    fitted state ends in an underscore. The module docstring says how customers are transformed,
    fitted, ordered and labelled.

    Parameters
    ----------
    k : int or "auto", default 5
        Number of clusters (2 to 100), or ``"auto"``: the k of ``k_range`` with the best
        silhouette score.
    features : sequence of str, default ("recency_days", "frequency", "monetary")
        Numeric columns of the scores to cluster on.
    seed : int, default 0
        Seed of k-means and of the silhouette sample.
    k_range : (int, int), default (2, 8)
        The k tried by ``k="auto"``, both ends included.

    Attributes
    ----------
    features_ : tuple of str
    transforms_ : tuple of str
        ``"identity"`` or ``"signed_log1p"`` per feature.
    mean_, scale_ : ndarray of shape (n_features,)
        Standardization of the transformed features.
    cluster_centers_ : ndarray of shape (k_, n_features)
        Centroids in the standardized space, in cluster order.
    centers_ : ndarray of shape (k_, n_features)
        The same centroids in the features' own units.
    cluster_labels_ : tuple of str
        The readable label of each cluster.
    k_ : int
    n_fit_ : int
        Customers the model was fit on.
    silhouette_ : dict of int to float, or None
        With ``k="auto"``: the silhouette score of each k tried (None where undefined).

    Examples
    --------
    >>> import polars as pl
    >>> f = pl.DataFrame({"customer_id": [1, 2, 3, 4, 5], "recency_days": [2, 3, 300, 310, None],
    ...                   "frequency": [9, 8, 1, 1, 0], "monetary": [900.0, 800.0, 20.0, 25.0, 0.0]})
    >>> m = ClusterModel(k=2).fit(f)  # doctest: +SKIP
    >>> m.assign(f)["cluster_label"].to_list()  # doctest: +SKIP
    ['recent · frequent · high spend', 'recent · frequent · high spend', 'lapsed · occasional · low spend', 'lapsed · occasional · low spend', 'prospects']
    """

    def __init__(
        self,
        k: int | str = 5,
        *,
        features: Sequence[str] = DEFAULT_FEATURES,
        seed: int = 0,
        k_range: tuple[int, int] = K_RANGE,
    ) -> None:
        self.k = k
        self.features = features
        self.seed = seed
        self.k_range = k_range

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"k": self.k, "features": self.features, "seed": self.seed, "k_range": self.k_range}

    def set_params(self, **params: Any) -> Self:
        for name, value in params.items():
            if name not in self.get_params():
                msg = f"invalid parameter {name!r} for ClusterModel (valid: k, features, seed, k_range)"
                raise ParameterError(msg)
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        return f"ClusterModel(k={self.k!r}, features={tuple(self.features)!r}, seed={self.seed!r})"

    def _validated(self) -> tuple[int | str, tuple[str, ...], int, tuple[int, int]]:
        return (
            _check_k(self.k),
            _check_features(self.features),
            _check_int("seed", self.seed, 0, 2**32 - 1),
            _check_k_range(self.k_range),
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            from fastseg.scoring import NotFittedError

            msg = "this ClusterModel is not fitted yet; call fit(scores) or ClusterModel.from_json(text)"
            raise NotFittedError(msg)

    # ---------------------------------------------------------------- fit

    def fit(self, scores: pl.DataFrame) -> Self:
        """Learn the transform, the scaling, the centroids and the labels from ``scores``.

        Raises
        ------
        SchemaError
            A feature, ``customer_id``, ``frequency`` or ``monetary`` is missing or not numeric.
        DataError
            No customer to cluster, or fewer distinct customers than clusters.
        """
        k, features, seed, k_range = self._validated()
        mbk = _sklearn()
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

        x, status = _arrays(scores, features)
        keep = status == 0
        rows = x[keep]
        n = rows.shape[0]
        if n == 0:
            prospects = int((status == PROSPECT).sum())
            missing = int((status == MISSING).sum())
            msg = (
                f"no customer to cluster: {scores.height:,} customers, {prospects:,} without an "
                f"order, {missing:,} with a missing {'/'.join(features)}; cluster scores of "
                "customers with orders"
            )
            raise DataError(msg)
        distinct = pl.from_numpy(rows).n_unique()
        low = k_range[0] if k == "auto" else k
        if distinct < low:
            what = (
                "only one distinct value" if distinct == 1 else f"only {distinct} distinct values"
            )
            fix = (
                "nothing to cluster"
                if distinct == 1
                else f"use --k {distinct} or less"
                if k != "auto"
                else f"use --k {distinct}"
            )
            msg = (
                f"k={k}: the {n:,} customers to cluster have {what} of "
                f"({', '.join(features)}); {fix}"
            )
            raise DataError(msg)
        transforms = tuple(
            "signed_log1p" if is_skewed(rows[:, j]) else "identity" for j in range(len(features))
        )
        t = _apply(rows, transforms)
        mean = t.mean(axis=0)
        scale = t.std(axis=0)
        scale[~(scale > 0)] = 1.0
        z = (t - mean) / scale

        def fit_k(kk: int) -> NDArray[np.float64]:
            km = mbk(
                n_clusters=kk,
                random_state=seed,
                n_init=N_INIT,
                batch_size=min(BATCH_SIZE, n),
                compute_labels=False,  # assigned below with the saved state, like tomorrow's
            )
            # one OpenMP thread: a mini-batch is too small for threads to pay, and on few cores
            # their hand-offs cost more than the work (docs/clusters.md, Performance)
            with threadpool_limits(limits=1, user_api="openmp"):
                km.fit(z)
            return np.asarray(km.cluster_centers_, dtype=np.float64)

        silhouette: dict[int, float | None] | None = None
        if k == "auto":
            rng = np.random.default_rng(seed)
            pick = np.sort(rng.choice(n, size=min(n, SILHOUETTE_SAMPLE), replace=False))
            sample = z[pick]
            fits = {kk: fit_k(kk) for kk in range(k_range[0], min(k_range[1], distinct) + 1)}
            scores_k = silhouette_scores(sample, [nearest(sample, c) for c in fits.values()])
            silhouette = dict(zip(fits, scores_k, strict=True))
            valid = {kk: s for kk, s in silhouette.items() if s is not None}
            best = max(valid, key=lambda kk: (valid[kk], -kk)) if valid else min(fits)
            centers = fits[best]
        else:
            centers = fit_k(int(k))
        self._set_fit(features, transforms, mean, scale, centers, rows, z, scores, keep)
        self.seed_ = seed
        self.n_fit_ = n
        self.silhouette_ = silhouette
        return self

    def _set_fit(
        self,
        features: tuple[str, ...],
        transforms: tuple[str, ...],
        mean: NDArray[np.float64],
        scale: NDArray[np.float64],
        centers: NDArray[np.float64],
        rows: NDArray[np.float64],
        z: NDArray[np.float64],
        scores: pl.DataFrame,
        keep: NDArray[np.bool_],
    ) -> None:
        """Order the clusters (descending mean monetary, then size) and label them."""
        assigned = nearest(z, centers)
        kk = centers.shape[0]
        size = np.bincount(assigned, minlength=kk)
        money = scores.get_column("monetary").cast(pl.Float64).fill_null(0).to_numpy()[keep]
        spend = np.bincount(assigned, weights=money, minlength=kk)
        mean_spend = np.where(size > 0, spend / np.maximum(size, 1), -np.inf)
        order = sorted(range(kk), key=lambda j: (-mean_spend[j], -size[j], j))
        centers = centers[order]
        original = _invert(centers * scale + mean, transforms)
        ranks = [
            [_mid_rank(np.sort(rows[:, j]), float(c[j])) for j in range(len(features))]
            for c in original
        ]
        self.features_ = features
        self.transforms_ = transforms
        self.mean_ = mean
        self.scale_ = scale
        self.cluster_centers_ = centers
        self.centers_ = original
        self.cluster_labels_ = tuple(_unique_labels([_label(features, r) for r in ranks]))
        self.k_ = kk

    # ---------------------------------------------------------------- apply

    def transform(self, scores: pl.DataFrame) -> NDArray[np.float64]:
        """The standardized feature matrix (rows of ``scores``, columns of ``features_``), NaN on
        the rows of customers without a cluster (prospects, missing features)."""
        self._check_fitted()
        x, status = _arrays(scores, self.features_)
        z = (_apply(x, self.transforms_) - self.mean_) / self.scale_
        z[status != 0] = np.nan
        return z

    def predict(self, scores: pl.DataFrame) -> NDArray[np.int32]:
        """Each customer's cluster (0 to ``k_ - 1``), :data:`PROSPECT` (-1) without an order or
        :data:`MISSING` (-2) with a missing feature: numpy only, from the saved state."""
        self._check_fitted()
        x, status = _arrays(scores, self.features_)
        keep = status == 0
        z = (_apply(x[keep], self.transforms_) - self.mean_) / self.scale_
        out = status.copy()
        out[keep] = nearest(z, self.cluster_centers_)
        return out

    def assign(self, scores: pl.DataFrame) -> pl.DataFrame:
        """``customer_id``, ``cluster`` (Int32; null without one) and ``cluster_label`` of every
        customer of ``scores``, in its order."""
        codes = self.predict(scores)
        names = np.array([*self.cluster_labels_, MISSING_LABEL, PROSPECTS_LABEL], dtype=object)
        return pl.DataFrame(
            {
                "customer_id": scores.get_column("customer_id"),
                "cluster": pl.Series(codes, dtype=pl.Int32).set(pl.Series(codes < 0), None),
                "cluster_label": pl.Series(names[codes].tolist(), dtype=pl.String),
            }
        )

    def profile(self, scores: pl.DataFrame, clusters: pl.DataFrame) -> pl.DataFrame:
        """Per cluster (then prospects, then missing features): ``cluster``, ``label``,
        ``customers``, ``share``, ``revenue`` (sum of ``monetary``), ``revenue_share`` and
        ``mean_<feature>`` in the features' units; every cluster of the model, even empty."""
        self._check_fitted()
        feats = self.features_
        data = pl.DataFrame(
            {
                "cluster": clusters.get_column("cluster"),
                "label": clusters.get_column("cluster_label"),
                "_money": scores.get_column("monetary").cast(pl.Float64),
                **{f"mean_{f}": scores.get_column(f).cast(pl.Float64) for f in feats},
            }
        )
        total = data.height
        revenue = data.get_column("_money").sum()
        agg = data.group_by("label").agg(
            pl.len().cast(pl.Int64).alias("customers"),
            pl.col("_money").sum().alias("revenue"),
            *(pl.col(f"mean_{f}").mean() for f in feats),
        )
        rows = pl.DataFrame(
            {
                "cluster": [*range(self.k_), None, None],
                "label": [*self.cluster_labels_, PROSPECTS_LABEL, MISSING_LABEL],
            },
            schema={"cluster": pl.Int32, "label": pl.String},
        )
        out = rows.join(agg, on="label", how="left").with_columns(
            pl.col("customers").fill_null(0), pl.col("revenue").fill_null(0.0)
        )
        out = out.filter(pl.col("cluster").is_not_null() | (pl.col("customers") > 0))
        return out.select(
            "cluster",
            "label",
            "customers",
            (pl.col("customers") / total if total else pl.lit(None, pl.Float64)).alias("share"),
            "revenue",
            (pl.col("revenue") / revenue if revenue else pl.lit(None, pl.Float64)).alias(
                "revenue_share"
            ),
            *(f"mean_{f}" for f in feats),
        )

    # ---------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """The fitted model as a JSON-ready dict (format, version, features, transforms, mean,
        scale, centroids, labels, k, seed, n_fit, silhouette)."""
        self._check_fitted()
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "features": list(self.features_),
            "transforms": list(self.transforms_),
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "k": int(self.k_),
            "centroids": self.cluster_centers_.tolist(),
            "centers": [dict(zip(self.features_, c, strict=True)) for c in self.centers_.tolist()],
            "labels": list(self.cluster_labels_),
            "seed": int(self.seed_),
            "n_fit": int(self.n_fit_),
            "silhouette": (
                None
                if self.silhouette_ is None
                else {str(kk): s for kk, s in self.silhouette_.items()}
            ),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterModel:
        """Rebuild a fitted model from :meth:`to_dict` output (ParameterError when invalid)."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            msg = f"not a fastseg cluster model: format is {got!r}, expected {FORMAT!r}"
            raise ParameterError(msg)
        if data.get("version") != FORMAT_VERSION:
            msg = (
                f"cluster model version {data.get('version')!r} is not supported (this fastseg "
                f"reads version {FORMAT_VERSION}); fit and save the model again"
            )
            raise ParameterError(msg)
        try:
            features = _check_features(list(data["features"]))
            p = len(features)
            transforms = tuple(str(t) for t in data["transforms"])
            k = _check_int("k", data["k"], 1, MAX_K)
            mean = np.asarray(data["mean"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
            centroids = np.asarray(data["centroids"], dtype=np.float64)
            labels = tuple(str(s) for s in data["labels"])
            seed = _check_int("seed", data["seed"], 0, 2**32 - 1)
            n_fit = _check_int("n_fit", data["n_fit"], 1, 2**62)
            sil = data.get("silhouette")
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"cluster model is incomplete or malformed ({exc}); fit and save the model again"
            raise ParameterError(msg) from None
        problems = [
            bad
            for bad, wrong in (
                ("transforms", len(transforms) != p or not set(transforms) <= set(_TRANSFORMS)),
                ("mean", mean.shape != (p,) or not np.isfinite(mean).all()),
                (
                    "scale",
                    scale.shape != (p,) or not (scale > 0).all() or not np.isfinite(scale).all(),
                ),
                ("centroids", centroids.shape != (k, p) or not np.isfinite(centroids).all()),
                ("labels", len(labels) != k or len(set(labels)) != k),
            )
            if wrong
        ]
        if problems:
            msg = f"cluster model: invalid {problems[0]} for {k} clusters of {p} features; fit and save the model again"
            raise ParameterError(msg)
        model = cls(k=k if k >= 2 else 2, features=features, seed=seed)
        model.features_ = features
        model.transforms_ = transforms
        model.mean_ = mean
        model.scale_ = scale
        model.cluster_centers_ = centroids
        model.centers_ = _invert(centroids * scale + mean, transforms)
        model.cluster_labels_ = labels
        model.k_ = k
        model.seed_ = seed
        model.n_fit_ = n_fit
        model.silhouette_ = None if sil is None else {int(a): b for a, b in dict(sil).items()}
        return model

    @classmethod
    def from_json(cls, text: str) -> ClusterModel:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"cluster model is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            raise ParameterError(msg) from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ClusterModel:
        """Read a model written by ``fastseg cluster --model-out`` (InputError when unusable)."""
        from fastseg.io import read_text

        text = read_text(Path(path), "--model-in", missing_hint="write one with --model-out")
        try:
            return cls.from_json(text)
        except ParameterError as exc:
            msg = f"--model-in {path}: {exc}"
            raise InputError(msg) from None


def _apply(x: NDArray[np.float64], transforms: Sequence[str]) -> NDArray[np.float64]:
    out = x.astype(np.float64, copy=True)
    for j, t in enumerate(transforms):
        if t == "signed_log1p":
            out[:, j] = signed_log1p(out[:, j])
    return out


def _invert(t: NDArray[np.float64], transforms: Sequence[str]) -> NDArray[np.float64]:
    out = t.astype(np.float64, copy=True)
    for j, name in enumerate(transforms):
        if name == "signed_log1p":
            out[:, j] = _inverse_signed_log1p(out[:, j])
    return out


# ------------------------------------------------------------------------------------ the job


@dataclass
class ClusterResult:
    """What :func:`fastseg.cluster` produced.

    ``clusters`` (``customer_id``, ``cluster``, ``cluster_label``), ``profile`` (one row per
    cluster, then prospects and missing features when there are any), the ``model``, whether it
    was ``fitted`` here (False with ``model_in``), ``silhouette`` (per k, with ``k="auto"``), the
    ``outputs`` written and the ``seconds`` it took.
    """

    clusters: pl.DataFrame
    profile: pl.DataFrame
    model: ClusterModel
    fitted: bool
    silhouette: dict[int, float | None] | None = None
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_customers(self) -> int:
        return self.clusters.height

    @property
    def k(self) -> int:
        return int(self.model.k_)


def _read_scores(scores: Any, features: Sequence[str]) -> pl.DataFrame:
    """The columns clustering needs, from a frame, a scores file or a run folder."""
    needed = list(dict.fromkeys(["customer_id", "frequency", "monetary", *features]))
    if isinstance(scores, str | os.PathLike) and (Path(scores) / "run.json").is_file():
        from fastseg.runs import open_run

        run = open_run(scores, "SCORES")
        path = run.need("scores")
        names = run.columns("scores")
        frame = run.scan("scores", [c for c in needed if c in names])
        # CSV tables are typed from run.json as they are read: their types are the frame's
        schema = pl.scan_parquet(path).collect_schema() if path.suffix == ".parquet" else None
        check_columns(schema if schema is not None else frame.schema, features, f"scores {path}")
        return frame
    from fastseg.io import scan_source
    from fastseg.orders import collect

    src = scan_source(scores, what="scores", infer_types=True)
    check_columns(src.frame.collect_schema(), features, f"scores {src.label}")
    return collect(src.frame.select(needed), src.label, src)


def cluster_scores(
    scores: Any,
    *,
    k: int | str | None = None,
    features: str | Sequence[str] | None = None,
    seed: int | None = None,
    model_in: str | os.PathLike[str] | None = None,
    model_out: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: Reporter | None = None,
) -> ClusterResult:
    """The job behind :func:`fastseg.cluster` (documented there)."""
    import time

    from fastseg.api import _output_set, _watch

    t0 = time.perf_counter()
    if model_in is not None and model_out is not None:
        msg = "--model-in and --model-out: give one (a model read with --model-in is used as it is)"
        raise ParameterError(msg)
    watch = _watch(None, progress)
    with _output_set(scores, model_in) as outs:
        targets = {
            name: outs.add_file(path, option)
            for name, path, option in (("out", out, "--out"), ("model", model_out, "--model-out"))
            if path is not None
        }
        if model_in is not None:
            model = ClusterModel.load(model_in)
            _check_same(model, k, features, seed, model_in)
            fitted = False
        else:
            chosen = DEFAULT_FEATURES if features is None else _check_features(features)
            model = ClusterModel(k=5 if k is None else k, features=chosen, seed=seed or 0)
            model._validated()
            _sklearn()  # the missing extra is said before any row is read
            fitted = True
        with watch.stage("read", unit="customers") as st:
            frame = _read_scores(scores, model.features_ if not fitted else model.features)
            st.advance(frame.height)
        with watch.stage("cluster", unit="customers") as st:
            if fitted:
                if frame.height == 0:
                    msg = "scores: no customers to cluster (the scores are empty)"
                    raise DataError(msg)
                model.fit(frame)
            clusters = model.assign(frame)
            profile = model.profile(frame, clusters)
            st.advance(frame.height)
        if targets:
            with watch.stage("write"):
                if "out" in targets:
                    outs.write_frame(clusters, targets["out"])
                if "model" in targets:
                    outs.write_text(targets["model"], model.to_json())
                outs.commit()
    return ClusterResult(
        clusters=clusters,
        profile=profile,
        model=model,
        fitted=fitted,
        silhouette=model.silhouette_ if fitted else None,
        outputs=list(targets.values()),
        seconds=time.perf_counter() - t0,
    )


def _check_same(model: ClusterModel, k: Any, features: Any, seed: Any, model_in: Any) -> None:
    """--k, --features and --seed with --model-in must say what the model says."""
    given = {
        "--features": (
            None if features is None else ",".join(_check_features(features)),
            ",".join(model.features_),
        ),
        "--k": (None if k is None else str(_check_k(k)), str(model.k_)),
        "--seed": (None if seed is None else str(seed), str(model.seed_)),
    }
    for option, (value, saved) in given.items():
        if value is not None and value != saved:
            msg = (
                f"{option} {value} differs from the model's {saved} (--model-in {model_in}): drop "
                f"{option} to assign with the saved model, or fit a new one without --model-in"
            )
            raise ParameterError(msg)


# ------------------------------------------------------------------------------------ rules


def join_clusters(frame: pl.DataFrame, clusters: Any) -> pl.DataFrame:
    """``frame`` (scores) with ``cluster`` and ``cluster_label`` joined from a clusters file or
    frame (written by ``fastseg cluster --out``) on ``customer_id``; every customer of the scores
    must be in it."""
    from fastseg.io import scan_source
    from fastseg.orders import collect

    src = scan_source(clusters, what="clusters", infer_types=True)
    have = src.frame.collect_schema()
    missing = [c for c in ("customer_id", *CLUSTER_COLUMNS) if c not in have]
    if missing:
        msg = (
            f"--clusters {src.label}: no column {missing[0]!r} (found: {', '.join(list(have)[:20])}); "
            "give the file written by `fastseg cluster --out`"
        )
        raise SchemaError(msg)
    taken = [c for c in CLUSTER_COLUMNS if c in frame.columns]
    if taken:
        msg = f"--clusters {src.label}: the scores already have a {taken[0]!r} column; drop --clusters or that column"
        raise SchemaError(msg)
    table = collect(src.frame.select("customer_id", *CLUSTER_COLUMNS), src.label, src)
    want = frame.schema["customer_id"]
    if table.schema["customer_id"] != want:
        try:
            table = table.with_columns(pl.col("customer_id").cast(want, strict=True))
        except pl.exceptions.PolarsError:
            msg = (
                f"--clusters {src.label}: customer_id is {table.schema['customer_id']}, the "
                f"scores' is {want}; cluster these scores with fastseg cluster"
            )
            raise SchemaError(msg) from None
    table = table.with_columns(
        pl.col("cluster").cast(pl.Int32), pl.col("cluster_label").cast(pl.String)
    )
    if table.get_column("customer_id").is_duplicated().any():
        msg = f"--clusters {src.label}: a customer_id appears twice; give the file written by `fastseg cluster --out`"
        raise DataError(msg)
    absent = frame.select("customer_id").join(table, on="customer_id", how="anti")
    if absent.height:
        msg = (
            f"--clusters {src.label}: {absent.height:,} of the {frame.height:,} customers of the "
            f"scores are not in it (e.g. customer_id {absent.item(0, 0)}); cluster these scores: "
            "fastseg cluster SCORES --model-in MODEL --out CLUSTERS"
        )
        raise DataError(msg)
    return frame.join(table, on="customer_id", how="left", maintain_order="left")
