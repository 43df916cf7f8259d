"""RFM scoring: learn quantile edges (or take business thresholds) and score customers.

Conventions (stated in full, with a worked example, in ``docs/rfm.md``):

- Only customers with ``frequency >= 1`` are scored (``n`` of them); the others (frequency 0 or
  null) get null scores and the group ``prospects``.
- ``method="quantile"``: ``score(x) = 1 + floor(k * #{scored customers with value < x} / n)`` with
  ``x = -recency_days`` for R (more recent is better), ``frequency`` for F and ``monetary`` for M.
  Ties share a score, row order does not matter and scores are monotone in the value.
  :meth:`RFMScorer.fit` learns ``k - 1`` edges per dimension (order statistics) and
  :meth:`RFMScorer.transform` scores ``1 + #{edges below the value}``: on the fitted customers this
  is the formula above exactly; on other customers it scores against the fitted population.
- ``method="thresholds"``: fixed cut points. F and M: ``1 + #{t : x >= t}``; R (days, lower is
  better): ``1 + #{t : recency_days <= t}``.
- R edges are stored in recency days, ascending. For ``quantile``:
  ``r_score = 1 + #{e in edges_["r"] : recency_days < e}``; F and M:
  ``1 + #{e : e < value}``.
- ``rfm_group`` comes from a 5×5 R×F grid; with ``k != 5`` each score ``s`` is first mapped to
  ``ceil(5 * s / k)``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fastseg.errors import (
    DataError,
    FastsegError,
    InputError,
    OutputError,
    ParameterError,
    SchemaError,
)
from fastseg.kernels.quantile import apply_edges, combine_scores, quantile_edges
from fastseg.schema import RFM_GROUP_GRID, RFM_GROUPS

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "GROUPS",
    "GROUP_GRID",
    "METHODS",
    "SCORE_COLUMNS",
    "NotFittedError",
    "RFMScorer",
    "group_table",
    "parse_thresholds",
    "scale_to_five",
]

FORMAT = "fastseg.rfm_scorer"
FORMAT_VERSION = 1
METHODS = ("quantile", "thresholds")
DIMENSIONS = ("r", "f", "m")
MIN_BINS, MAX_BINS = 2, 10

#: Output columns added by :meth:`RFMScorer.transform`, in order.
SCORE_COLUMNS = ("r_score", "f_score", "m_score", "rfm_cell", "rfm_score", "rfm_group")
#: Feature columns that come before the score columns in the output, when present.
LEAD_COLUMNS = (
    "customer_id",
    "recency_days",
    "frequency",
    "monetary",
    "aov",
    "first_order_date",
    "last_order_date",
)


#: The R x F grid (see :data:`fastseg.schema.RFM_GROUP_GRID`).
GROUP_GRID = RFM_GROUP_GRID
#: Every group name; the index of a name is its code, ``prospects`` is last.
GROUPS: tuple[str, ...] = RFM_GROUPS
_PROSPECTS = len(GROUPS) - 1


def group_table() -> NDArray[np.uint8]:
    """The 5×5 table of group codes: ``table[r - 1, f - 1]`` is an index into :data:`GROUPS`.

    Raises ``RuntimeError`` if :data:`GROUP_GRID` leaves a cell empty or fills one twice.
    """
    table = np.full((5, 5), 255, dtype=np.uint8)
    for code, ((r0, r1), (f0, f1)) in enumerate(GROUP_GRID.values()):
        for r in range(r0, r1 + 1):
            for f in range(f0, f1 + 1):
                if table[r - 1, f - 1] != 255:
                    msg = f"group grid cell R{r} F{f} is assigned twice"
                    raise RuntimeError(msg)
                table[r - 1, f - 1] = code
    if (table == 255).any():
        r, f = np.argwhere(table == 255)[0] + 1
        msg = f"group grid cell R{r} F{f} has no group"
        raise RuntimeError(msg)
    return table


_GROUP_TABLE = group_table()


def scale_to_five(bins: int) -> NDArray[np.uint8]:
    """Lookup ``s -> ceil(5 * s / bins)`` for ``s = 0 .. bins`` (index 0 unused, maps to 0).

    Examples
    --------
    >>> scale_to_five(3).tolist()
    [0, 2, 4, 5]
    """
    return np.array([(5 * s + bins - 1) // bins for s in range(bins + 1)], dtype=np.uint8)


def _cell_names(bins: int) -> pl.Series:
    """All ``bins**3`` cells in code order ``((r - 1) * k + f - 1) * k + m - 1``: "545" etc.

    With ``bins = 10`` the scores are joined with "-" ("10-4-5") so that cells stay unambiguous.
    """
    sep = "-" if bins >= 10 else ""
    s = range(1, bins + 1)
    return pl.Series("rfm_cell", [f"{a}{sep}{b}{sep}{c}" for a in s for b in s for c in s])


class NotFittedError(FastsegError, ValueError, AttributeError):
    """The scorer is used before :meth:`RFMScorer.fit` (or :meth:`RFMScorer.load`)."""


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------


def _check_bins(bins: object) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer):
        msg = f"bins must be an integer from {MIN_BINS} to {MAX_BINS}, got {bins!r}"
        raise ParameterError(msg)
    if not MIN_BINS <= int(bins) <= MAX_BINS:
        msg = f"bins must be from {MIN_BINS} to {MAX_BINS}, got {bins}"
        raise ParameterError(msg)
    return int(bins)


def _check_method(method: object) -> str:
    if method not in METHODS:
        msg = f"method must be one of {', '.join(METHODS)}, got {method!r}"
        raise ParameterError(msg)
    return str(method)


def _check_cut_points(
    dim: str, values: object, *, count: int, strict: bool, label: str = "thresholds"
) -> list[float]:
    """Validate one dimension's cut points: ``count`` finite numbers, increasing."""
    order = "strictly increasing" if strict else "nondecreasing"
    allowed = f"{count} {order} finite numbers (bins - 1, bins={count + 1})"
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        msg = f"{label} for '{dim}' must be a list of {allowed}, got {values!r}"
        raise ParameterError(msg)
    out: list[float] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            msg = f"{label} for '{dim}' must be {allowed}, got {list(values)!r}"
            raise ParameterError(msg)
        out.append(float(v))
    bad_values = any(not math.isfinite(v) for v in out)
    bad_order = any((b <= a) if strict else (b < a) for a, b in zip(out, out[1:], strict=False))
    if len(out) != count or bad_values or bad_order:
        msg = f"{label} for '{dim}' must be {allowed}, got {list(values)!r}"
        raise ParameterError(msg)
    return out


