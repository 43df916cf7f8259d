"""Evaluate a compiled segment catalog over a scores frame into packed bitsets.

How it works
------------
1. Every deduplicated atomic predicate of the catalog (``compiled.atoms``) is evaluated once, all
   in ONE Polars ``select`` (vectorised, parallel, common subexpressions shared).
2. The resulting Boolean columns are packed into ``uint64[n_atoms, n_words]`` bitsets (bit ``i``
   of word ``w`` = customer ``64 * w + i``; tail bits zero). Polars stores a Boolean column as an
   Arrow bitmap with this exact bit order, so packing is a memory copy of the bitmap (ANDed with
   the validity bitmap: a null predicate counts as false) — no per-customer work.
3. One Numba kernel runs every segment's postfix program over the atom bitsets, block by block
   (all programs per block of 1024 words, so atom blocks stay in cache), computing sizes by
   popcount in the same pass (:func:`fastseg.kernels.bitset.run_programs_with_sizes`).

:class:`SegmentResult` holds the bitsets and derives everything else from them with kernels
(overlaps, member lists, groups, per-segment sums): nothing holds a Python object per customer.

Timing helpers for ``fastseg bench``: :func:`benchmark_segments`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fastseg.errors import InputError, ParameterError, SchemaError
from fastseg.kernels import bitset as bs
from fastseg.kernels import numba_threads

__all__ = [
    "BITSETS_FORMAT",
    "SegmentBitsets",
    "SegmentResult",
    "SummaryParts",
    "benchmark_segments",
    "evaluate",
    "evaluate_atoms",
    "load_bitsets",
    "pack_frame",
    "synthetic_catalog",
    "synthetic_scores",
]

#: Value of the ``format`` entry of files written by :meth:`SegmentResult.save_bitsets`.
BITSETS_FORMAT = "fastseg-bitsets-1"


# ------------------------------------------------------------------------------------------
# Packing Polars Boolean columns
# ------------------------------------------------------------------------------------------


#: the columns of :meth:`SegmentResult.summary` (``summary.csv``) and their types
SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "segment": pl.String(),
    "description": pl.String(),
    "customers": pl.Int64(),
    "share_customers": pl.Float64(),
    "revenue": pl.Float64(),
    "share_revenue": pl.Float64(),
    "aov": pl.Float64(),
    "mean_recency_days": pl.Float64(),
    "mean_frequency": pl.Float64(),
}


def _bitmap_bytes(buf: Any, bit_offset: int, n: int) -> NDArray[np.uint8] | None:
    """The ``ceil(n/8)`` bytes of an Arrow bitmap starting at a byte-aligned bit offset."""
    if bit_offset % 8:
        return None
    nbytes = (n + 7) // 8
    return np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=bit_offset // 8)


def pack_frame(frame: pl.DataFrame) -> NDArray[np.uint64]:
    """Pack the Boolean columns of a frame into bitsets ``uint64[n_columns, ceil(height / 64)]``.

    Nulls count as false. On a little-endian machine each column is a copy of its Arrow bitmap
    (ANDed with its validity bitmap); otherwise (or for a bitmap at an unaligned offset) it goes
    through :func:`fastseg.kernels.bitset.pack_bool`.

    Examples
    --------
    >>> pack_frame(pl.DataFrame({"a": [True, False, True], "b": [None, True, False]}))
    array([[5],
           [2]], dtype=uint64)
    """
    n = frame.height
    nw = bs.n_words_for(n)
    bad = [f"{c} ({t})" for c, t in frame.schema.items() if t != pl.Boolean]
    if bad:
        msg = f"pack_frame needs Boolean columns; got {', '.join(bad)}"
        raise ParameterError(msg)
    out = np.zeros((frame.width, nw), dtype=np.uint64)
    if n == 0 or frame.width == 0:
        return out
    as_bytes = out.view(np.uint8)
    tail = bs.tail_mask(n)
    for i, s in enumerate(frame.iter_columns()):
        arr = s.rechunk().to_arrow()
        values = None
        if sys.byteorder == "little" and len(arr) == n:
            bufs = arr.buffers()
            values = _bitmap_bytes(bufs[1], arr.offset, n)
            if values is not None and bufs[0] is not None and arr.null_count:
                valid = _bitmap_bytes(bufs[0], arr.offset, n)
                values = None if valid is None else values & valid
        if values is None:
            out[i] = bs.pack_bool(s.fill_null(False).to_numpy())[0]
        else:
            as_bytes[i, : values.size] = values
            out[i, -1] &= tail  # Arrow leaves the bits past the length undefined
    return out


def _bool_series(name: str, words: NDArray[np.uint64], n: int) -> pl.Series:
    """A Polars Boolean Series over ``n`` bits sharing (not unpacking) one bitset row."""
    import pyarrow as pa

    row = np.ascontiguousarray(words)
    if sys.byteorder != "little":
        return pl.Series(name, bs.unpack(row, n))
    arr = pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(row)])
    return pl.Series(name, arr)


# ------------------------------------------------------------------------------------------
# Result
# ------------------------------------------------------------------------------------------


class SegmentBitsets(NamedTuple):
    """Raw membership: ``words[s]`` is the bitset of segment ``names[s]`` over ``customers``.

    ``customers`` has columns ``index`` (Int64, the bit number) and ``customer_id``.
    """

    names: tuple[str, ...]
    words: NDArray[np.uint64]
    customers: pl.DataFrame


def _enum_or_string(labels: Sequence[str]) -> pl.DataType:
    return pl.Enum(list(labels)) if len(set(labels)) == len(labels) else pl.String()


def overlaps_frame(names: Sequence[str], matrix: NDArray[np.int64]) -> pl.DataFrame:
    """The overlaps table of ``matrix`` (customers in both segments): column ``segment``, then
    one Int64 column per segment."""
    if not names:
        return pl.DataFrame({"segment": []}, {"segment": pl.String})
    cols: dict[str, Any] = {"segment": pl.Series("segment", list(names), dtype=pl.String)}
    for j, name in enumerate(names):
        cols[name] = pl.Series(name, matrix[:, j], dtype=pl.Int64)
    return pl.DataFrame(cols)


@dataclass
class SummaryParts:
    """What a segment summary is made of: sizes, sums and counts that add up over customers
    split into parts (:meth:`SegmentResult.summary_parts`). ``present``: the scores had
    ``monetary``, ``frequency``, ``recency_days``."""

    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    n_customers: int
    sizes: NDArray[np.int64]
    sums: NDArray[np.float64]  # [segments, 3]: monetary, frequency, recency_days of members
    valid: NDArray[np.int64]  # [segments, 3]: members with a value
    present: tuple[bool, ...]
    total_revenue: float

    def merge(self, other: SummaryParts) -> SummaryParts:
        """The parts of both sets of customers (the same catalog; disjoint customers)."""
        if other.names != self.names:
            msg = "summary parts of different catalogs cannot be merged"
            raise ParameterError(msg)
        return SummaryParts(
            names=self.names,
            descriptions=self.descriptions,
            n_customers=self.n_customers + other.n_customers,
            sizes=self.sizes + other.sizes,
            sums=self.sums + other.sums,
            valid=self.valid + other.valid,
            present=tuple(a or b for a, b in zip(self.present, other.present, strict=True)),
            total_revenue=self.total_revenue + other.total_revenue,
        )

    def frame(self) -> pl.DataFrame:
        """The summary table (see :meth:`SegmentResult.summary`)."""
        sums, valid, present, n = self.sums, self.valid, self.present, self.n_customers
        total_revenue = self.total_revenue

        def ratio(num: NDArray[Any], den: NDArray[Any] | float, ok: bool) -> pl.Series:
            den_arr = np.broadcast_to(np.asarray(den, dtype=np.float64), num.shape)
            good = (den_arr != 0) & ok
            out = np.divide(num, den_arr, out=np.zeros(num.shape), where=good)
            series = pl.Series(out, dtype=pl.Float64)
            return series.scatter(np.flatnonzero(~good), None) if (~good).any() else series

        sizes = self.sizes.astype(np.float64)
        return pl.DataFrame(
            {
                "segment": pl.Series(self.names, dtype=pl.String),
                "description": pl.Series(self.descriptions, dtype=pl.String),
                "customers": pl.Series(self.sizes, dtype=pl.Int64),
                "share_customers": ratio(sizes, float(n), True),
                "revenue": pl.Series(sums[:, 0]) if present[0] else ratio(sums[:, 0], 0.0, False),
                "share_revenue": ratio(sums[:, 0], total_revenue, present[0]),
                "aov": ratio(sums[:, 0], sums[:, 1], present[0] and present[1]),
                "mean_recency_days": ratio(sums[:, 2], valid[:, 2], present[2]),
                "mean_frequency": ratio(sums[:, 1], valid[:, 1], present[1]),
            },
            schema=SUMMARY_SCHEMA,
        )


@dataclass(frozen=True, eq=False)
class SegmentResult:
    """Segment membership of every customer, as packed bitsets.

    Attributes
    ----------
    customer_ids
        Customer ids in the row order of the scores frame; bit ``i`` of every bitset is
        ``customer_ids[i]``.
    names, descriptions
        Segment names and descriptions, in catalog (dependency) order.
    bitsets
        ``uint64[n_segments, ceil(n_customers / 64)]``, tail bits zero.
    sizes
        ``int64[n_segments]`` member counts.
    groups_spec
        The catalog's exclusive groups (``name``, ``segments`` as indices, ``fallback``).
    skipped
        ``(segment name, reason)`` for catalog segments that were not evaluated.
    as_of
        The catalog's scoring date, if any.
    """

    customer_ids: pl.Series
    names: tuple[str, ...]
    descriptions: tuple[str, ...]
    bitsets: NDArray[np.uint64]
    sizes: NDArray[np.int64]
    groups_spec: tuple[Any, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    as_of: Any = None
    scores: pl.DataFrame | None = field(default=None, repr=False)
    threads: int | None = field(default=None, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- basics -----------------------------------------------------------------------------

    @property
    def n_customers(self) -> int:
        """Number of customers (rows of the scores frame)."""
        return len(self.customer_ids)

    def index(self, name: str) -> int:
        """Position of segment ``name`` in :attr:`names`."""
        try:
            return self.names.index(name)
        except ValueError:
            shown = ", ".join(self.names[:20]) + (", ..." if len(self.names) > 20 else "")
            msg = f"unknown segment {name!r} (segments: {shown or 'none'})"
            raise ParameterError(msg) from None

    def members(self, name: str) -> pl.Series:
        """Customer ids of segment ``name``, in scores row order."""
        with numba_threads(self.threads):
            idx = bs.members(self.bitsets[self.index(name)])
        return self.customer_ids.gather(idx).rename("customer_id")

    def mask(self, name: str) -> pl.Series:
        """Boolean Series (one value per customer, scores row order) of segment ``name``."""
        return _bool_series(name, self.bitsets[self.index(name)], self.n_customers)

    # -- tables -----------------------------------------------------------------------------

    def overlap_matrix(self) -> NDArray[np.int64]:
        """``int64[n_seg, n_seg]``: customers in both segments (diagonal: sizes). Cached."""
        if "overlaps" not in self._cache:
            with numba_threads(self.threads):
                self._cache["overlaps"] = bs.overlaps(self.bitsets)
        return self._cache["overlaps"]

    def overlaps(self) -> pl.DataFrame:
        """Segment x segment intersection counts: column ``segment`` then one Int64 per segment."""
        return overlaps_frame(self.names, self.overlap_matrix())

    def to_long(self) -> pl.DataFrame:
        """One row per (customer, segment) membership: ``customer_id``, ``segment`` (Enum).

        Rows are segment-major: segments in catalog order, customers in scores row order within
        a segment. Built from the bitsets by a kernel (indices) and one gather.
        """
        idx_dtype = np.uint32 if self.n_customers <= 2**32 else np.int64
        with numba_threads(self.threads):
            rows, segs = bs.members_all(self.bitsets, self.sizes, index_dtype=idx_dtype)
        labels = pl.Series("segment", self.names, dtype=_enum_or_string(self.names))
        return pl.DataFrame(
            [
                self.customer_ids.gather(pl.Series(rows)).rename("customer_id"),
                labels.gather(pl.Series(segs.astype(np.uint32, copy=False))),
            ]
        )

    def to_wide(self) -> pl.DataFrame:
        """``customer_id`` plus one Boolean column per segment (shares the bitset memory)."""
        n = self.n_customers
        cols = [self.customer_ids.rename("customer_id")]
        cols += [_bool_series(name, self.bitsets[k], n) for k, name in enumerate(self.names)]
        return pl.DataFrame(cols)

    def to_bitsets(self) -> SegmentBitsets:
        """Raw membership words plus the ``index`` -> ``customer_id`` frame."""
        customers = pl.DataFrame(
            [
                pl.Series("index", np.arange(self.n_customers, dtype=np.int64)),
                self.customer_ids.rename("customer_id"),
            ]
        )
        return SegmentBitsets(self.names, self.bitsets, customers)

    def write_bitsets(self, path: str | Path) -> None:
        """Write the membership to an uncompressed ``.npz`` (readable with ``numpy.load``), in
        place: :meth:`save_bitsets` is the atomic way.

        Format ``fastseg-bitsets-1`` (entries of the archive):

        - ``format``: the string ``"fastseg-bitsets-1"``;
        - ``names``: unicode array, segment names (row order of ``words``);
        - ``words``: ``<u8[n_segments, ceil(n_customers / 64)]``, bit ``i`` of word ``w`` of row
          ``s`` set when customer ``64 * w + i`` is in segment ``s``; tail bits zero;
        - ``n_customers``: int64 scalar;
        - ``customer_id``: ``<i8[n_customers]`` for integer ids; for string ids instead
          ``customer_id_offsets`` (``<i8[n_customers + 1]``) and ``customer_id_data`` (UTF-8
          bytes, ``uint8``), Arrow large-string layout;
        - ``customer_id_null`` (only if some id is null): packed bitset of the null ids.

        Read back with :func:`load_bitsets`.
        """
        entries: dict[str, NDArray[Any]] = {
            "format": np.array(BITSETS_FORMAT),
            "names": np.array(self.names, dtype=np.str_),
            "words": self.bitsets.astype("<u8", copy=False),
            "n_customers": np.array(self.n_customers, dtype=np.int64),
        }
        ids = self.customer_ids
        if ids.null_count():
            entries["customer_id_null"] = pack_frame(ids.is_null().to_frame())[0]
        if ids.dtype.is_integer():
            entries["customer_id"] = ids.cast(pl.Int64).fill_null(0).to_numpy()
        else:
            offs, data = text_buffers(ids.fill_null(""))
            entries["customer_id_offsets"] = offs
            entries["customer_id_data"] = np.ascontiguousarray(data, np.uint8)
        with open(path, "wb") as fh:
            np.savez(fh, **entries)

    def save_bitsets(self, path: str | Path) -> Path:
        """Write the membership to an uncompressed ``.npz`` atomically (see :meth:`write_bitsets`
        for the format): a failed write leaves an earlier file whole."""
        from fastseg.outputs import write_atomic

        return write_atomic(path, self.write_bitsets, "bitsets")

    def summary(self) -> pl.DataFrame:
        """One row per segment (catalog order) with size and value figures.

        Columns: ``segment``, ``description``, ``customers`` (Int64), ``share_customers``
        (customers / all customers of the scores frame), ``revenue`` (sum of members'
        ``monetary``, i.e. net revenue incl. refunds), ``share_revenue`` (revenue / total net
        revenue of all customers; null when that total is 0), ``aov`` (revenue / sum of members'
        ``frequency``: net revenue per order; null when the members have no order),
        ``mean_recency_days`` and ``mean_frequency`` (means over members, nulls ignored; null
        when no member has a value). Columns of the scores frame that are absent give nulls.
        """
        return self.summary_parts().frame()

    def summary_parts(self) -> SummaryParts:
        """The sums and counts :meth:`summary` is made of, for customers split into parts
        (buckets, Spark partitions): ``a.summary_parts().merge(b.summary_parts()).frame()`` is
        the summary of ``a`` and ``b``'s customers together (sums added part by part, so money
        totals agree to float rounding, counts exactly)."""
        k = len(self.names)
        n = self.n_customers
        sums = np.zeros((k, 3))
        valid = np.zeros((k, 3), dtype=np.int64)
        present = [False, False, False]
        total_revenue = 0.0
        cols = ("monetary", "frequency", "recency_days")
        if self.scores is not None:
            present = [c in self.scores.columns for c in cols]
        if self.scores is not None and k and n:
            have = present
            exprs = [
                pl.col(c).cast(pl.Float64).fill_null(0.0) if h else pl.lit(0.0, pl.Float64)
                for c, h in zip(cols, have, strict=True)
            ]
            frame = self.scores.select(
                *[e.alias(f"v{i}") for i, e in enumerate(exprs)],
                *[
                    (pl.col(c).is_not_null() if h else pl.lit(False)).alias(f"m{i}")
                    for i, (c, h) in enumerate(zip(cols, have, strict=True))
                ],
            )
            values = np.stack([frame[f"v{i}"].to_numpy() for i in range(3)])
            masks = pack_frame(frame.select([f"m{i}" for i in range(3)]))
            with numba_threads(self.threads):
                sums = bs.masked_sums(self.bitsets, values)
                valid = np.stack([bs.popcount_and(self.bitsets, masks[i]) for i in range(3)], 1)
            total_revenue = float(values[0].sum()) if have[0] else 0.0
        return SummaryParts(
            names=self.names,
            descriptions=self.descriptions,
            n_customers=n,
            sizes=np.asarray(self.sizes, dtype=np.int64).copy(),
            sums=np.asarray(sums, dtype=np.float64),
            valid=np.asarray(valid, dtype=np.int64),
            present=tuple(present),
            total_revenue=total_revenue,
        )

    def groups(self) -> pl.DataFrame:
        """``customer_id`` plus one column per exclusive group: the winning segment's name.

        In each group the first listed segment holding the customer wins; customers in none get
        the group's fallback label. Columns are Enums over (segments in group order, fallback).
        """
        cols = [self.customer_ids.rename("customer_id")]
        n = self.n_customers
        for g in self.groups_spec:
            labels: list[str] = []
            codes = []
            for s in g.segments:
                name = self.names[s]
                if name not in labels:
                    labels.append(name)
                codes.append(labels.index(name))
            if g.fallback not in labels:
                labels.append(g.fallback)
            with numba_threads(self.threads):
                assigned = bs.assign_groups(
                    self.bitsets,
                    np.asarray(g.segments, dtype=np.int64),
                    np.asarray(codes, dtype=np.uint32),
                    labels.index(g.fallback),
                    n,
                )
            label_series = pl.Series(g.name, labels, dtype=pl.Enum(labels))
            cols.append(label_series.gather(pl.Series(assigned)))
        return pl.DataFrame(cols)


def text_buffers(texts: pl.Series) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """Offsets (from 0, ``int64[n + 1]``) and UTF-8 bytes of a text column without nulls, in
    Arrow's large-string layout: what kernels read texts as."""
    import pyarrow as pa

    arr = texts.cast(pl.String).rechunk().to_arrow().cast(pa.large_string())
    _, offs_buf, data_buf = arr.buffers()
    offs = np.frombuffer(offs_buf, dtype="<i8", count=len(arr) + 1, offset=arr.offset * 8)
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    return offs - offs[0], data[offs[0] : offs[-1]]


