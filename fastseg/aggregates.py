"""The rule compiler's windowed aggregates over orders, computed in the row pass.

Each :class:`fastseg.rules.compile.AggSpec` (its :meth:`~fastseg.rules.compile.AggSpec.expr` is
the definition) becomes, per batch of usable rows, a row mask — the window on the day numbers,
the filters on the batch's filter columns, ``amount >= 0`` where the form needs it — and an
update of per-customer state indexed by the order aggregator's customer codes:

* ``revenue`` and ``units``: masked sums; ``orders()`` without filters: a masked count of the
  order flag (the first line of an order);
* ``orders()`` with filters: an exact set of (customer, order id key) pairs, plus a masked count
  of the matching lines without an order id (each its own order);
* ``distinct(col)``: an exact set of (customer, value key) pairs; text values are coded by a
  dictionary kept across batches, numbers by their exact bits.

So the lines of one order may arrive in any batch. A spec needing a column the orders lack is
not computed (the rule compiler names the column). State grows with the customers (and the
distinct pairs), never with the rows. Partitions do not merge yet: the pair sets would merge
exactly by re-inserting their pairs under the merged codes, the sums by adding.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from fastseg.config import EPOCH

__all__ = ["RuleAggregates"]

#: columns every order row has in the pass (not looked up in the batch's table)
_BUILT_IN = frozenset({"customer_id", "order_date", "amount", "_order", "_order_key"})


class _Spec:
    """One computable spec: its window as day numbers and its state."""

    def __init__(self, spec: Any, as_of: dt.date) -> None:
        self.spec = spec
        agg = spec.aggregate
        since, until = spec.since_date(as_of), spec.until_date(as_of)
        self.lo = None if since is None else (since - EPOCH).days
        self.hi = None if until is None else (until - EPOCH).days
        self.func = agg.func
        self.filters = spec.filter_values()
        self.gross_only = agg.func in ("units", "distinct") or spec.line_level
        self.sum: np.ndarray | None = None
        self.count: np.ndarray | None = None
        self.pairs: Any = None
        self.bits = np.zeros(1, np.uint64) if agg.func == "distinct" else None
        if agg.func in ("revenue", "units"):
            self.sum = np.zeros(1, np.float64)
        else:
            self.count = np.zeros(1, np.int64)
        if agg.func == "distinct" or spec.line_level:
            from fastseg.kernels.rules import PairTable

            self.pairs = PairTable(1, 1 << 12)

    @property
    def carried(self) -> bool:
        """Whether the rows it counts do not change as the scoring date moves (no bound
        relative to it, ``today`` as the end aside): its state is added to day after day by a
        refresh (:mod:`fastseg.state`). Otherwise it is recomputed from the recent rows."""
        from fastseg.rules.ast import RelDate, Today

        agg = self.spec.aggregate
        return not isinstance(agg.since, RelDate | Today) and not isinstance(agg.until, RelDate)

    def text(self) -> str:
        """The aggregate as rule text (``revenue(since: 2026-01-01, channel: 'web')``): what a
        later run parses to compute it again (:func:`spec_of_text`)."""
        from fastseg.rules.ast import _render_operand

        return _render_operand(self.spec.aggregate)

    def signature(self) -> str:
        """What it counts, as text: the same name with another definition is another spec."""
        return f"{self.spec.name}={self.spec.aggregate!r}"


def spec_of_text(text: str) -> Any:
    """The :class:`fastseg.rules.compile.AggSpec` of an aggregate's rule text
    (:meth:`_Spec.text`)."""
    from fastseg.rules.ast import Aggregate, walk_terms
    from fastseg.rules.compile import aggregate_spec
    from fastseg.rules.parse import parse_rule

    found = [t for t in walk_terms(parse_rule(text)) if isinstance(t, Aggregate)]
    if len(found) != 1:
        msg = f"not one aggregate: {text!r}"
        raise ValueError(msg)
    return aggregate_spec(found[0])


class RuleAggregates:
    """Per-customer state of the order aggregates in ``specs`` that ``columns`` (the order
    table's canonical and filter columns) allow; see :mod:`fastseg.aggregates`."""

    def __init__(self, specs: Sequence[Any], as_of: dt.date, columns: Sequence[str]) -> None:
        have = set(columns) | _BUILT_IN
        self.specs = [
            _Spec(s, as_of) for s in specs if s.source == "orders" and set(s.columns) <= have
        ]
        self.table_columns = sorted(
            {c for s in self.specs for c in s.spec.columns if c not in _BUILT_IN}
        )
        self.needs_order_ids = "order_id" in columns and any(s.spec.line_level for s in self.specs)
        self._dicts: dict[str, dict[Any, int]] = {}  # text values -> exact int codes

    def __bool__(self) -> bool:
        return bool(self.specs)

    # ----------------------------------------------------------------------------- per batch

    def add(
        self,
        codes: np.ndarray,
        customers: int,
        day: np.ndarray,
        amount: np.ndarray,
        flags: np.ndarray,
        table: Any,
        usable: np.ndarray,
        order_ids: np.ndarray | None,
        only: Any = None,
    ) -> None:
        """One batch: ``codes``/``day``/``amount``/``flags`` of its usable rows (``usable``: their
        positions in ``table``, an Arrow table with the filter columns), ``order_ids`` their
        order id keys (flag bit 2: none) or None; ``customers`` the codes' bound. ``only``: a
        predicate on the specs (:class:`_Spec`) to update (None: all)."""
        from fastseg.kernels.rules import masked_add, masked_bits, masked_count

        frame = _Columns(table)
        cache: dict[Any, np.ndarray] = {}
        gross = amount >= 0
        for s in self.specs:
            if only is not None and not only(s):
                continue
            mask = self._window(s, day, cache)
            for column, values in s.filters:
                key = (column, tuple(values))
                if key not in cache:
                    cache[key] = frame.mask(column, values)[usable]
                mask = mask & cache[key]
            if s.gross_only:
                mask = mask & gross
            if s.sum is not None:
                s.sum = _grown(s.sum, customers)
                if s.func == "revenue":
                    values = amount
                else:
                    values = _quantity(frame.series("quantity"))[usable]
                masked_add(codes, mask, values, s.sum)
                continue
            assert s.count is not None
            s.count = _grown(s.count, customers)
            if s.func == "orders" and not s.spec.line_level:
                masked_count(codes, mask & ((flags & np.uint8(1)) != 0), s.count)
            elif s.func == "orders":
                if order_ids is None:  # every line its own order
                    masked_count(codes, mask, s.count)
                else:
                    no_id = (flags & np.uint8(4)) != 0
                    masked_count(codes, mask & no_id, s.count)
                    s.pairs.grow(customers)
                    s.pairs.add(codes, order_ids, mask & ~no_id)
            else:  # distinct: keys 0..63 (small dictionaries) as bits, the others as pairs
                keys, valid = self._value_keys(s.spec.aggregate.of, frame)
                keys = keys[usable]
                assert s.bits is not None
                s.bits = _grown(s.bits, customers)
                over = masked_bits(codes, keys, mask & valid[usable], s.bits)
                if over is not None:
                    s.pairs.grow(customers)
                    s.pairs.add(codes, keys, over)

    @staticmethod
    def _window(s: _Spec, day: np.ndarray, cache: dict[Any, np.ndarray]) -> np.ndarray:
        key = ("window", s.lo, s.hi)
        if key not in cache:
            mask = np.ones(day.shape[0], np.bool_)
            if s.lo is not None:
                mask &= day >= s.lo
            if s.hi is not None:
                mask &= day <= s.hi
            cache[key] = mask
        return cache[key]

    def _value_keys(self, column: str, frame: _Columns) -> tuple[np.ndarray, np.ndarray]:
        """Exact int64 keys of a column's values (and where they are not null): text by a
        dictionary kept across batches, numbers by their value (floats by their bits)."""
        text = frame.text(column)
        if text is not None:
            idx, values = text
            book = self._dicts.setdefault(column, {})
            lut = np.array([book.setdefault(v, len(book)) for v in values] + [-1], np.int64)
            return lut[idx], idx >= 0
        col = frame.series(column)
        valid = col.is_not_null().to_numpy()
        if col.dtype.is_float():
            x = col.cast(pl.Float64).fill_null(0.0).to_numpy() + 0.0  # -0.0 as 0.0
            x[np.isnan(x)] = np.nan  # one NaN
            return x.view(np.int64), valid
        phys = col if col.dtype.is_integer() else col.to_physical()
        return phys.cast(pl.Int64).fill_null(0).to_numpy(), valid

    # ------------------------------------------------------------------------- saved state

    def renumber(self, rank: np.ndarray, order: np.ndarray) -> None:
        """The customers' codes changed: old code ``c`` is now ``rank[c]`` (``order``: the old
        code of each new one; :meth:`fastseg.features.OrderAggregator.renumber`)."""
        from fastseg.kernels.rules import PairTable

        n = rank.shape[0]
        for s in self.specs:
            for part in ("sum", "count", "bits"):
                a = getattr(s, part)
                if a is not None:
                    a = _grown(a, n)
                    a[:n] = a[:n][order]
                    setattr(s, part, a)
            if s.pairs is not None:
                code, key, total = s.pairs.entries()
                t = PairTable(max(n, 1), max(1 << 12, 2 * code.shape[0]))
                t.add(rank[code], key, np.ones(code.shape[0], np.bool_), total)
                s.pairs = t

    def export(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The state of the carried specs (:attr:`_Spec.carried`) and the value dictionaries,
        as arrays and a JSON-able record, for :meth:`load` in a later process."""
        arrays: dict[str, np.ndarray] = {}
        specs = []
        for i, s in enumerate(self.specs):
            if not s.carried:
                continue
            for part in ("sum", "count", "bits"):
                a = getattr(s, part)
                if a is not None:
                    arrays[f"rule{i}_{part}"] = a
            if s.pairs is not None:
                t = s.pairs
                arrays[f"rule{i}_pcode"], arrays[f"rule{i}_pkey"] = t.code, t.key
                arrays[f"rule{i}_psum"], arrays[f"rule{i}_pcounts"] = t.sum, t.counts
            specs.append(
                {
                    "index": i,
                    "signature": s.signature(),
                    "text": s.text(),
                    "pairs": int(s.pairs.n if s.pairs is not None else -1),
                }
            )
        dicts = {c: list(book) for c, book in self._dicts.items()}
        return arrays, {"specs": specs, "dicts": dicts}

    def load(self, arrays: Any, record: dict[str, Any]) -> None:
        """Give the carried specs the state :meth:`export` saved (matched by signature; a
        carried spec the record lacks is the caller's error to raise first)."""
        saved = {r["signature"]: r for r in record["specs"]}
        self._dicts = {c: {v: k for k, v in enumerate(vals)} for c, vals in record["dicts"].items()}
        for s in self.specs:
            r = saved.get(s.signature()) if s.carried else None
            if r is None:
                continue
            i = r["index"]
            for part in ("sum", "count", "bits"):
                if getattr(s, part) is not None:
                    setattr(s, part, np.array(arrays[f"rule{i}_{part}"]))
            if s.pairs is not None:
                t = s.pairs
                t.code, t.key = (
                    np.array(arrays[f"rule{i}_pcode"]),
                    np.array(arrays[f"rule{i}_pkey"]),
                )
                t.sum, t.counts = (
                    np.array(arrays[f"rule{i}_psum"]),
                    np.array(arrays[f"rule{i}_pcounts"]),
                )
                t.shift = np.uint64(64 - (t.code.shape[0].bit_length() - 1))
                t.n = int(r["pairs"])

    # ------------------------------------------------------------------------------ at the end

    def frame(self, ids: pl.Series, n: int) -> tuple[pl.DataFrame, dict[str, Any]] | None:
        """The aggregates of the customers coded ``0..n-1`` (``ids`` in code order)."""
        if not self.specs:
            return None
        cols = [ids.alias("customer_id")]
        for s in self.specs:
            if s.sum is not None:
                values = _grown(s.sum, n)[:n]
            else:
                assert s.count is not None
                values = _grown(s.count, n)[:n].copy()
                if s.pairs is not None:
                    s.pairs.grow(n)
                    values += s.pairs.counts[:n]
                if s.bits is not None:
                    values += np.bitwise_count(_grown(s.bits, n)[:n]).astype(np.int64)
            cols.append(pl.Series(s.spec.name, values).cast(s.spec.dtype))
        fills = {s.spec.name: s.spec.fill for s in self.specs}
        return pl.DataFrame(cols), fills


def _grown(a: np.ndarray, n: int) -> np.ndarray:
    if a.shape[0] >= n:
        return a
    out = np.zeros(max(n, 2 * a.shape[0]), a.dtype)
    out[: a.shape[0]] = a
    return out


class _Columns:
    """A batch's filter columns, each looked at once: text as dictionary indices (-1: null)
    and the dictionary's values, so filters and value codes touch the few distinct values."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._text: dict[str, tuple[np.ndarray, list[Any]] | None] = {}

    def text(self, column: str) -> tuple[np.ndarray, list[Any]] | None:
        if column not in self._text:
            import pyarrow as pa
            import pyarrow.compute as pc

            arr = self.table.column(column).combine_chunks()
            got = None
            kind = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                if not pa.types.is_dictionary(arr.type):
                    arr = pc.dictionary_encode(arr)
                idx = pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False)
                values = arr.dictionary.to_pylist()
                # a null entry of the dictionary is a null value; -1 indexes the appended null
                idx = np.where(idx >= 0, idx, len(values)).astype(np.int64)
                nulls = [i for i, v in enumerate(values) if v is None] + [len(values)]
                fix = np.arange(len(values) + 1)
                fix[nulls] = -1
                got = (fix[idx], values)
            self._text[column] = got
        return self._text[column]

    def series(self, column: str) -> pl.Series:
        col = pl.from_arrow(self.table.column(column))
        assert isinstance(col, pl.Series)
        return col

    def mask(self, column: str, values: Sequence[Any]) -> np.ndarray:
        """Rows whose value is one of ``values`` (never null), as :meth:`AggSpec.condition`."""
        text = self.text(column)
        if text is not None:
            idx, entries = text
            want = set(values)
            lut = np.array([v in want for v in entries] + [False], np.bool_)
            return lut[idx]
        frame = self.series(column).to_frame("v")
        v = pl.col("v")
        expr = v == pl.lit(values[0]) if len(values) == 1 else v.is_in(values)
        return frame.select(expr.fill_null(False))["v"].to_numpy()


def _quantity(col: pl.Series) -> np.ndarray:
    """Quantities as float64, null and NaN as 0 (as :meth:`AggSpec.expr`)."""
    return col.cast(pl.Float64).fill_nan(None).fill_null(0.0).to_numpy()