def _check_thresholds(thresholds: object, bins: int, method: str) -> dict[str, list[float]] | None:
    if method == "quantile":
        if thresholds is not None:
            msg = (
                "thresholds are only used with method='thresholds', got method='quantile' and "
                f"thresholds={thresholds!r}; pass method='thresholds' or drop thresholds"
            )
            raise ParameterError(msg)
        return None
    if not isinstance(thresholds, Mapping):
        msg = (
            "method='thresholds' needs thresholds={'r': [...], 'f': [...], 'm': [...]} with "
            f"{bins - 1} cut points each (bins={bins}), got {thresholds!r}"
        )
        raise ParameterError(msg)
    unknown = sorted(str(d) for d in thresholds if d not in DIMENSIONS)
    missing = [d for d in DIMENSIONS if d not in thresholds]
    if unknown or missing:
        msg = (
            f"thresholds must have exactly the dimensions r, f and m; "
            f"missing {missing or 'none'}, unknown {unknown or 'none'}"
        )
        raise ParameterError(msg)
    return {d: _check_cut_points(d, thresholds[d], count=bins - 1, strict=True) for d in DIMENSIONS}


def parse_thresholds(specs: Sequence[str]) -> dict[str, list[float]]:
    """Parse CLI threshold options such as ``"r=30,90,180,365"`` into ``{"r": [...], ...}``.

    Each spec is ``<dimension>=<v1>,<v2>,...`` with the dimension ``r`` (recency days), ``f``
    (orders) or ``m`` (net revenue), case-insensitive, and strictly increasing finite numbers.
    The count per dimension (``bins - 1``) and the presence of all three dimensions are checked by
    :class:`RFMScorer`.

    Raises
    ------
    ParameterError
        Unknown dimension, a dimension given twice, a value that is not a number, duplicate or
        unsorted values.

    Examples
    --------
    >>> parse_thresholds(["r=30,90,180,365", "f=2,3,5,10"])
    {'r': [30.0, 90.0, 180.0, 365.0], 'f': [2.0, 3.0, 5.0, 10.0]}
    """
    if isinstance(specs, str):
        specs = [specs]
    out: dict[str, list[float]] = {}
    for spec in specs:
        dim, sep, rest = spec.partition("=")
        dim = dim.strip().lower()
        if not sep or not rest.strip():
            msg = f"threshold {spec!r} must look like 'r=30,90,180,365' (dimension r, f or m)"
            raise ParameterError(msg)
        if dim not in DIMENSIONS:
            msg = f"unknown dimension {dim!r} in threshold {spec!r}; use r, f or m"
            raise ParameterError(msg)
        if dim in out:
            msg = f"threshold dimension '{dim}' is given twice ({spec!r}); give each once"
            raise ParameterError(msg)
        values: list[float] = []
        for part in rest.split(","):
            text = part.strip()
            try:
                v = float(text)
            except ValueError:
                msg = f"threshold value {text!r} in {spec!r} is not a number"
                raise ParameterError(msg) from None
            if not math.isfinite(v):
                msg = f"threshold value {text!r} in {spec!r} must be finite"
                raise ParameterError(msg)
            values.append(v)
        dups = sorted({v for v in values if values.count(v) > 1})
        if dups:
            shown = ", ".join(f"{v:g}" for v in dups)
            msg = f"threshold {spec!r} repeats {shown}; cut points must be distinct"
            raise ParameterError(msg)
        if values != sorted(values):
            msg = f"threshold {spec!r} is not sorted; write the cut points in increasing order"
            raise ParameterError(msg)
        out[dim] = values
    return out


