"""Per-customer features from clean canonical orders, profiles and events.

The hot part — one pass over every order row — runs in a Numba kernel
(:func:`fastseg.kernels.aggregate.aggregate_orders`): on this machine it is several times faster
than a Polars ``group_by`` with the same aggregations (see ``docs/performance.md``). Everything
around it (typing, joins with profiles and events, the rule aggregates) is Polars.

Conventions (``docs/rfm.md`` states them for users):

* ``recency_days`` = ``as_of`` − date of the last order (0 = ordered on the scoring date);
* an *order* is a row with amount >= 0 (first line of its ``order_id`` when ids are mapped);
  refund rows (amount < 0) are not orders but count in ``monetary``;
* window ``N`` days holds rows dated on or after ``as_of - N`` (and not after ``as_of``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import numpy as np
import polars as pl

from fastseg.errors import DataError, ParameterError
from fastseg.orders import Orders

__all__ = [
    "DEFAULT_WINDOWS",
    "EVENT_WINDOWS",
    "customer_features",
    "encode_customers",
    "event_features",
    "join_customers",
    "sanitize",
]

DEFAULT_WINDOWS: tuple[int, ...] = (30, 90, 365)
EVENT_WINDOWS: tuple[int, ...] = (30, 90)
_EPOCH = dt.date(1970, 1, 1)


def sanitize(name: str) -> str:
    """A column-name-safe, lower-case identifier for an event type or filter value."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower()
    return s or "_"


def check_windows(windows: Sequence[int]) -> tuple[int, ...]:
    """Validate trailing windows in days (positive integers, distinct), sorted."""
    out = []
    for w in windows:
        if isinstance(w, bool) or not isinstance(w, int | np.integer) or int(w) < 1:
            msg = f"windows: expected positive whole numbers of days (e.g. 30,90,365), got {w!r}"
            raise ParameterError(msg)
        out.append(int(w))
    if len(set(out)) != len(out):
        msg = f"windows: each window must appear once, got {list(windows)}"
        raise ParameterError(msg)
    return tuple(sorted(out))


