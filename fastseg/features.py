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

from fastseg.errors import ParameterError
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


def customer_features(orders: Orders, *, windows: Sequence[int] = DEFAULT_WINDOWS) -> pl.DataFrame:
    """One row per customer who has at least one used order row, sorted by ``customer_id``.

    Columns: ``customer_id``, ``recency_days``, ``frequency``, ``monetary``, ``aov``,
    ``first_order_date``, ``last_order_date``, ``tenure_days``, ``avg_days_between_orders``,
    ``orders_{N}d`` and ``revenue_{N}d`` per window, ``refund_count``, ``refund_amount``, and
    ``distinct_categories`` / ``discount_share`` when orders have ``category`` / ``discount``.
    """
    from fastseg.kernels.aggregate import aggregate_orders

    windows = check_windows(windows)
    df = orders.frame
    as_of_day = (orders.as_of - _EPOCH).days
    codes, ids = encode_customers(df["customer_id"])
    n_cust = ids.len()
    day = df["order_date"].to_physical().to_numpy()
    amount = df["amount"].to_numpy()
    is_order = df["_order"].to_numpy()
    since = np.array([as_of_day - w for w in windows], np.int32)
    has_discount = None
    if "_discount" in df.columns:
        has_discount = df["_discount"].to_numpy()
    elif "discount" in df.columns:
        has_discount = (df["discount"].fill_null(0.0).fill_nan(0.0) > 0).to_numpy()
    cats, n_cats = _category_codes(df) if "category" in df.columns else (None, 0)
    acc, catmask = aggregate_orders(codes, n_cust, day, amount, is_order, since, has_discount, cats)

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
    if "category" in df.columns:
        if cats is not None:
            counts = np.bitwise_count(catmask).astype(np.int64)
        else:
            counts = _distinct_categories_polars(df, codes, n_cust)
        cols["distinct_categories"] = pl.Series("distinct_categories", counts)
    if has_discount is not None:
        cols["discount_share"] = pl.Series("discount_share", acc[:, 7] / np.maximum(freq, 1))
    out = pl.DataFrame(list(cols.values()))
    nullable = ["recency_days", "aov", "first_order_date", "last_order_date", "tenure_days"]
    exprs = [pl.when(valid).then(pl.col(c)).alias(c) for c in nullable]
    exprs.append(pl.when(pl.Series(freq > 1)).then(pl.col("avg_days_between_orders")).alias("avg_days_between_orders"))
    if "discount_share" in out.columns:
        exprs.append(pl.when(valid).then(pl.col("discount_share")).alias("discount_share"))
    return out.with_columns(exprs)


def _category_codes(df: pl.DataFrame) -> tuple[np.ndarray | None, int]:
    """Category code per row (0..K-1; -1 for refunds and nulls), or None when K > 64."""
    cat = df["category"]
    if not isinstance(cat.dtype, pl.Categorical | pl.Enum):
        cat = cat.cast(pl.String).cast(pl.Categorical)
    phys = cat.to_physical()
    present = phys.drop_nulls().unique().to_numpy()
    if present.shape[0] > 64:
        return None, int(present.shape[0])
    lut = np.full(int(present.max()) + 2 if present.shape[0] else 1, -1, np.int8)
    lut[present] = np.arange(present.shape[0], dtype=np.int8)
    idx = phys.fill_null(lut.shape[0] - 1).to_numpy()
    codes = lut[idx]
    codes[df["amount"].to_numpy() < 0] = -1
    return codes, int(present.shape[0])


def _distinct_categories_polars(df: pl.DataFrame, codes: np.ndarray, n_cust: int) -> np.ndarray:
    """Distinct categories bought per customer when there are more than 64 categories."""
    frame = pl.DataFrame({"c": codes, "cat": df["category"], "a": df["amount"]})
    agg = (
        frame.filter(pl.col("a") >= 0)
        .group_by("c")
        .agg(pl.col("cat").drop_nulls().n_unique().alias("n"))
    )
    full = np.zeros(n_cust, np.int64)
    full[agg["c"].to_numpy()] = agg["n"].to_numpy()
    return full


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
    zero_cols = [c for c in out.columns if c in ZERO_FILL or re.fullmatch(r"(orders|revenue)_\d+d", c)]
    added = False
    if profiles is not None:
        prof = profiles.drop([c for c in profiles.columns if c in out.columns and c != "customer_id"])
        out = out.join(prof, on="customer_id", how="full", coalesce=True)
        added = True
    if events is not None:
        ev = events.drop([c for c in events.columns if c in out.columns and c != "customer_id"])
        count_cols = [c for c in ev.columns if c != "customer_id" and not c.startswith("days_since_")]
        out = out.join(ev, on="customer_id", how="full", coalesce=True)
        out = out.with_columns(pl.col(c).fill_null(0) for c in count_cols)
        added = True
    if added:
        out = out.with_columns(pl.col(c).fill_null(0) for c in zero_cols).sort("customer_id")
    return out