# --------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------


def _scored_expr() -> pl.Expr:
    return pl.col("frequency").fill_null(0) >= 1


def _check_frame(features: object) -> pl.DataFrame:
    """Check the type, columns and dtypes needed for scoring; return the frame."""
    if isinstance(features, pl.LazyFrame):
        features = features.collect()
    if not isinstance(features, pl.DataFrame):
        msg = f"features must be a polars DataFrame, got {type(features).__name__}"
        raise ParameterError(msg)
    schema = features.collect_schema()
    problems = []
    for name, kind in (("recency_days", "integer"), ("frequency", "integer")):
        if name not in schema:
            problems.append(f"missing column '{name}'")
        elif not schema[name].is_integer():
            problems.append(f"column '{name}' must be {kind}, got {schema[name]}")
    if "monetary" not in schema:
        problems.append("missing column 'monetary'")
    elif not schema["monetary"].is_numeric():
        problems.append(f"column 'monetary' must be numeric, got {schema['monetary']}")
    if problems:
        found = ", ".join(schema.names())
        msg = f"cannot score features: {'; '.join(problems)} (found: {found})"
        raise SchemaError(msg)
    return features


def _check_data(features: pl.DataFrame) -> int:
    """Check scored customers have a recency and a finite monetary; return how many are scored."""
    scored = _scored_expr()
    mon = pl.col("monetary").cast(pl.Float64)
    bad_rec = scored & pl.col("recency_days").is_null()
    bad_mon = scored & (mon.is_null() | ~mon.is_finite())
    neg = pl.col("frequency") < 0
    row = features.select(
        scored.sum().alias("n"),
        bad_rec.sum().alias("rec"),
        bad_mon.sum().alias("mon"),
        neg.sum().alias("neg"),
    ).row(0, named=True)
    for key, expr, what in (
        ("neg", neg, "a negative frequency"),
        ("rec", bad_rec, "frequency >= 1 but a null recency_days"),
        ("mon", bad_mon, "frequency >= 1 but a null, NaN or infinite monetary"),
    ):
        if row[key]:
            example = ""
            if "customer_id" in features.columns:
                first = features.filter(expr.fill_null(False)).get_column("customer_id")[0]
                example = f" (first: customer_id {first!r})"
            msg = f"{row[key]} customers have {what}{example}; fix or drop them before scoring"
            raise DataError(msg)
    return int(row["n"])