def encode_customers(ids: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Dense codes for customer ids (integers or text) and the distinct ids in ascending order."""
    from fastseg.kernels.aggregate import encode_int_ids

    if ids.dtype == pl.String:
        phys = ids.cast(pl.Categorical).to_physical().cast(pl.Int64).to_numpy()
        codes, uniq_phys = encode_int_ids(phys)
        # categorical codes are assigned in first-seen order: sort the distinct ids as text
        where = np.empty(uniq_phys.shape[0], np.int64)
        where[codes] = np.arange(codes.shape[0])  # any row of each code names it
        names = ids.gather(where)
        order = names.arg_sort().to_numpy()
        rank = np.empty_like(order)
        rank[order] = np.arange(order.shape[0])
        return rank.astype(codes.dtype)[codes], names.gather(order).alias("customer_id")
    codes, uniques = encode_int_ids(ids.to_numpy())
    return codes, pl.Series("customer_id", uniques, dtype=pl.Int64)


class OrderAggregator:
    """Per-customer order features accumulated over batches of clean canonical rows.

    Batches (Polars frames with ``customer_id``, ``order_date``, ``amount``, ``_order`` and
    optionally ``category`` and ``_discount``/``discount``) go through :meth:`add` one after the
    other; :meth:`finish` returns the features. Memory grows with the customers, not the rows.

    Parameters
    ----------
    as_of
        Scoring date (rows must not be dated after it).
    windows
        Trailing windows in days.
    id_range
        ``(lo, hi)`` of integer customer ids when known: ids are then coded through a lookup
        table instead of a hash table.
    rows
        Number of rows to come, when known: sizes the accumulators up front.
    """

    def __init__(
        self,
        as_of: dt.date,
        windows: Sequence[int] = DEFAULT_WINDOWS,
        *,
        id_range: tuple[int, int] | None = None,
        rows: int | None = None,
    ) -> None:
        from fastseg.kernels.aggregate import CategoryCodes, new_accumulators
        from fastseg.kernels.encode import IdEncoder

        self.as_of = as_of
        self.windows = check_windows(windows)
        self.as_of_day = (as_of - _EPOCH).days
        self.since = np.array([self.as_of_day - w for w in self.windows], np.int32)
        lo, hi = id_range if id_range is not None else (None, None)
        self.encoder = IdEncoder(lo, hi)
        # "offset" mode: integer ids in a range no wider than a few times the customers need no
        # coding at all (code = id - lo; customers come out sorted by id for free).
        self.offset = None
        width = 8 * (8 + 2 * len(self.windows))
        capacity = max(1 << 10, (rows or 0) // 8)
        if lo is not None and hi is not None:
            span = hi - lo + 1
            capacity = min(span, rows) if rows else span
            if span * width <= max(64 << 20, 24 * (rows or 0)):  # no more than the rows take
                self.offset = lo
                capacity = span
        self.acc, self.catmask = new_accumulators(max(1, capacity), len(self.windows))
        self.id_dtype: pl.DataType | None = None
        self._names: list[pl.Series] = []  # text ids, in code order
        self._cat_codes = CategoryCodes()  # category (by hash) -> local index
        self._n_cats = 0
        self._cat_pairs: list[pl.DataFrame] = []  # (code, category) beyond the 64 bitmask ones
        self.has_category = False
        self.has_discount = False

    def _codes(self, ids: pl.Series) -> np.ndarray:
        if self.id_dtype is None:
            self.id_dtype = ids.dtype
        elif ids.dtype != self.id_dtype:
            ids = ids.cast(self.id_dtype)
        if ids.dtype != pl.String:
            if self.offset is not None:
                values = ids.to_numpy()
                if values.shape[0] and (
                    values.min() < self.offset or values.max() - self.offset >= self.acc.shape[0]
                ):
                    msg = "OrderAggregator: customer id outside the range given at construction"
                    raise ParameterError(msg)
                return (values - self.offset).astype(np.int32)
            return self.encoder.encode(ids.to_numpy())
        # Text ids are coded by a 64-bit hash (categorical codes are local to each batch), and
        # every row's text is compared with its code's so that a collision can never merge two
        # customers silently.
        hashed = ids.hash(seed=0xC0DE).to_numpy().view(np.int64)
        before = self.encoder.n_unique
        codes = self.encoder.encode(hashed)
        new = codes >= before
        if new.any():
            rows = np.flatnonzero(new)
            where = np.empty(self.encoder.n_unique - before, np.int64)
            where[codes[rows] - before] = rows  # any row of each new code names it
            self._names.append(ids.gather(where))
        known = pl.concat(self._names, rechunk=False).gather(codes)
        if not bool((known == ids).all()):
            clash = ids.filter(known != ids)[0]
            msg = (
                f"customer id {clash!r} shares a 64-bit hash with another id; "
                "map the ids to integers (or report this: the chance is about 1 in 10^10)"
            )
            raise DataError(msg)
        return codes

    def _categories(self, cat: pl.Series, codes: np.ndarray, bought: np.ndarray) -> np.ndarray:
        """Local category index per row for the 64-bit masks (-1: none); the rest go to pairs.

        Categories are told apart by a 64-bit hash of their value: cheaper than a categorical
        cast, and the same whatever the column's type (text, categorical, numbers).
        """
        counted = bought
        if cat.null_count():
            counted = bought & cat.is_not_null().to_numpy()
        local = self._cat_codes.encode(cat.hash(seed=0x5EED).to_numpy(), counted)
        self._n_cats = self._cat_codes.n
        wide = local >= 64
        if wide.any():
            pairs = pl.DataFrame({"code": codes[wide], "cat": local[wide]}).unique()
            self._cat_pairs.append(pairs)
            local[wide] = -1
        return local.astype(np.int8)

    def add(self, batch: pl.DataFrame) -> None:
        """Aggregate one batch of clean rows (no nulls, no NaN, none after ``as_of``)."""
        from fastseg.kernels.aggregate import aggregate_orders, grow_accumulators

        if batch.height == 0:
            return
        codes = self._codes(batch["customer_id"])
        if self.offset is None:
            self.acc, self.catmask = grow_accumulators(
                self.acc, self.catmask, self.encoder.n_unique
            )
        amount = batch["amount"].to_numpy()
        has_discount = None
        if "_discount" in batch.columns:
            has_discount = batch["_discount"].to_numpy()
        elif "discount" in batch.columns:
            has_discount = (batch["discount"].fill_null(0.0).fill_nan(0.0) > 0).to_numpy()
        self.has_discount |= has_discount is not None
        cats = None
        if "category" in batch.columns:
            self.has_category = True
            cats = self._categories(batch["category"], codes, amount >= 0)
        aggregate_orders(
            codes,
            self.acc.shape[0],
            batch["order_date"].to_physical().to_numpy(),
            amount,
            batch["_order"].to_numpy(),
            self.since,
            has_discount,
            cats,
            out=(self.acc, self.catmask),
        )

    def finish(self) -> pl.DataFrame:
        """The features, one row per customer seen, sorted by ``customer_id``.

        Call once: the accumulators are reordered in place.
        """
        from fastseg.kernels.aggregate import compact_rows

        n = self.encoder.n_unique
        if self.offset is not None:
            seen = (self.acc[:, 0] > 0) | (self.acc[:, 5] > 0)  # an order or a refund row
            rows = np.flatnonzero(seen)
            ids = pl.Series("customer_id", rows + self.offset, dtype=self.id_dtype or pl.Int64)
            compact_rows(self.acc, self.catmask, rows)  # in place: no second copy of the state
            m = rows.shape[0]
            return self._frame(ids, self.acc[:m], self.catmask[:m], np.arange(m))
        if self.id_dtype == pl.String:
            names = pl.concat(self._names) if self._names else pl.Series([], dtype=pl.String)
            order = names.arg_sort().to_numpy()
            ids = names.gather(order).alias("customer_id")
        else:
            order = self.encoder.sort_order()
            ids = pl.Series(
                "customer_id", self.encoder.uniques[order], dtype=self.id_dtype or pl.Int64
            )
        return self._frame(ids, self.acc[:n][order], self.catmask[:n], order)

    def _frame(
        self, ids: pl.Series, acc: np.ndarray, catmask: np.ndarray, order: np.ndarray
    ) -> pl.DataFrame:
        """``acc`` and ``ids`` in output order; ``catmask`` and pair codes still in code order
        (``order`` maps output rows to codes)."""
        distinct = None
        if self.has_category:
            distinct = np.bitwise_count(catmask).astype(np.int64)
            if self._cat_pairs:
                extra = pl.concat(self._cat_pairs).unique().group_by("code").len()
                codes = extra["code"].to_numpy()
                if self.offset is not None:  # pair codes are id offsets: map them to output rows
                    codes = np.searchsorted(ids.to_numpy() - self.offset, codes)
                np.add.at(distinct, codes, extra["len"].to_numpy().astype(np.int64))
            if self.offset is None:
                distinct = distinct[order]
        return _features_frame(ids, acc, distinct, self.has_discount, self.windows, self.as_of_day)


def _features_frame(
    ids: pl.Series,
    acc: np.ndarray,
    distinct: np.ndarray | None,
    has_discount: bool,
    windows: tuple[int, ...],
    as_of_day: int,
) -> pl.DataFrame:
    freq = acc[:, 0].astype(np.int64)
    ordered = freq > 0
    first = np.where(ordered, acc[:, 1], 0).astype(np.int32)
    last = np.where(ordered, acc[:, 2], 0).astype(np.int32)
    valid = pl.Series(ordered)
    date_of = lambda a, name: pl.Series(name, a).cast(pl.Date)  # noqa: E731
    cols: dict[str, pl.Series] = {
        "customer_id": ids,
        "recency_days": pl.Series("recency_days", as_of_day - last.astype(np.int64)),
        "frequency": pl.Series("frequency", freq),
        "monetary": pl.Series("monetary", acc[:, 3]),
        "aov": pl.Series("aov", acc[:, 4] / np.maximum(freq, 1)),
        "first_order_date": date_of(first, "first_order_date"),
        "last_order_date": date_of(last, "last_order_date"),
        "tenure_days": pl.Series("tenure_days", as_of_day - first.astype(np.int64)),
        "avg_days_between_orders": pl.Series(
            "avg_days_between_orders", (last - first) / np.maximum(freq - 1, 1).astype(np.float64)
        ),
    }
    for k, w in enumerate(windows):
        cols[f"orders_{w}d"] = pl.Series(f"orders_{w}d", acc[:, 8 + 2 * k].astype(np.int64))
        cols[f"revenue_{w}d"] = pl.Series(f"revenue_{w}d", acc[:, 9 + 2 * k])
    cols["refund_count"] = pl.Series("refund_count", acc[:, 5].astype(np.int64))
    cols["refund_amount"] = pl.Series("refund_amount", acc[:, 6])
    if distinct is not None:
        cols["distinct_categories"] = pl.Series("distinct_categories", distinct)
    if has_discount:
        cols["discount_share"] = pl.Series("discount_share", acc[:, 7] / np.maximum(freq, 1))
    out = pl.DataFrame(list(cols.values()))
    nullable = ["recency_days", "aov", "first_order_date", "last_order_date", "tenure_days"]
    if has_discount:
        nullable.append("discount_share")
    exprs = [pl.when(valid).then(pl.col(c)).alias(c) for c in nullable]
    exprs.append(
        pl.when(pl.Series(freq > 1))
        .then(pl.col("avg_days_between_orders"))
        .alias("avg_days_between_orders")
    )
    return out.with_columns(exprs)


def customer_features(orders: Orders, *, windows: Sequence[int] = DEFAULT_WINDOWS) -> pl.DataFrame:
    """One row per customer who has at least one used order row, sorted by ``customer_id``.

    Columns: ``customer_id``, ``recency_days``, ``frequency``, ``monetary``, ``aov``,
    ``first_order_date``, ``last_order_date``, ``tenure_days``, ``avg_days_between_orders``,
    ``orders_{N}d`` and ``revenue_{N}d`` per window, ``refund_count``, ``refund_amount``, and
    ``distinct_categories`` / ``discount_share`` when orders have ``category`` / ``discount``.
    """
    ids = orders.frame["customer_id"]
    id_range = None
    if ids.dtype.is_integer() and ids.len():
        id_range = (int(ids.min()), int(ids.max()))  # type: ignore[arg-type]
    agg = OrderAggregator(orders.as_of, windows, id_range=id_range, rows=ids.len())
    agg.add(orders.frame)
    return agg.finish()


def event_features(
    events: pl.DataFrame, as_of: dt.date, windows: Sequence[int] = EVENT_WINDOWS
) -> pl.DataFrame:
    """Per customer and event type E: ``E_{N}d`` counts per window and ``days_since_E``.

    Event types become column-safe names (``site-visit`` -> ``site_visit``); types whose names
    collide after that are counted together. One row per customer with at least one event.
    """
    from fastseg.kernels.aggregate import aggregate_events

    windows = check_windows(windows)
    ev = events.filter(pl.col("event").is_not_null())
    types = sorted(ev["event"].unique().to_list())
    safe_names = sorted({sanitize(t) for t in types})
    if ev.height == 0 or not safe_names:
        return events.select("customer_id").head(0)
    lut = {t: safe_names.index(sanitize(t)) for t in types}
    etype = ev["event"].replace_strict(lut, return_dtype=pl.Int64).to_numpy()
    codes, ids = encode_customers(ev["customer_id"])
    as_of_day = (as_of - _EPOCH).days
    since = np.array([as_of_day - w for w in windows], np.int32)
    day = ev["event_date"].to_physical().to_numpy()
    counts, last = aggregate_events(codes, ids.len(), etype, len(safe_names), day, since)
    never = last == np.iinfo(np.int32).min
    cols: list[pl.Series] = [ids]
    for e, name in enumerate(safe_names):
        for k, w in enumerate(windows):
            cols.append(pl.Series(f"{name}_{w}d", counts[:, e, k]))
    for e, name in enumerate(safe_names):
        days = pl.Series(f"days_since_{name}", as_of_day - last[:, e].astype(np.int64))
        cols.append(days.scatter(np.flatnonzero(never[:, e]), None) if never[:, e].any() else days)
    return pl.DataFrame(cols)


#: features that are 0 (not null) for a customer with no order
ZERO_FILL = ("frequency", "monetary", "refund_count", "refund_amount", "distinct_categories")


def join_customers(
    features: pl.DataFrame,
    profiles: pl.DataFrame | None = None,
    events: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Add profile columns and event features; customers known only from profiles or events are
    prospects (frequency 0). The result is sorted by ``customer_id``."""
    out = features
    zero_cols = [
        c for c in out.columns if c in ZERO_FILL or re.fullmatch(r"(orders|revenue)_\d+d", c)
    ]
    added = False
    if profiles is not None:
        prof = profiles.drop(
            [c for c in profiles.columns if c in out.columns and c != "customer_id"]
        )
        out = out.join(prof, on="customer_id", how="full", coalesce=True)
        added = True
    if events is not None:
        ev = events.drop([c for c in events.columns if c in out.columns and c != "customer_id"])
        count_cols = [
            c for c in ev.columns if c != "customer_id" and not c.startswith("days_since_")
        ]
        out = out.join(ev, on="customer_id", how="full", coalesce=True)
        out = out.with_columns(pl.col(c).fill_null(0) for c in count_cols)
        added = True
    if added:
        out = out.with_columns(pl.col(c).fill_null(0) for c in zero_cols).sort("customer_id")
    return out
