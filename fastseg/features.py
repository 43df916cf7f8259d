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
from typing import Any

import numpy as np
import polars as pl

from fastseg.config import DEFAULT_WINDOWS, EPOCH, EVENT_WINDOWS, MAX_WINDOW
from fastseg.errors import DataError, ParameterError

__all__ = [
    "DEFAULT_WINDOWS",
    "EVENT_WINDOWS",
    "encode_customers",
    "event_features",
    "event_frame",
    "join_customers",
    "sanitize",
]

_EPOCH = EPOCH
#: accumulator records allocated before the first hash-coded customer (they grow by doubling)
_START_CUSTOMERS = 1 << 16


def sanitize(name: str) -> str:
    """A column-name-safe, lower-case identifier for an event type or filter value."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower()
    return s or "_"


def check_windows(windows: Sequence[int]) -> tuple[int, ...]:
    """Validate trailing windows in days (positive integers, distinct), sorted."""
    out = []
    for w in windows:
        if (
            isinstance(w, bool)
            or not isinstance(w, int | np.integer)
            or not 1 <= int(w) <= MAX_WINDOW
        ):
            msg = (
                f"windows: expected whole numbers of days from 1 to {MAX_WINDOW:,} (e.g. "
                f"30,90,365), got {w!r}"
            )
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
        btyd: bool = False,
        top_category: bool = False,
    ) -> None:
        from fastseg.kernels.aggregate import CategoryCodes, acc_dtype, new_accumulators
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
        width = acc_dtype(len(self.windows)).itemsize
        # Hash-coded ids: the accumulators grow (doubling) with the customers seen, never with
        # the rows — sized by the rows they were 10M zeroed records at 1e7 rows.
        capacity = _START_CUSTOMERS
        if lo is not None and hi is not None:
            span = hi - lo + 1
            if span * width <= max(64 << 20, 24 * (rows or 0)):  # no more than the rows take
                self.offset = lo
                capacity = span
        self.acc = new_accumulators(max(1, capacity), len(self.windows))
        self._rows = rows
        #: distinct purchase days per customer, for the BTYD summary (only when asked for)
        self.days: Any = None
        if btyd:
            from fastseg.kernels.days import PurchaseDays

            self.days = PurchaseDays(max(1, capacity), rows)
        self.id_dtype: pl.DataType | None = None
        self._text: Any = None  # text ids: a TextIds (their codes, hashes and first texts)
        #: category (by hash) -> local index: :meth:`add_arrays`' category codes come from it
        self.categories = CategoryCodes()
        self._cat_pairs: list[pl.DataFrame] = []  # (code, category) beyond the 64 bitmask ones
        #: gross revenue per (customer code, local category), for ``top_category`` (only
        #: when asked for: it costs about a third of the order pass)
        self.top_category = top_category
        #: keep the revenue per category / the purchase days without adding their columns to
        #: the features (a saved state that carries them: :mod:`fastseg.state`)
        self.keep_category_revenue = False
        self.btyd = btyd
        self._cat_revenue: Any = None
        #: local category index -> its text (given by :meth:`name_categories`)
        self.category_names: dict[int, str] = {}
        self.has_category = False
        self.has_discount = False

    def _int_codes(self, values: np.ndarray) -> np.ndarray:
        if self.offset is not None:
            if values.shape[0] and (
                values.min() < self.offset or values.max() - self.offset >= self.acc.shape[0]
            ):
                msg = "OrderAggregator: customer id outside the range given at construction"
                raise ParameterError(msg)
            return (values - self.offset).astype(np.int32)
        return self.encoder.encode(values)

    def text_codes(self, values: pl.Series) -> np.ndarray:
        """Customer codes of text ids (for instance a Parquet dictionary's distinct values), with
        the same exact collision check as rows get: give each distinct value once and map rows
        to its code."""
        if values.dtype != pl.String:
            msg = f"OrderAggregator.text_codes: expected text ids, got {values.dtype}"
            raise ParameterError(msg)
        return self.text_codes_arrow(values.to_arrow(compat_level=pl.CompatLevel.oldest()))

    def text_codes_arrow(self, values: Any) -> np.ndarray:
        """:meth:`text_codes` of an Arrow string array with no nulls (no copy of the texts)."""
        from fastseg.kernels.encode import TextIds

        if self.id_dtype is None:
            self.id_dtype = pl.String()
        elif self.id_dtype != pl.String:
            msg = "OrderAggregator: text customer ids after integer ones"
            raise ParameterError(msg)
        if self._text is None:
            self._text = TextIds()
            self.encoder = self._text.encoder
        codes, bad = self._text.encode(values)
        if bad >= 0:
            raise _clash(values[bad].as_py())
        return codes

    def _codes(self, ids: pl.Series) -> np.ndarray:
        if self.id_dtype is None:
            self.id_dtype = ids.dtype
        elif ids.dtype != self.id_dtype:
            ids = ids.cast(self.id_dtype)
        if ids.dtype == pl.String:
            return self.text_codes(ids)
        return self._int_codes(ids.to_numpy())

    def _names(self) -> pl.Series:
        """The text ids, in code order (none before the first text id)."""
        if self._text is None:
            return pl.Series("customer_id", [], dtype=pl.String)
        return pl.Series("customer_id", self._text.names(), dtype=pl.String)

    def ids_to_text(self) -> None:
        """The integer ids coded so far become text (as Int64 writes them), codes unchanged:
        for sources whose ids turn out to be text after batches of plain integers (CSV)."""
        from fastseg.kernels.encode import TextIds

        if self.offset is not None:
            msg = "OrderAggregator.ids_to_text: ids coded by offset cannot become text"
            raise ParameterError(msg)
        names = pl.Series("customer_id", self.encoder.uniques.copy()).cast(pl.String)
        text = TextIds()
        codes, bad = text.encode(names.to_arrow(compat_level=pl.CompatLevel.oldest()))
        if bad >= 0 or text.n_unique != names.len():
            raise _clash(names[max(bad, 0)])
        assert bool((codes == np.arange(names.len())).all())
        self._text, self.encoder = text, text.encoder
        self.id_dtype = pl.String()

    def _mask_codes(self, local: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Category codes for the 64-bit masks (-1: none); codes beyond go to exact pairs."""
        wide = local >= 64
        if wide.any():
            pairs = pl.DataFrame(
                {"code": codes[wide].astype(np.int64), "cat": local[wide].astype(np.int64)}
            ).unique()
            self._cat_pairs.append(pairs)
            local = np.where(wide, -1, local)
        return local.astype(np.int8)

    def name_categories(self, local: np.ndarray, names: Sequence[str | None]) -> None:
        """Record the text of local category indices (``top_category`` names them)."""
        for k, name in zip(local.tolist(), names, strict=True):
            if k >= 0 and name is not None:
                self.category_names.setdefault(int(k), name)

    def add_arrays(
        self,
        ids: np.ndarray,
        day: np.ndarray,
        amount: np.ndarray,
        flags: np.ndarray,
        categories: np.ndarray | None,
        *,
        has_discount: bool,
        coded: bool = False,
        lines: Any = None,
        order_ids: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Aggregate clean rows given as arrays (the direct Parquet path); returns the rows'
        customer codes (None for no row).

        ``ids`` int64 customer ids; ``day`` int32 days since 1970-01-01; ``flags`` uint8 with
        bit 0 set for an order and bit 1 for a discount; ``categories`` the local category code
        of each row from this aggregator's :attr:`categories` (-1: none),
        or None when the orders have no category. The arrays are not kept. ``coded=True``:
        ``ids`` are already customer codes (offset mode: ``id - lo``, checked by the caller;
        text ids: codes from :meth:`text_codes`). ``lines``: a
        :class:`fastseg.kernels.lines.OrderLines` that clears the order flag (in place) of
        every later line of an order already seen, by ``order_ids`` (int64; flag bit 2: the
        row has none).
        """
        if ids.shape[0] == 0:
            return None
        if self.id_dtype is None:
            self.id_dtype = pl.Int64()
        codes = ids if coded else self._int_codes(ids)
        if lines is not None:
            if order_ids is None:
                msg = "OrderAggregator.add_arrays: lines needs order_ids"
                raise ParameterError(msg)
            lines.mark(codes, order_ids, flags)
        self.has_discount |= has_discount
        cats = None
        if categories is not None:
            self.has_category = True
            cats = self._mask_codes(categories, codes)
        self._aggregate(codes, day, amount, flags, cats)
        if categories is not None and (self.top_category or self.keep_category_revenue):
            self._add_category_revenue(codes, categories.astype(np.int64), amount)
        return codes

    def _add_category_revenue(
        self, codes: np.ndarray, cats: np.ndarray, amount: np.ndarray
    ) -> None:
        """Gross revenue per (customer, category) of the rows with a category and an amount
        >= 0 (the check kernel gives refund rows no category)."""
        from fastseg.kernels.rules import CategoryRevenue

        if self._cat_revenue is None:
            self._cat_revenue = CategoryRevenue(self.acc.shape[0])
        self._cat_revenue.grow(self.acc.shape[0])
        self._cat_revenue.add(codes, cats, amount)

    def _aggregate(
        self,
        codes: np.ndarray,
        day: np.ndarray,
        amount: np.ndarray,
        flags: np.ndarray,
        cats: np.ndarray | None,
    ) -> None:
        from fastseg.kernels.aggregate import aggregate_orders, grow_accumulators

        if self.offset is None:
            self.acc = grow_accumulators(self.acc, self.encoder.n_unique, in_place=True)
        aggregate_orders(codes, day, amount, flags, self.since, self.acc, cats)
        if self.days is not None:
            self.days.grow(self.acc.shape[0])
            self.days.add(codes, day, amount, flags)

    def merge(self, other: OrderAggregator) -> None:
        """Add ``other``'s customers (aggregated from other rows: another batch, partition or
        file) into this one, as if its rows had been added here.

        Both must be for the same scoring date and windows. Counts, days and category sets
        merge exactly; money sums (the revenue per category behind ``top_category`` too) equal
        a single pass up to float rounding. The rule aggregates
        (:class:`fastseg.aggregates.RuleAggregates`) are kept by the row pass, not here. The lines of one
        order must not be split between the two (partition rows by customer, or keep one
        :class:`fastseg.kernels.lines.OrderLines` for both).
        """
        from fastseg.kernels.aggregate import grow_accumulators, merge_accumulators

        if (other.as_of, other.windows) != (self.as_of, self.windows):
            msg = "OrderAggregator.merge: both must have the same as_of and windows"
            raise ParameterError(msg)
        ids, n = other._ids()
        if ids is None or n == 0:
            return
        if self.id_dtype is None:
            self.id_dtype = other.id_dtype
        if (other.id_dtype == pl.String) != (self.id_dtype == pl.String):
            msg = "OrderAggregator.merge: one has text customer ids, the other integers"
            raise ParameterError(msg)
        if isinstance(ids, pl.Series):
            codes = self.text_codes(ids).astype(np.int64)
        else:
            codes = self._int_codes(ids).astype(np.int64)
            if self.offset is None:
                self.acc = grow_accumulators(self.acc, self.encoder.n_unique, in_place=True)
        if self.offset is None and self.id_dtype == pl.String:
            self.acc = grow_accumulators(self.acc, self.encoder.n_unique, in_place=True)
        lut = np.full(64, 64, np.int64)
        if other.categories.n:
            hashes = other.categories.hashes
            local = self.categories.encode(hashes, np.ones(hashes.shape[0], np.bool_))
            lut[: min(64, local.shape[0])] = local[:64]
            pairs = [df.with_columns(pl.col("code").cast(pl.Int64)) for df in other._cat_pairs]
            wide = np.flatnonzero(local[:64] >= 64)  # mask bits of other beyond this one's 64
            cats = other.acc["cats"][:n]
            for k in wide:
                rows = np.flatnonzero((cats >> np.uint64(k)) & np.uint64(1))
                pairs.append(pl.DataFrame({"code": rows, "cat": np.full(rows.shape[0], k)}))
            for df in pairs:
                code = codes[df["code"].to_numpy()]
                cat = local[df["cat"].to_numpy()]
                self._mask_codes(cat, code)  # beyond 64: kept as exact pairs
                bits = cat < 64
                if bits.any():
                    np.bitwise_or.at(
                        self.acc["cats"], code[bits], np.uint64(1) << cat[bits].astype(np.uint64)
                    )
        merge_accumulators(self.acc, other.acc[:n], codes, lut)
        if other._cat_revenue is not None:  # (code, category) revenue: exact up to rounding
            full = self.categories.encode(
                other.categories.hashes, np.ones(other.categories.n, np.bool_)
            )
            for k, name in other.category_names.items():
                self.category_names.setdefault(int(full[k]), name)
            o_code, o_cat, o_sum = other._cat_revenue.entries()
            self._add_category_revenue(codes[o_code], full[o_cat], o_sum)
        if (self.days is None) != (other.days is None):
            msg = "OrderAggregator.merge: one keeps purchase days (btyd=True), the other not"
            raise ParameterError(msg)
        if self.days is not None:
            self.days.grow(self.acc.shape[0])
            self.days.merge(other.days, codes)
        self.has_category |= other.has_category
        self.has_discount |= other.has_discount

    # ------------------------------------------------------------------------- saved state

    def renumber(self) -> np.ndarray | None:
        """Give the customers coded so far new codes in ascending id order (before
        :meth:`export_state` of a new state: a later :meth:`finish` then reads the records
        nearly in order instead of at random — 2.6 s of 9M customers). Returns ``rank``, the
        new code of each old one, for the caller's own code-indexed state; None when the codes
        were in order already (or are offsets, which are)."""
        from fastseg.kernels.days import PurchaseDays
        from fastseg.kernels.encode import IdEncoder, TextIds
        from fastseg.kernels.rules import CategoryRevenue

        if self.offset is not None:
            return None
        n = self.encoder.n_unique
        if self.id_dtype == pl.String:
            names = self._names()
            order = names.arg_sort().to_numpy().astype(np.int64)
        else:
            order = self.encoder.sort_order()
        if n < 2 or bool((order[1:] > order[:-1]).all()):
            return None
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        self.acc[:n] = self.acc[:n][order]
        if self.id_dtype == pl.String:
            text = TextIds()
            _, bad = text.encode(names.gather(order).to_arrow(compat_level=pl.CompatLevel.oldest()))
            assert bad < 0 and text.n_unique == n
            self._text, self.encoder = text, text.encoder
        else:
            keys, vals = self.encoder.table()  # type: ignore[misc]
            used = vals >= 0
            vals = vals.copy()
            vals[used] = rank[vals[used]].astype(np.int32)
            self.encoder = IdEncoder.restore(self.encoder.uniques[order], keys, vals)
        self._cat_pairs = [
            df.with_columns(pl.Series("code", rank[df["code"].to_numpy().astype(np.int64)]))
            for df in self._cat_pairs
        ]
        if self._cat_revenue is not None:
            code, cat, total = self._cat_revenue.entries()
            self._cat_revenue = CategoryRevenue(self.acc.shape[0])
            self._cat_revenue.add(rank[code], cat, total)
        if self.days is not None:
            days = PurchaseDays(self.acc.shape[0])
            days.merge(self.days, rank)
            self.days = days
        return rank

    def export_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Everything a later process needs to go on adding rows as if it were this one
        (:meth:`load_state`), before :meth:`finish`: the ids in code order, the records'
        all-time fields (:data:`fastseg.kernels.aggregate.STATE_FIELDS`; the windows are the caller's: they age), the
        category codes and names, and the ``top_category`` and purchase-day state when kept.
        Returns ``(arrays, record)``: numpy arrays (the text ids as an Arrow array) and a
        JSON-able record."""
        if self.offset is not None:
            msg = "OrderAggregator.export_state: ids coded by offset (give no id_range)"
            raise ParameterError(msg)
        n = self.encoder.n_unique
        arrays: dict[str, Any] = {}
        if self.id_dtype == pl.String:
            arrays["ids"] = self._names().to_arrow(compat_level=pl.CompatLevel.oldest())
        else:
            arrays["ids"] = self.encoder.uniques[:n].copy()
            table = self.encoder.table()
            if table is not None:
                arrays["enc_keys"], arrays["enc_vals"] = table
        from fastseg.kernels.aggregate import STATE_DTYPE, copy_records

        rec = np.empty(n, STATE_DTYPE)
        copy_records(self.acc, rec, to_acc=False)
        arrays["records"] = rec
        arrays["cat_hashes"] = self.categories.hashes
        pairs = (
            pl.concat(self._cat_pairs).unique()
            if self._cat_pairs
            else pl.DataFrame(schema={"code": pl.Int64, "cat": pl.Int64})
        )
        arrays["cat_pair_code"] = pairs["code"].to_numpy().astype(np.int64)
        arrays["cat_pair_cat"] = pairs["cat"].to_numpy().astype(np.int64)
        if self._cat_revenue is not None:
            r = self._cat_revenue
            arrays["catrev_rec"] = r.rec[:n] if r.rec.shape[0] >= n else r.rec
            arrays["catrev_code"], arrays["catrev_key"] = r.table.code, r.table.key
            arrays["catrev_sum"], arrays["catrev_counts"] = r.table.sum, r.table.counts
        if self.days is not None:
            d = self.days
            arrays["days_keys"], arrays["days_days"] = d.keys, d.days[:n]
            arrays["days_first"], arrays["days_gross"] = d.first[:n], d.first_gross[:n]
        record = {
            "customers": int(n),
            "ids": "text" if self.id_dtype == pl.String else "int",
            "category_names": {str(k): v for k, v in self.category_names.items()},
            "has_category": self.has_category,
            "has_discount": self.has_discount,
            "top_category": self.top_category or self.keep_category_revenue,
            "catrev_pairs": int(self._cat_revenue.table.n) if self._cat_revenue is not None else 0,
            "btyd": self.days is not None,
            "days_keys": int(self.days.n_keys) if self.days is not None else 0,
        }
        return arrays, record

    def load_state(self, arrays: Any, record: dict[str, Any]) -> None:
        """Start from the state :meth:`export_state` saved (on a fresh aggregator made with no
        ``id_range``, with the ``btyd`` and ``top_category`` of the saved one): the same codes,
        records (window fields zero), categories and the rest."""
        from fastseg.kernels.aggregate import copy_records
        from fastseg.kernels.rules import CategoryRevenue

        n = int(record["customers"])
        if n:
            ids = arrays["ids"]
            if record["ids"] == "text":
                self.text_codes_arrow(ids)
            elif "enc_keys" in arrays:  # the saved hash table: no id hashed again
                from fastseg.kernels.encode import IdEncoder

                self.id_dtype = pl.Int64()
                self.encoder = IdEncoder.restore(
                    np.asarray(ids, np.int64), arrays["enc_keys"], arrays["enc_vals"]
                )
            else:
                self.id_dtype = pl.Int64()
                self.encoder.encode(np.ascontiguousarray(ids, np.int64))
            if self.encoder.n_unique != n:
                msg = "OrderAggregator.load_state: the saved ids are not distinct"
                raise DataError(msg)
            # the records in one allocation, room for this run's new customers: each page is
            # written once (growing by doubling would copy and zero 100 bytes a customer again)
            acc = np.zeros(n + max(_START_CUSTOMERS, self._rows or 0), self.acc.dtype)
            acc["first_day"][n:] = np.iinfo(np.int32).max
            acc["last_day"][n:] = np.iinfo(np.int32).min
            copy_records(acc, np.ascontiguousarray(arrays["records"]), to_acc=True)
            self.acc = acc
        elif record["ids"] == "text":
            self.id_dtype = pl.String()
        hashes = np.asarray(arrays["cat_hashes"], np.uint64)
        if hashes.shape[0]:
            local = self.categories.encode(hashes, np.ones(hashes.shape[0], np.bool_))
            assert bool((local == np.arange(hashes.shape[0])).all())
        self.category_names = {int(k): v for k, v in record["category_names"].items()}
        code = np.asarray(arrays["cat_pair_code"], np.int64)
        if code.shape[0]:
            self._cat_pairs = [
                pl.DataFrame({"code": code, "cat": np.asarray(arrays["cat_pair_cat"], np.int64)})
            ]
        self.has_category = bool(record["has_category"])
        self.has_discount = bool(record["has_discount"])
        if "catrev_rec" in arrays:
            r = self._cat_revenue = CategoryRevenue(max(n, 1))
            r.rec[: arrays["catrev_rec"].shape[0]] = arrays["catrev_rec"]
            t = r.table
            t.code, t.key = np.array(arrays["catrev_code"]), np.array(arrays["catrev_key"])
            t.sum, t.counts = np.array(arrays["catrev_sum"]), np.array(arrays["catrev_counts"])
            t.shift = np.uint64(64 - (t.code.shape[0].bit_length() - 1))
            t.n = int(record["catrev_pairs"])
        if self.days is not None and "days_keys" in arrays:
            d = self.days
            d.grow(max(n, 1))
            d.keys = np.array(arrays["days_keys"])
            d.n_keys = int(record["days_keys"])
            d.days[:n], d.first[:n] = arrays["days_days"], arrays["days_first"]
            d.first_gross[:n] = arrays["days_gross"]

    def _ids(self) -> tuple[np.ndarray | pl.Series | None, int]:
        """The ids of every record so far, in code order, and their count."""
        if self.offset is not None:
            n = self.acc.shape[0]
            return np.arange(n, dtype=np.int64) + self.offset, n
        n = self.encoder.n_unique
        if self.id_dtype == pl.String:
            return self._names(), n
        return self.encoder.uniques.copy(), n

    def finish(self) -> pl.DataFrame:
        """The features, one row per customer seen, sorted by ``customer_id``.

        Call once: the accumulators are reordered in place, then freed.
        """
        from fastseg.kernels.aggregate import compact_rows

        # a customer is seen when a usable row reached it: a row with amount >= 0 sets its
        # last day, a refund counts; codes given to ids of left-out rows only are not seen
        n = self.acc.shape[0] if self.offset is not None else self.encoder.n_unique
        if self.offset is None:  # free what only coding needed before the output is built
            self.encoder.close()
            if self.acc.shape[0] > n and self.acc.flags.owndata and self.acc.base is None:
                self.acc.resize(max(n, 1), refcheck=False)  # in place: the tail is given back
        seen = (self.acc["last_day"][:n] > np.iinfo(np.int32).min) | (self.acc["refunds"][:n] > 0)
        if self.offset is not None:
            rows = np.flatnonzero(seen)
            ids = pl.Series("customer_id", rows + self.offset, dtype=self.id_dtype or pl.Int64)
            days = self.days.take(rows, n) if self.days is not None and self.btyd else None
            top = self._top_category(n, rows)
            compact_rows(self.acc, rows)  # in place: no second copy of the state
            m = rows.shape[0]
            frame = self._frame(ids, self.acc[:m], None, lambda c: np.searchsorted(rows, c), top)
            return self._with_btyd(frame, days)
        if self.id_dtype == pl.String:
            names = self._names()
            order = names.arg_sort().to_numpy()
            order = order[seen[order]]
            ids = names.gather(order)
        else:
            order = self.encoder.sort_order()
            order = order[seen[order]]
            ids = pl.Series(
                "customer_id", self.encoder.uniques[order], dtype=self.id_dtype or pl.Int64
            )
        rank = np.full(n, -1, np.int64)
        rank[order] = np.arange(order.shape[0])
        days = self.days.take(order, n) if self.days is not None and self.btyd else None
        top = self._top_category(n, order)
        frame = self._frame(ids, self.acc, order, lambda codes: rank[codes], top)
        return self._with_btyd(frame, days)

    def _top_category(self, n: int, rows: np.ndarray) -> pl.Series | None:
        """``top_category`` of the customers coded ``rows``: the category with the largest
        gross revenue (ties: the smallest text), null without a purchase line with one."""
        if not self.has_category or not self.top_category:
            return None
        k = self.categories.n
        names = [self.category_names.get(i, "") for i in range(k)]
        rank = np.empty(k, np.int64)
        rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(k)
        if self._cat_revenue is None:
            best = np.full(rows.shape[0], -1, np.int64)
        else:
            best = self._cat_revenue.top(n, rank)[rows]
            self._cat_revenue = None
        texts = pl.Series("top_category", [*names, None], dtype=pl.String)
        return texts.gather(np.where(best < 0, k, best))

    def _with_btyd(self, frame: pl.DataFrame, days: Any) -> pl.DataFrame:
        """The BTYD summary columns (in days) added from the purchase days: see
        :data:`BTYD_COLUMNS`."""
        if days is None:
            return frame
        n_days, first_gross = days
        self.days.close()
        return add_btyd_columns(frame, n_days, first_gross, self.as_of)

    def _frame(
        self,
        ids: pl.Series,
        acc: np.ndarray,
        rows: np.ndarray | None,
        row_of: Any,
        top: pl.Series | None = None,
    ) -> pl.DataFrame:
        """Records ``acc[rows]`` (all of ``acc`` when None) in the order of ``ids``; ``row_of``
        maps customer codes to output rows."""
        from fastseg.kernels.aggregate import feature_arrays

        f = feature_arrays(acc, self.as_of_day, rows)
        del acc, rows  # the records are spent: give their memory back before the frame is made
        self.acc = self.acc[:0].copy()
        distinct = None
        if self.has_category:
            distinct = f["categories"]
            if self._cat_pairs:
                extra = pl.concat(self._cat_pairs).unique().group_by("code").len()
                at = row_of(extra["code"].to_numpy())
                np.add.at(distinct, at, extra["len"].to_numpy().astype(np.int64))
        return _features_frame(ids, f, distinct, self.has_discount, self.windows, top)


#: the BTYD summary a run computes when predictions are asked for (docs/predict.md): repeat
#: purchase days, days from the first to the last purchase day, days from the first purchase
#: day to the scoring date, and the mean gross revenue of the repeat purchase days (0 without
#: one); null for customers without a purchase day
BTYD_COLUMNS = ("btyd_frequency", "btyd_recency", "btyd_T", "btyd_monetary")


def add_btyd_columns(
    frame: pl.DataFrame, n_days: np.ndarray, first_gross: np.ndarray, as_of: dt.date
) -> pl.DataFrame:
    """``frame`` (order features, one row per customer, in the order of ``n_days``) with the
    :data:`BTYD_COLUMNS` from each customer's distinct purchase days and first-day gross."""
    days = pl.Series("_days", n_days.astype(np.int64))
    gross = (pl.col("monetary") + pl.col("refund_amount")).cast(pl.Float64)
    has = pl.col("_days") > 0
    repeat = pl.col("_days") - 1
    return (
        frame.with_columns(days, pl.Series("_first_gross", first_gross.astype(np.float64)))
        .with_columns(
            pl.when(has).then(repeat).alias("btyd_frequency"),
            pl.when(has)
            .then((pl.col("last_order_date") - pl.col("first_order_date")).dt.total_days())
            .alias("btyd_recency"),
            pl.when(has)
            .then((pl.lit(as_of) - pl.col("first_order_date")).dt.total_days())
            .alias("btyd_T"),
            pl.when(has & (repeat > 0))
            .then((gross - pl.col("_first_gross")) / repeat)
            .when(has)
            .then(0.0)
            .alias("btyd_monetary"),
        )
        .drop("_days", "_first_gross")
    )


def _nullable(name: str, values: np.ndarray, valid: np.ndarray, date: bool = False) -> pl.Series:
    """A Series over ``values`` (no copy) with nulls where ``valid`` is False."""
    import pyarrow as pa

    n = values.shape[0]
    if bool(valid.all()):
        s = pl.Series(name, values)
        return s.cast(pl.Date) if date else s
    bits = np.packbits(valid, bitorder="little")
    kind = pa.date32() if date else pa.from_numpy_dtype(values.dtype)
    arr = pa.Array.from_buffers(kind, n, [pa.py_buffer(bits), pa.py_buffer(values)])
    return pl.Series(name, arr)


def _features_frame(
    ids: pl.Series,
    f: dict[str, np.ndarray],
    distinct: np.ndarray | None,
    has_discount: bool,
    windows: tuple[int, ...],
    top: pl.Series | None = None,
) -> pl.DataFrame:
    valid = f["valid"]
    cols: list[pl.Series] = [
        ids,
        _nullable("recency_days", f["recency_days"], valid),
        pl.Series("frequency", f["frequency"]),
        pl.Series("monetary", f["monetary"]),
        _nullable("aov", f["aov"], valid),
        _nullable("first_order_date", f["first_order_date"], valid, date=True),
        _nullable("last_order_date", f["last_order_date"], valid, date=True),
        _nullable("tenure_days", f["tenure_days"], valid),
        _nullable("avg_days_between_orders", f["avg_days_between_orders"], f["several"]),
    ]
    for k, w in enumerate(windows):
        cols.append(pl.Series(f"orders_{w}d", f["win_orders"][k]))
        cols.append(pl.Series(f"revenue_{w}d", f["win_revenue"][k]))
    cols.append(pl.Series("refund_count", f["refund_count"]))
    cols.append(pl.Series("refund_amount", f["refund_amount"]))
    if distinct is not None:
        cols.append(pl.Series("distinct_categories", distinct))
        if top is not None:
            cols.append(top)
    if has_discount:
        cols.append(_nullable("discount_share", f["discount_share"], valid))
    return pl.DataFrame(cols)


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
    # the types as an Enum of the distinct values (exact), then their column-safe index
    lut = np.array([safe_names.index(sanitize(t)) for t in types], np.int64)
    etype = lut[ev["event"].cast(pl.Enum(types)).to_physical().to_numpy()]
    codes, ids = encode_customers(ev["customer_id"])
    as_of_day = (as_of - _EPOCH).days
    since = np.array([as_of_day - w for w in windows], np.int32)
    day = ev["event_date"].to_physical().to_numpy()
    counts, last = aggregate_events(codes, ids.len(), etype, len(safe_names), day, since)
    return event_frame(ids, safe_names, counts, last, windows, as_of_day)


def event_frame(
    ids: pl.Series,
    types: Sequence[str],
    counts: np.ndarray,
    last: np.ndarray,
    windows: Sequence[int],
    as_of_day: int,
    rows: np.ndarray | None = None,
    type_at: Sequence[int] | None = None,
) -> pl.DataFrame:
    """The event features frame from per customer x type ``counts[c, t, w]`` and ``last[c, t]``
    (days; ``INT32_MIN`` for never); output row ``i`` is customer ``rows[i]`` (all, in order,
    when None) and has id ``ids[i]``; ``types[j]`` is the type at ``t = type_at[j]`` (``j``
    when None). Types become column-safe names, sorted; types sharing one are merged (counts
    added, the latest day kept)."""
    safe_names = sorted({sanitize(t) for t in types})
    if ids.len() == 0 or not safe_names:
        return pl.DataFrame({"customer_id": ids})
    groups: list[list[int]] = [[] for _ in safe_names]
    for j, name in enumerate(types):
        groups[safe_names.index(sanitize(name))].append(j if type_at is None else type_at[j])
    take = (lambda a: a) if rows is None else (lambda a: a[rows])  # noqa: E731
    cols: list[pl.Series] = [ids]
    lasts = []
    for e, name in enumerate(safe_names):
        for k, w in enumerate(windows):
            total = take(counts[:, groups[e][0], k])
            for t in groups[e][1:]:
                total = total + take(counts[:, t, k])
            cols.append(pl.Series(f"{name}_{w}d", total))
        latest = take(last[:, groups[e][0]])
        for t in groups[e][1:]:
            latest = np.maximum(latest, take(last[:, t]))
        lasts.append(latest)
    for name, latest in zip(safe_names, lasts, strict=True):
        never = latest == np.iinfo(np.int32).min
        days = pl.Series(f"days_since_{name}", as_of_day - latest.astype(np.int64))
        cols.append(days.scatter(np.flatnonzero(never), None) if never.any() else days)
    return pl.DataFrame(cols)


def _clash(value: Any) -> DataError:
    msg = (
        f"customer id {value!r} shares a 64-bit hash with another id; "
        "map the ids to integers (or report this: the chance is about 1 in 10^10)"
    )
    return DataError(msg)


#: features that are 0 (not null) for a customer with no order
ZERO_FILL = ("frequency", "monetary", "refund_count", "refund_amount", "distinct_categories")


def _outer_join_int_ids(frames: list[pl.DataFrame]) -> pl.DataFrame | None:
    """Full outer join of frames on integer ``customer_id`` (unique in each), sorted by it, by
    positions: the sorted union of the ids, then one gather per frame (null where a frame lacks
    an id). A hash join and a sort of the result cost ~4x more. None when an id is not Int64 or
    is missing."""
    import pyarrow as pa

    ids = [f["customer_id"] for f in frames]
    if any(s.dtype != pl.Int64 or s.null_count() for s in ids):
        return None
    arrays = [s.to_numpy() for s in ids]
    union = np.sort(np.concatenate(arrays))  # np.unique is several times slower here
    if union.shape[0] > 1:
        union = union[np.concatenate(([True], union[1:] != union[:-1]))]
    cols: list[pl.Series] = [pl.Series("customer_id", union)]
    for frame, a in zip(frames, arrays, strict=True):
        idx = np.full(union.shape[0], -1, np.int64)
        idx[np.searchsorted(union, a)] = np.arange(a.shape[0])
        take = pl.Series(pa.array(idx, mask=idx < 0)) if a.shape[0] < union.shape[0] else idx
        cols.extend(frame.drop("customer_id").select(pl.all().gather(take)).get_columns())
    return pl.DataFrame(cols)


def join_customers(
    features: pl.DataFrame,
    profiles: pl.DataFrame | None = None,
    events: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Add profile columns and event features; customers known only from profiles or events are
    prospects (frequency 0). The result is sorted by ``customer_id``."""
    if profiles is None and events is None:
        return features
    zero_cols = [
        c for c in features.columns if c in ZERO_FILL or re.fullmatch(r"(orders|revenue)_\d+d", c)
    ]
    frames = [features]
    taken = set(features.columns)
    count_cols: list[str] = []
    for extra in (profiles, events):  # a column already there is not taken again
        if extra is None:
            continue
        extra = extra.drop([c for c in extra.columns if c in taken and c != "customer_id"])
        taken |= set(extra.columns)
        frames.append(extra)
    if events is not None:
        count_cols = [
            c for c in frames[-1].columns if c != "customer_id" and not c.startswith("days_since_")
        ]
    out = _outer_join_int_ids(frames)
    if out is None:  # text ids: hash joins, then one sort
        out = frames[0]
        for extra in frames[1:]:
            out = out.join(extra, on="customer_id", how="full", coalesce=True)
        out = out.sort("customer_id")
    return out.with_columns(pl.col(c).fill_null(0) for c in [*count_cols, *zero_cols])