def _fit_arrays(features: pl.DataFrame) -> dict[str, NDArray[Any]]:
    """The values :meth:`RFMScorer.fit` learns edges on, over the scored customers.

    ``{"r": -recency_days (int64), "f": frequency (int64), "m": monetary (float64)}``.
    """
    sub = (
        features.lazy()  # the three columns only: the frame may carry dozens more
        .select(
            (-pl.col("recency_days").cast(pl.Int64)).alias("neg_recency"),
            pl.col("frequency").cast(pl.Int64),
            pl.col("monetary").cast(pl.Float64),
        )
        .filter(_scored_expr())
        .collect()
    )
    return {
        "r": sub.get_column("neg_recency").to_numpy(),
        "f": sub.get_column("frequency").to_numpy(),
        "m": sub.get_column("monetary").to_numpy(),
    }


def _quantile_edges_dict(
    e_r: NDArray[np.float64], e_f: NDArray[np.float64], e_m: NDArray[np.float64]
) -> dict[str, list[float]]:
    """``edges_`` from the edges of ``-recency_days``, ``frequency`` and ``monetary``."""
    return {
        "r": [0.0 - v for v in e_r[::-1].tolist()],  # days, ascending; 0.0 - 0.0 is +0.0
        "f": e_f.tolist(),
        "m": e_m.tolist(),
    }


# --------------------------------------------------------------------------------------------
# the scorer
# --------------------------------------------------------------------------------------------