def load_bitsets(path: str | Path) -> SegmentBitsets:
    """Read a file written by :meth:`SegmentResult.save_bitsets`."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        msg = f"cannot read bitsets from {path}: {exc}; expected a .npz from save_bitsets"
        raise InputError(msg) from exc
    with z:
        if "format" not in z or str(z["format"]) != BITSETS_FORMAT:
            msg = f"{path} is not a {BITSETS_FORMAT} file (no matching 'format' entry)"
            raise InputError(msg)
        n = int(z["n_customers"])
        names = tuple(str(x) for x in z["names"])
        words = np.ascontiguousarray(z["words"], dtype=np.uint64)
        if "customer_id" in z:
            ids = pl.Series("customer_id", z["customer_id"], dtype=pl.Int64)
        else:
            import pyarrow as pa

            offs = z["customer_id_offsets"]
            data = z["customer_id_data"]
            arr = pa.Array.from_buffers(
                pa.large_string(), n, [None, pa.py_buffer(offs), pa.py_buffer(data)]
            )
            ids = pl.Series("customer_id", arr).cast(pl.String)
        if "customer_id_null" in z:
            null = _bool_series("null", z["customer_id_null"], n)
            ids = pl.select(
                pl.when(null).then(None).otherwise(ids).alias("customer_id")
            ).to_series()
    customers = pl.DataFrame([pl.Series("index", np.arange(n, dtype=np.int64)), ids])
    return SegmentBitsets(names, words, customers)


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


def _check_fields(scores: pl.DataFrame, atoms: Sequence[Any]) -> None:
    have = set(scores.columns)
    missing: dict[str, list[str]] = {}
    for atom in atoms:
        for f in getattr(atom, "fields", ()):
            if f not in have:
                missing.setdefault(f, []).append(atom.key)
    if missing:
        parts = [f"{f!r} (used by {', '.join(keys[:3])})" for f, keys in missing.items()]
        found = ", ".join(scores.columns[:30])
        msg = (
            f"scores frame lacks column(s) {'; '.join(parts)} (found: {found}); "
            "score with the inputs these rules need or drop the rules"
        )
        raise SchemaError(msg)


def evaluate_atoms(scores: pl.DataFrame, atoms: Sequence[Any]) -> NDArray[np.uint64]:
    """Evaluate all atom expressions in one ``select`` and pack them: ``uint64[n_atoms, n_words]``."""
    _check_fields(scores, atoms)
    if not atoms:
        return np.zeros((0, bs.n_words_for(scores.height)), dtype=np.uint64)
    frame = scores.select(
        [a.expr().cast(pl.Boolean).alias(f"_atom{i}") for i, a in enumerate(atoms)]
    )
    return pack_frame(frame)


def evaluate(scores: pl.DataFrame, compiled: Any, *, threads: int | None = None) -> SegmentResult:
    """Evaluate a compiled catalog over a scores frame.

    Parameters
    ----------
    scores
        One row per customer with ``customer_id`` and the columns the rules use.
    compiled
        A :class:`fastseg.rules.compile.CompiledCatalog` (``atoms``, ``segments`` in dependency
        order with postfix ``program`` arrays, ``groups``, ``skipped``, ``as_of``).
    threads
        Numba threads for the kernels (``None``: Numba's default). Polars uses its own pool.

    Returns
    -------
    SegmentResult

    Examples
    --------
    >>> res = evaluate(scores, compiled)  # doctest: +SKIP
    >>> res.summary()  # doctest: +SKIP
    """
    if not isinstance(scores, pl.DataFrame):
        msg = f"scores must be a polars DataFrame, got {type(scores).__name__}"
        raise ParameterError(msg)
    if "customer_id" not in scores.columns:
        msg = f"scores frame has no 'customer_id' column (found: {', '.join(scores.columns[:30])})"
        raise SchemaError(msg)
    n = scores.height
    segments = tuple(compiled.segments)
    with numba_threads(threads):
        atom_words = evaluate_atoms(scores, tuple(compiled.atoms))
        ops, args, offsets = bs.concat_programs([s.program for s in segments])
        words, sizes = bs.run_programs_with_sizes(atom_words, ops, args, offsets, n)
    return SegmentResult(
        customer_ids=scores.get_column("customer_id"),
        names=tuple(s.name for s in segments),
        descriptions=tuple(getattr(s, "description", "") or "" for s in segments),
        bitsets=words,
        sizes=sizes,
        groups_spec=tuple(getattr(compiled, "groups", ())),
        skipped=tuple(getattr(compiled, "skipped", ())),
        as_of=getattr(compiled, "as_of", None),
        scores=scores,
        threads=threads,
    )


# ------------------------------------------------------------------------------------------
# Synthetic data and benchmark helper (used by bench/bench_segments.py and `fastseg bench`)
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Atom:
    key: str
    fields: tuple[str, ...]
    predicate: pl.Expr

    def expr(self) -> pl.Expr:
        return self.predicate


@dataclass(frozen=True)
class _Segment:
    name: str
    description: str
    rule: str
    program: NDArray[np.int32]
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Group:
    name: str
    segments: tuple[int, ...]
    fallback: str


@dataclass(frozen=True)
class _Catalog:
    as_of: Any
    atoms: tuple[_Atom, ...]
    segments: tuple[_Segment, ...]
    groups: tuple[_Group, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    aggregates: tuple[Any, ...] = ()


_SYN_COLUMNS = ("recency_days", "frequency", "monetary", "r_score", "f_score", "m_score")


def synthetic_scores(n_customers: int, seed: int = 0) -> pl.DataFrame:
    """A scores-like frame (``customer_id`` Int64, recency/frequency/monetary, R/F/M scores)."""
    rng = np.random.default_rng(seed)
    n = int(n_customers)
    freq = rng.geometric(0.35, n).astype(np.int64) - 1
    rec = rng.integers(0, 730, n)
    return pl.DataFrame(
        {
            "customer_id": np.arange(n, dtype=np.int64),
            "recency_days": pl.Series(rec).set(pl.Series(freq == 0), None),
            "frequency": freq,
            "monetary": np.round(rng.gamma(2.0, 60.0, n) * (freq > 0), 2),
            "r_score": rng.integers(1, 6, n).astype(np.uint8),
            "f_score": rng.integers(1, 6, n).astype(np.uint8),
            "m_score": rng.integers(1, 6, n).astype(np.uint8),
        }
    )


def synthetic_catalog(n_segments: int = 100, n_atoms: int = 64, seed: int = 0) -> _Catalog:
    """A catalog of random threshold atoms and random programs (AND/OR/NOT, references).

    Atoms are ``score >= k``, ``recency_days <= d`` (nulls false), ``frequency >= f`` and
    ``monetary >= m``; each program combines 2..5 atoms, and about one in five also ANDs an
    earlier segment. One exclusive group lists the first ten segments.
    """
    rng = np.random.default_rng(seed)
    atoms = []
    for i in range(n_atoms):
        kind = i % 6
        if kind < 3:
            col = ("r_score", "f_score", "m_score")[kind]
            k = int(rng.integers(2, 6))
            expr = pl.col(col) >= k
            key = f"{col}>={k}#{i}"
        elif kind == 3:
            d = int(rng.integers(30, 700))
            col, expr, key = (
                "recency_days",
                (pl.col("recency_days") <= d).fill_null(False),
                f"r<={d}#{i}",
            )
        elif kind == 4:
            f = int(rng.integers(1, 6))
            col, expr, key = "frequency", pl.col("frequency") >= f, f"f>={f}#{i}"
        else:
            m = float(rng.integers(20, 300))
            col, expr, key = "monetary", pl.col("monetary") >= m, f"m>={m}#{i}"
        atoms.append(_Atom(key, (col,), expr))
    segments = []
    for s in range(n_segments):
        prog = [[bs.OP_ATOM, int(rng.integers(n_atoms))]]
        for _ in range(int(rng.integers(1, 5))):
            prog.append([bs.OP_ATOM, int(rng.integers(n_atoms))])
            if rng.random() < 0.25:
                prog.append([bs.OP_NOT, 0])
            prog.append([bs.OP_AND if rng.random() < 0.7 else bs.OP_OR, 0])
        if s > 0 and rng.random() < 0.2:
            prog += [[bs.OP_SEGMENT, int(rng.integers(s))], [bs.OP_AND, 0]]
        segments.append(
            _Segment(f"seg{s:03d}", f"synthetic segment {s}", "", np.array(prog, np.int32))
        )
    groups = (_Group("tier", tuple(range(min(10, n_segments))), "other"),)
    return _Catalog(None, tuple(atoms), tuple(segments), groups)


def _median_ms(fn: Any, repeat: int) -> float:
    """Median wall time of ``repeat`` calls after one untimed warm-up call (JIT, page cache)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def benchmark_segments(
    n_customers: int,
    n_segments: int = 100,
    seed: int = 0,
    *,
    n_atoms: int = 64,
    threads: int | None = None,
    repeat: int = 5,
    baselines: bool = True,
) -> dict[str, Any]:
    """Time segment evaluation stage by stage on synthetic data; return a JSON-ready dict.

    Keys: ``n_customers``, ``n_segments``, ``n_atoms``, ``first_call_ms`` (the first
    :func:`evaluate` in this process, JIT compile or cache load included), and median
    milliseconds over ``repeat`` runs after one warm-up call: ``atoms_select_ms`` (Polars select of all atoms),
    ``pack_ms`` (bitmap copy into words), ``run_ms`` (all programs + sizes), ``popcount_ms``,
    ``overlaps_ms``, ``to_long_ms``, ``summary_ms``, ``evaluate_ms`` (select + pack + run);
    ``membership_mb`` (bitset bytes / 1e6); ``memberships`` (total of sizes); with
    ``baselines``: ``polars_filter_ms`` (one ``select(customer_id.filter(rule))`` per segment),
    ``numpy_bool_ms`` (the programs over ``bool`` arrays, sizes by ``sum``) and the speedups
    ``speedup_vs_polars_filter`` / ``speedup_vs_numpy_bool`` (relative to ``evaluate_ms``).
    Results are checked against the baselines (sizes must agree).
    """
    if n_customers < 0 or n_segments < 1 or n_atoms < 1 or repeat < 1:
        msg = "benchmark_segments needs n_customers >= 0 and n_segments, n_atoms, repeat >= 1"
        raise ParameterError(msg)
    scores = synthetic_scores(n_customers, seed)
    cat = synthetic_catalog(n_segments, n_atoms, seed)
    n = scores.height
    t0 = time.perf_counter()
    res = evaluate(scores, cat, threads=threads)
    first = (time.perf_counter() - t0) * 1e3
    out: dict[str, Any] = {
        "n_customers": n,
        "n_segments": n_segments,
        "n_atoms": n_atoms,
        "threads": threads,
        "first_call_ms": first,
    }
    frame = scores.select([a.expr().alias(f"_a{i}") for i, a in enumerate(cat.atoms)])
    atom_words = pack_frame(frame)
    ops, args, offs = bs.concat_programs([s.program for s in cat.segments])
    with numba_threads(threads):
        out["atoms_select_ms"] = _median_ms(
            lambda: scores.select([a.expr().alias(f"_a{i}") for i, a in enumerate(cat.atoms)]),
            repeat,
        )
        out["pack_ms"] = _median_ms(lambda: pack_frame(frame), repeat)
        out["run_ms"] = _median_ms(
            lambda: bs.run_programs_with_sizes(atom_words, ops, args, offs, n), repeat
        )
        out["popcount_ms"] = _median_ms(lambda: bs.popcount(res.bitsets), repeat)
        out["overlaps_ms"] = _median_ms(lambda: bs.overlaps(res.bitsets), repeat)
    out["to_long_ms"] = _median_ms(res.to_long, max(1, repeat // 2))
    out["summary_ms"] = _median_ms(res.summary, max(1, repeat // 2))
    out["evaluate_ms"] = _median_ms(lambda: evaluate(scores, cat, threads=threads), repeat)
    out["membership_mb"] = res.bitsets.nbytes / 1e6
    out["memberships"] = int(res.sizes.sum())
    if baselines:
        exprs = _program_exprs(cat)
        polars_sizes = [scores.select(pl.col("customer_id").filter(e)).height for e in exprs]
        np_atoms = frame.to_numpy().T.copy() if n else np.zeros((n_atoms, 0), dtype=bool)
        np_sizes = [int(m.sum()) for m in _numpy_bool_eval(cat, np_atoms)]
        if polars_sizes != res.sizes.tolist() or np_sizes != res.sizes.tolist():
            msg = "benchmark_segments: bitset sizes disagree with the Polars / numpy baselines"
            raise AssertionError(msg)
        out["polars_filter_ms"] = _median_ms(
            lambda: [scores.select(pl.col("customer_id").filter(e)) for e in exprs],
            max(1, repeat // 2),
        )
        out["numpy_bool_ms"] = _median_ms(
            lambda: [int(m.sum()) for m in _numpy_bool_eval(cat, np_atoms)], max(1, repeat // 2)
        )
        out["speedup_vs_polars_filter"] = out["polars_filter_ms"] / out["evaluate_ms"]
        out["speedup_vs_numpy_bool"] = out["numpy_bool_ms"] / out["run_ms"]
    return out


def _program_exprs(compiled: Any) -> list[pl.Expr]:
    """Each segment's program folded into one Polars expression (a baseline and a cross-check)."""
    atom_exprs = [a.expr() for a in compiled.atoms]
    seg_exprs: list[pl.Expr] = []
    for seg in compiled.segments:
        stack: list[pl.Expr] = []
        for op, arg in np.asarray(seg.program).reshape(-1, 2).tolist():
            if op == bs.OP_ATOM:
                stack.append(atom_exprs[arg])
            elif op == bs.OP_SEGMENT:
                stack.append(seg_exprs[arg])
            elif op in (bs.OP_AND, bs.OP_OR):
                b, a = stack.pop(), stack.pop()
                stack.append(a & b if op == bs.OP_AND else a | b)
            elif op == bs.OP_NOT:
                stack.append(~stack.pop())
            else:
                stack.append(pl.lit(op == bs.OP_TRUE))
        seg_exprs.append(stack.pop())
    return seg_exprs


def _numpy_bool_eval(compiled: Any, atoms: NDArray[np.bool_]) -> list[NDArray[np.bool_]]:
    """The programs over ``bool[n_atoms, n]`` arrays with numpy (a baseline)."""
    n = atoms.shape[1]
    results: list[NDArray[np.bool_]] = []
    for seg in compiled.segments:
        stack: list[NDArray[np.bool_]] = []
        for op, arg in np.asarray(seg.program).reshape(-1, 2).tolist():
            if op == bs.OP_ATOM:
                stack.append(atoms[arg])
            elif op == bs.OP_SEGMENT:
                stack.append(results[arg])
            elif op == bs.OP_AND:
                b = stack.pop()
                stack.append(stack.pop() & b)
            elif op == bs.OP_OR:
                b = stack.pop()
                stack.append(stack.pop() | b)
            elif op == bs.OP_NOT:
                stack.append(~stack.pop())
            else:
                stack.append(np.full(n, op == bs.OP_TRUE))
        results.append(stack.pop())
    return results