class RFMScorer:
    """Score customers 1..k on recency, frequency and monetary; assign an RFM group.

    Follows scikit-learn conventions: parameters in ``__init__``, learned state with a trailing
    underscore, ``fit`` learns, ``transform`` applies.

    Parameters
    ----------
    bins : int, default 5
        Number of scores per dimension, 2 to 10.
    method : {"quantile", "thresholds"}, default "quantile"
        ``quantile``: scores from the customers' ranks (exact, tie-safe, see ``docs/rfm.md``).
        ``thresholds``: fixed cut points given in ``thresholds``.
    thresholds : mapping, optional
        For ``method="thresholds"``: ``{"r": [...], "f": [...], "m": [...]}``, each ``bins - 1``
        strictly increasing finite numbers; ``r`` in days (e.g. ``[30, 90, 180, 365]``).
        :func:`parse_thresholds` builds it from ``"r=30,90,180,365"`` strings.

    Attributes
    ----------
    edges_ : dict of str to list of float
        ``{"r": [...], "f": [...], "m": [...]}``, each ``bins - 1`` values, ascending. ``r`` is in
        recency days: ``quantile`` gives ``r_score = 1 + #{e : recency_days < e}`` and
        ``thresholds`` gives ``1 + #{t : recency_days <= t}``. ``f``/``m``: ``quantile`` gives
        ``1 + #{e : e < value}`` and ``thresholds`` gives ``1 + #{t : t <= value}``.
    n_fit_ : int
        Number of customers (frequency >= 1) in the frame given to :meth:`fit`.

    Examples
    --------
    >>> import polars as pl
    >>> f = pl.DataFrame({"customer_id": [1, 2, 3, 4], "recency_days": [3, 40, None, 10],
    ...                   "frequency": [5, 1, 0, 2], "monetary": [500.0, 20.0, 0.0, 80.0]})
    >>> out = RFMScorer(bins=3).fit_transform(f)
    >>> out.select("customer_id", "rfm_cell", "rfm_group").rows()
    [(1, '333', 'champions'), (2, '111', 'hibernating'), (3, None, 'prospects'), \
(4, '222', 'loyal_customers')]
    """

    def __init__(
        self,
        bins: int = 5,
        method: str = "quantile",
        thresholds: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        self.bins = bins
        self.method = method
        self.thresholds = thresholds
        self._validated()

    def _validated(self) -> tuple[int, str, dict[str, list[float]] | None]:
        bins = _check_bins(self.bins)
        method = _check_method(self.method)
        return bins, method, _check_thresholds(self.thresholds, bins, method)

    def __repr__(self) -> str:
        extra = f", thresholds={self.thresholds!r}" if self.thresholds is not None else ""
        return f"RFMScorer(bins={self.bins!r}, method={self.method!r}{extra})"

    # ---------------------------------------------------------------- fit / transform

    def fit(self, features: pl.DataFrame) -> Self:
        """Learn the edges from the customers with ``frequency >= 1``.

        Parameters
        ----------
        features : polars.DataFrame
            Per-customer features with at least ``recency_days``, ``frequency``, ``monetary``.

        Returns
        -------
        RFMScorer
            ``self``, fitted.

        Raises
        ------
        SchemaError
            A needed column is missing or of the wrong type.
        DataError
            No customer with an order (method ``quantile``), or a scored customer has a null
            recency or a null/NaN/infinite monetary.
        """
        bins, method, thresholds = self._validated()
        frame = _check_frame(features)
        n = _check_data(frame)
        if method == "thresholds":
            assert thresholds is not None
            self.edges_ = {d: list(thresholds[d]) for d in DIMENSIONS}
            self.n_fit_ = n
            return self
        if n == 0:
            msg = (
                "no customer with frequency >= 1 to fit quantile edges on; "
                "check the orders input or use method='thresholds'"
            )
            raise DataError(msg)
        arrays = _fit_arrays(frame)
        e_r, e_f, e_m = (quantile_edges(arrays[d], bins) for d in DIMENSIONS)
        self.edges_ = _quantile_edges_dict(e_r, e_f, e_m)
        self.n_fit_ = n
        return self

    def fit_chunks(self, frames: Callable[[], Iterable[pl.DataFrame]]) -> Self:
        """Fit on feature frames seen in chunks, exactly as ``fit(pl.concat(frames()))``.

        ``frames`` is called once per round (2 to 5 times) and must yield the same frames each
        time; only one frame and small histograms are held (:func:`fastseg.edges.fit_chunks`).
        """
        from fastseg.edges import fit_chunks

        fit_chunks(self, frames)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "edges_"):
            msg = "this RFMScorer is not fitted yet; call fit(features) or RFMScorer.load(path)"
            raise NotFittedError(msg)

    def score_arrays(
        self,
        recency_days: NDArray[np.int64],
        frequency: NDArray[np.int64],
        monetary: NDArray[np.float64],
    ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
        """Score plain arrays (every element is treated as a scored customer).

        Returns the R, F and M scores as ``uint8`` arrays, using the fitted edges.
        """
        self._check_fitted()
        bins, method, _ = self._validated()
        inclusive = method == "thresholds"
        e = self.edges_
        neg_r = np.negative(recency_days)
        r = apply_edges(neg_r, [0.0 - v for v in e["r"]], inclusive=inclusive)
        f = apply_edges(frequency, e["f"], inclusive=inclusive)
        m = apply_edges(monetary, e["m"], inclusive=inclusive)
        return r, f, m

    def transform(self, features: pl.DataFrame) -> pl.DataFrame:
        """Add ``r_score``, ``f_score``, ``m_score``, ``rfm_cell``, ``rfm_score``, ``rfm_group``.

        Customers with frequency 0 or null get null scores, cell and sum, and the group
        ``prospects``. The score columns follow the feature columns ``customer_id`` ..
        ``last_order_date`` that are present; other columns come after them, in input order.
        Existing score columns are replaced.

        Raises
        ------
        NotFittedError
            Called before :meth:`fit` or :meth:`load`.
        SchemaError, DataError
            As for :meth:`fit`.
        """
        self._check_fitted()
        bins, _, _ = self._validated()
        frame = _check_frame(features)
        frame = frame.drop([c for c in SCORE_COLUMNS if c in frame.columns])
        _check_data(frame)
        arrays = frame.select(
            _scored_expr().alias("scored"),
            pl.col("recency_days").cast(pl.Int64).fill_null(0),
            pl.col("frequency").cast(pl.Int64).fill_null(0),
            pl.col("monetary").cast(pl.Float64).fill_null(0.0).fill_nan(0.0),
        )
        scored = arrays.get_column("scored").to_numpy()
        r, f, m = self.score_arrays(
            arrays.get_column("recency_days").to_numpy(),
            arrays.get_column("frequency").to_numpy(),
            arrays.get_column("monetary").to_numpy(),
        )
        scale = scale_to_five(bins)
        lut = _GROUP_TABLE[np.ix_(scale[1:] - 1, scale[1:] - 1)].ravel()
        cell, total, codes = combine_scores(r, f, m, scored, lut, _PROSPECTS)
        is_scored = pl.lit(pl.Series("scored", scored))

        def masked(name: str, a: NDArray[Any]) -> pl.Expr:
            return pl.when(is_scored).then(pl.lit(pl.Series(name, a))).alias(name)

        cell_index = frame.select(masked("i", cell)).to_series()
        out = frame.with_columns(
            masked("r_score", r),
            masked("f_score", f),
            masked("m_score", m),
            _cell_names(bins).gather(cell_index).alias("rfm_cell"),
            masked("rfm_score", total),
            pl.Series("rfm_group", GROUPS, dtype=pl.String).gather(codes).alias("rfm_group"),
        )
        lead = [c for c in LEAD_COLUMNS if c in frame.columns]
        rest = [c for c in frame.columns if c not in LEAD_COLUMNS]
        return out.select(*lead, *SCORE_COLUMNS, *rest)

    def fit_transform(self, features: pl.DataFrame) -> pl.DataFrame:
        """``fit(features)`` then ``transform(features)``."""
        return self.fit(features).transform(features)

    # ---------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """The fitted scorer as a JSON-ready dict (format, version, bins, method, edges, n_fit)."""
        self._check_fitted()
        bins, method, _ = self._validated()
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "bins": bins,
            "method": method,
            "edges": {d: [float(v) for v in self.edges_[d]] for d in DIMENSIONS},
            "n_fit": int(self.n_fit_),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RFMScorer:
        """Rebuild a fitted scorer from :meth:`to_dict` output.

        Raises
        ------
        ParameterError
            Wrong format or version, or invalid bins, method, edges or n_fit.
        """
        if not isinstance(data, Mapping):
            msg = f"a saved scorer must be a JSON object, got {type(data).__name__}"
            raise ParameterError(msg)
        if data.get("format") != FORMAT:
            msg = f"not a fastseg RFM scorer: format is {data.get('format')!r}, expected {FORMAT!r}"
            raise ParameterError(msg)
        version = data.get("version")
        if version != FORMAT_VERSION:
            msg = (
                f"scorer format version {version!r} is not supported (this fastseg reads version "
                f"{FORMAT_VERSION}); fit and save the scorer again"
            )
            raise ParameterError(msg)
        bins = _check_bins(data.get("bins"))
        method = _check_method(data.get("method"))
        edges = data.get("edges")
        if not isinstance(edges, Mapping) or sorted(edges) != sorted(DIMENSIONS):
            msg = f"edges must be an object with keys r, f and m, got {edges!r}"
            raise ParameterError(msg)
        strict = method == "thresholds"
        checked = {
            d: _check_cut_points(d, edges[d], count=bins - 1, strict=strict, label="edges")
            for d in DIMENSIONS
        }
        n_fit = data.get("n_fit")
        low = 0 if strict else 1
        if isinstance(n_fit, bool) or not isinstance(n_fit, int) or n_fit < low:
            msg = f"n_fit must be an integer >= {low}, got {n_fit!r}"
            raise ParameterError(msg)
        scorer = cls(bins=bins, method=method, thresholds=checked if strict else None)
        scorer.edges_ = checked
        scorer.n_fit_ = n_fit
        return scorer

    def to_json(self) -> str:
        """The fitted scorer as the JSON text :meth:`save` writes and :meth:`load` reads."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted scorer as JSON, atomically (:func:`fastseg.outputs.write_atomic`)."""
        from fastseg.outputs import write_atomic

        target = Path(path)
        if not target.parent.is_dir():  # save writes a file; it does not make folders
            msg = f"cannot write scorer file '{target}': folder '{target.parent}' does not exist"
            raise InputError(msg)
        text = self.to_json()
        try:
            write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"), "edges")
        except OutputError as exc:  # save's documented error type
            raise InputError(str(exc)) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RFMScorer:
        """Read a scorer written by :meth:`save`.

        Raises
        ------
        InputError
            The file is missing or unreadable, is not JSON, or is not a valid scorer of this
            format version.
        """
        from fastseg.io import read_text

        target = Path(path)
        text = read_text(target, "scorer file", missing_hint="fit and save a scorer first")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = (
                f"scorer file '{target}' is not valid JSON (line {exc.lineno}, column "
                f"{exc.colno}: {exc.msg}); save the scorer again"
            )
            raise InputError(msg) from None
        try:
            return cls.from_dict(data)
        except ParameterError as exc:
            msg = f"scorer file '{target}': {exc}"
            raise InputError(msg) from None
