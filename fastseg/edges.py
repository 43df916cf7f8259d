"""Exact quantile edges over data seen in chunks: bounded memory, mergeable partial results.

For larger-than-memory runs customers are hash-partitioned into buckets (files, or Spark
partitions) and each bucket's features are computed alone. The quantile edges must still be
exactly :func:`fastseg.kernels.quantile.quantile_edges` (and :meth:`fastseg.scoring.RFMScorer.fit`)
on all buckets together. :class:`EdgeSearch` finds them in a few *rounds*; each round every chunk
gives a small ``int64`` *digest* (it can be computed on another machine), the digests are merged
(element-wise, so in any order or tree) and :meth:`EdgeSearch.advance` moves on:

- round 0: count, NaN count, smallest and largest order key (merged by sum, min and max). The
  errors of ``quantile_edges`` (empty, NaN, integers beyond ``±2**53``) are raised here, naming
  the counts over all chunks.
- histogram rounds: every edge rank still unresolved has a key interval and a residual rank in
  it. Each distinct interval gets a histogram of the next digit of the keys in it (at most
  ``2**bits`` bins, ``bits = 16`` by default); the cumulative counts give the bin of each rank,
  which becomes its new interval. A rank is resolved when its interval is one key.

Integer ranges below ``2**bits`` keys (recency days, order counts) take one histogram round; any
float range takes at most four (64-bit keys, 16 bits a round). :class:`RFMEdgeSearch` runs three
searches over feature frames and :func:`fit_chunks` drives the rounds locally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fastseg.errors import DataError, ParameterError
from fastseg.kernels.quantile import _MAX_EXACT_INT, edge_ranks
from fastseg.kernels.radix import decode_keys, interval_histograms, key_summary, order_bits
from fastseg.scoring import (
    DIMENSIONS,
    RFMScorer,
    _check_data,
    _check_frame,
    _fit_arrays,
    _quantile_edges_dict,
)

__all__ = ["EdgeSearch", "RFMEdgeSearch", "fit_chunks"]

KINDS = ("int", "float")
DEFAULT_BITS = 16
MAX_BITS = 20
#: All histograms of one round together have at most ``2**BUDGET_BITS`` bins (32 MiB of int64):
#: with many distinct intervals (up to 254 edges) each gets fewer bits.
BUDGET_BITS = 22
_ROUND0_SIZE = 5  # [round, count, nan count, min key, max key]


def _as_digest(d: object) -> NDArray[np.int64]:
    if not isinstance(d, np.ndarray) or d.dtype != np.int64 or d.ndim != 1 or d.shape[0] < 1:
        msg = f"a digest must be a non-empty 1-D int64 array, got {type(d).__name__}"
        raise ParameterError(msg)
    return d


class EdgeSearch:
    """Exact ``quantile_edges(concat(chunks), k)`` from per-chunk digests, in a few rounds.

    Parameters
    ----------
    k : int
        Number of scores, 1 to 255 (``k - 1`` edges), as for ``quantile_edges``.
    kind : {"int", "float"}
        The chunks' dtype: int64 or float64.
    bits : int, default 16
        At most ``2**bits`` bins per histogram (1 to 20); fewer when a round has many distinct
        intervals (:data:`BUDGET_BITS`).

    Attributes
    ----------
    n : int or None
        Total count over all chunks, known after round 0.

    Examples
    --------
    >>> import numpy as np
    >>> chunks = [np.array([5, 1, 8]), np.array([], dtype=np.int64), np.array([1, 2, 3, 1, 2])]
    >>> s = EdgeSearch(5, "int")
    >>> while not s.done:
    ...     s.advance(EdgeSearch.merge(s.digest(c) for c in chunks))
    >>> s.edges(), s.rounds
    (array([1., 2., 2., 5.]), 2)
    """

    def __init__(self, k: int, kind: str, *, bits: int = DEFAULT_BITS) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= 255:
            msg = f"k must be an integer from 1 to 255, got {k!r}"
            raise ParameterError(msg)
        if kind not in KINDS:
            msg = f"kind must be 'int' or 'float', got {kind!r}"
            raise ParameterError(msg)
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
            msg = f"bits must be an integer from 1 to {MAX_BITS}, got {bits!r}"
            raise ParameterError(msg)
        self.k = int(k)
        self.kind = kind
        self.bits = bits
        self.n: int | None = None
        self._rounds = 0
        self._done = False
        self._keys: list[int | None] = [None] * (self.k - 1)
        # the current round's plan: disjoint intervals sorted by lo, each with its shift, the
        # count of keys it holds and its unresolved ranks as [rank index, residual rank] pairs
        self._plan: list[tuple[int, int, int, int, list[list[int]]]] = []

    def __repr__(self) -> str:
        state = "done" if self._done else f"round {self.rounds}"
        return f"EdgeSearch(k={self.k}, kind={self.kind!r}, bits={self.bits}, {state})"

    @property
    def done(self) -> bool:
        """Whether every edge is known (:meth:`edges` can be called)."""
        return self._done

    @property
    def rounds(self) -> int:
        """Rounds completed (calls of :meth:`advance`), round 0 included."""
        return self._rounds

    @property
    def histogram_rounds(self) -> int:
        """Histogram rounds completed (``rounds - 1`` once round 0 is done)."""
        return max(0, self.rounds - 1)

    @property
    def digest_size(self) -> int:
        """Length of this round's digests (int64 elements)."""
        if self.rounds == 0:
            return _ROUND0_SIZE
        return 1 + sum(((hi - lo) >> sh) + 1 for lo, hi, sh, _, _ in self._plan)

    # ------------------------------------------------------------------ worker side

    def digest(self, values: NDArray[np.int64] | NDArray[np.float64]) -> NDArray[np.int64]:
        """This round's digest of one chunk (a pure function of the round state and ``values``).

        Parameters
        ----------
        values : ndarray of int64 (kind "int") or float64 (kind "float"), 1-D, may be empty

        Returns
        -------
        ndarray of int64
            ``[round, ...]``: round 0 ``[0, count, NaN count, min key, max key]``; later rounds
            the histograms of the round's intervals.

        Raises
        ------
        ParameterError
            Wrong dtype or shape, or the search is done.
        """
        if self._done:
            msg = "the edge search is done; call edges() instead of digest()"
            raise ParameterError(msg)
        bits, is_float = order_bits(values, self.kind)
        if self.rounds == 0:
            n, nan, lo, hi = key_summary(bits, is_float)
            return np.array([0, n, nan, lo, hi], dtype=np.int64)
        los = np.array([p[0] for p in self._plan], dtype=np.int64)
        his = np.array([p[1] for p in self._plan], dtype=np.int64)
        shifts = np.array([p[2] for p in self._plan], dtype=np.int64)
        counts = interval_histograms(bits, is_float, los, his, shifts)
        return np.concatenate((np.array([self.rounds], dtype=np.int64), counts))

    @staticmethod
    def merge(digests: Iterable[NDArray[np.int64]]) -> NDArray[np.int64]:
        """Combine digests of one round (sum; min and max of the keys in round 0).

        Associative and commutative, and a merged digest merges again, so digests can be
        combined in any order or tree. Holds one digest at a time besides the running total.

        Raises
        ------
        ParameterError
            No digest, or digests of different rounds or sizes.
        """
        total: NDArray[np.int64] | None = None
        for d in digests:
            d = _as_digest(d)
            if total is None:
                total = d.copy()
                continue
            if d.shape != total.shape or d[0] != total[0]:
                msg = (
                    f"digests of different rounds or sizes cannot be merged: round {int(d[0])} "
                    f"size {d.shape[0]} and round {int(total[0])} size {total.shape[0]}"
                )
                raise ParameterError(msg)
            if total[0] == 0:
                if d.shape[0] != _ROUND0_SIZE:
                    msg = f"a round-0 digest has {_ROUND0_SIZE} elements, got {d.shape[0]}"
                    raise ParameterError(msg)
                total[1] += d[1]
                total[2] += d[2]
                total[3] = min(total[3], d[3])
                total[4] = max(total[4], d[4])
            else:
                total[1:] += d[1:]
        if total is None:
            msg = "no digest to merge: give at least one (a chunk may be empty)"
            raise ParameterError(msg)
        return total

    # ------------------------------------------------------------------ driver side

    def advance(self, merged: NDArray[np.int64]) -> None:
        """Move to the next round with the merged digest of every chunk, or finish.

        Raises
        ------
        ParameterError
            As ``quantile_edges`` on all chunks together (empty, NaN, integers beyond
            ``±2**53``), or a digest that does not belong to this round.
        """
        if self._done:
            msg = "the edge search is done; call edges()"
            raise ParameterError(msg)
        merged = _as_digest(merged)
        size = self.digest_size
        if merged[0] != self.rounds or merged.shape[0] != size:
            msg = (
                f"the digest is of round {int(merged[0])} with {merged.shape[0]} elements; "
                f"this search expects round {self.rounds} with {size}"
            )
            raise ParameterError(msg)
        if self.rounds == 0:
            self._start(*(int(v) for v in merged[1:].tolist()))
        else:
            self._narrow(merged[1:])
        self._rounds += 1

    def _start(self, n: int, nan: int, kmin: int, kmax: int) -> None:
        if n == 0:
            msg = "values is empty: quantile edges need at least one value"
            raise ParameterError(msg)
        self.n = n
        if self.k == 1:
            self._done = True
            return
        if nan:
            msg = f"values contain {nan} NaN of {n}; drop or fill them before computing edges"
            raise ParameterError(msg)
        if self.kind == "int" and (kmin < -_MAX_EXACT_INT or kmax > _MAX_EXACT_INT):
            msg = (
                f"integer values must lie within ±2**53 to give exact float64 edges, "
                f"got the range {kmin}..{kmax}"
            )
            raise ParameterError(msg)
        ranks = edge_ranks(n, self.k)
        if kmin == kmax:
            self._keys = [kmin] * (self.k - 1)
            self._done = True
            return
        self._plan_round({(kmin, kmax): (n, [[i, r] for i, r in enumerate(ranks)])})

    def _plan_round(self, groups: dict[tuple[int, int], tuple[int, list[list[int]]]]) -> None:
        if not groups:
            self._plan = []
            self._done = True
            return
        bits = min(self.bits, max(1, BUDGET_BITS - (len(groups) - 1).bit_length()))
        plan = []
        for lo, hi in sorted(groups):
            count, ranks = groups[(lo, hi)]
            shift = max(0, (hi - lo).bit_length() - bits)
            plan.append((lo, hi, shift, count, ranks))
        self._plan = plan

    def _narrow(self, hist: NDArray[np.int64]) -> None:
        groups: dict[tuple[int, int], tuple[int, list[list[int]]]] = {}
        start = 0
        for lo, hi, shift, count, ranks in self._plan:
            nb = ((hi - lo) >> shift) + 1
            h = hist[start : start + nb]
            start += nb
            cum = np.cumsum(h)
            if int(cum[-1]) != count or (h < 0).any():
                msg = (
                    f"the digests count {int(cum[-1])} values in a key interval that held {count} "
                    "last round: every chunk must be digested each round, with the same values"
                )
                raise ParameterError(msg)
            for idx, resid in ranks:
                b = int(np.searchsorted(cum, resid, side="right"))
                before = int(cum[b - 1]) if b else 0
                new_lo = lo + (b << shift)
                new_hi = min(hi, new_lo + (1 << shift) - 1)
                if new_lo == new_hi:
                    self._keys[idx] = new_lo
                    continue
                key = (new_lo, new_hi)
                if key not in groups:
                    groups[key] = (int(h[b]), [])
                groups[key][1].append([idx, resid - before])
        self._plan_round(groups)

    def edges(self) -> NDArray[np.float64]:
        """The ``k - 1`` edges, bit-identical to ``quantile_edges`` on all chunks together.

        Raises
        ------
        ParameterError
            The search is not done yet.
        """
        if not self._done:
            msg = f"the edge search is not done (round {self.rounds}); keep calling advance()"
            raise ParameterError(msg)
        keys = np.array(self._keys, dtype=np.int64)
        return decode_keys(keys, self.kind == "float")


# --------------------------------------------------------------------------------------------
# RFM over feature frames
# --------------------------------------------------------------------------------------------


class RFMEdgeSearch:
    """``RFMScorer.fit`` over feature frames seen in chunks: three :class:`EdgeSearch`.

    R on ``-recency_days`` (int), F on ``frequency`` (int), M on ``monetary`` (float), over the
    scored customers (``frequency >= 1``), selected exactly as :meth:`RFMScorer.fit` does. With
    ``method="thresholds"`` only round 0 (counting the scored customers) is needed.

    Parameters
    ----------
    scorer : RFMScorer
        The scorer to fit; :meth:`fitted` sets its ``edges_`` and ``n_fit_``.
    bits : int, default 16
        As for :class:`EdgeSearch`.
    """

    def __init__(self, scorer: RFMScorer, *, bits: int = DEFAULT_BITS) -> None:
        if not isinstance(scorer, RFMScorer):
            msg = f"scorer must be an RFMScorer, got {type(scorer).__name__}"
            raise ParameterError(msg)
        bins, method, _ = scorer._validated()
        self.scorer = scorer
        self.method = method
        self.n: int | None = None
        self._rounds = 0
        kinds = {"r": "int", "f": "int", "m": "float"}
        self.searches: dict[str, EdgeSearch] = (
            {d: EdgeSearch(bins, kinds[d], bits=bits) for d in DIMENSIONS}
            if method == "quantile"
            else {}
        )

    def __repr__(self) -> str:
        return f"RFMEdgeSearch({self.scorer!r}, round {self.rounds}, done={self.done})"

    @property
    def rounds(self) -> int:
        """Rounds completed (calls of :meth:`advance`), round 0 included."""
        return self._rounds

    @property
    def done(self) -> bool:
        """Whether the edges are known (:meth:`fitted` can be called)."""
        return self.rounds > 0 and all(s.done for s in self.searches.values())

    def digest(self, frame: pl.DataFrame) -> dict[str, NDArray[np.int64]]:
        """This round's digests of one feature frame: ``{"n": ..., "r": ..., "f": ..., "m": ...}``.

        Raises
        ------
        SchemaError, DataError
            As :meth:`RFMScorer.fit` on this frame (the message names this frame's counts).
        ParameterError
            The search is done.
        """
        if self.done:
            msg = "the RFM edge search is done; call fitted()"
            raise ParameterError(msg)
        checked = _check_frame(frame)
        n = _check_data(checked)
        out: dict[str, NDArray[np.int64]] = {"n": np.array([self.rounds, n], dtype=np.int64)}
        running = {d: s for d, s in self.searches.items() if not s.done}
        if running:
            arrays = _fit_arrays(checked)
            out.update({d: s.digest(arrays[d]) for d, s in running.items()})
        return out

    @staticmethod
    def merge(
        digests: Iterable[Mapping[str, NDArray[np.int64]]],
    ) -> dict[str, NDArray[np.int64]]:
        """Combine digest dicts of one round (each key with :meth:`EdgeSearch.merge`)."""
        total: dict[str, NDArray[np.int64]] | None = None
        for d in digests:
            if not isinstance(d, Mapping) or "n" not in d:
                msg = f"an RFM digest must be a dict with key 'n', got {type(d).__name__}"
                raise ParameterError(msg)
            if total is None:
                total = {key: _as_digest(v).copy() for key, v in d.items()}
                continue
            if sorted(d) != sorted(total):
                msg = f"RFM digests with different keys: {sorted(d)} and {sorted(total)}"
                raise ParameterError(msg)
            for key, v in d.items():
                if key == "n":
                    nv = _as_digest(v)
                    if nv.shape != total["n"].shape or nv[0] != total["n"][0]:
                        msg = "RFM digests of different rounds cannot be merged"
                        raise ParameterError(msg)
                    total["n"][1] += nv[1]
                else:
                    total[key] = EdgeSearch.merge((total[key], v))
        if total is None:
            msg = "no digest to merge: give at least one (a frame may be empty)"
            raise ParameterError(msg)
        return total

    def advance(self, merged: Mapping[str, NDArray[np.int64]]) -> None:
        """Move every running search to its next round, or finish.

        Raises
        ------
        DataError
            ``method="quantile"`` and no customer with ``frequency >= 1`` in any frame.
        ParameterError
            As :meth:`EdgeSearch.advance`.
        """
        if self.done:
            msg = "the RFM edge search is done; call fitted()"
            raise ParameterError(msg)
        nd = _as_digest(merged.get("n"))
        if nd.shape != (2,) or nd[0] != self.rounds:
            msg = f"the RFM digest is not of round {self.rounds}"
            raise ParameterError(msg)
        if self.rounds == 0:
            self.n = int(nd[1])
            if self.method == "quantile" and self.n == 0:
                msg = (
                    "no customer with frequency >= 1 to fit quantile edges on; "
                    "check the orders input or use method='thresholds'"
                )
                raise DataError(msg)
        elif int(nd[1]) != self.n:
            msg = (
                f"the frames hold {int(nd[1])} scored customers in round {self.rounds} but "
                f"{self.n} in round 0: give the same frames every round"
            )
            raise ParameterError(msg)
        for d, s in self.searches.items():
            if not s.done:
                if d not in merged:
                    msg = f"the RFM digest has no '{d}' part"
                    raise ParameterError(msg)
                s.advance(merged[d])
        self._rounds += 1

    def fitted(self) -> RFMScorer:
        """The scorer with ``edges_`` and ``n_fit_`` set exactly as ``fit(concat(frames))``.

        Raises
        ------
        ParameterError
            The search is not done yet.
        """
        if not self.done:
            msg = f"the RFM edge search is not done (round {self.rounds}); keep calling advance()"
            raise ParameterError(msg)
        assert self.n is not None
        _, _, thresholds = self.scorer._validated()
        if self.method == "thresholds":
            assert thresholds is not None
            self.scorer.edges_ = {d: list(v) for d, v in thresholds.items()}
        else:
            s = self.searches
            self.scorer.edges_ = _quantile_edges_dict(
                s["r"].edges(), s["f"].edges(), s["m"].edges()
            )
        self.scorer.n_fit_ = self.n
        return self.scorer


def fit_chunks(
    scorer: RFMScorer, frames: Callable[[], Iterable[pl.DataFrame]], *, bits: int = DEFAULT_BITS
) -> RFMScorer:
    """Fit ``scorer`` on feature frames seen in chunks, exactly as ``fit(pl.concat(frames()))``.

    Parameters
    ----------
    scorer : RFMScorer
        Fitted in place and returned.
    frames : callable
        Called once per round (about 2 to 5 times); each call yields the same frames (for
        example read again from bucket files). Only one frame and small histograms are held.
    bits : int, default 16
        As for :class:`EdgeSearch`.

    Returns
    -------
    RFMScorer
        ``scorer``, with ``edges_`` and ``n_fit_`` set.

    Raises
    ------
    SchemaError, DataError, ParameterError
        As :class:`RFMEdgeSearch`.
    """
    if not callable(frames):
        msg = f"frames must be a callable returning an iterable of frames, got {frames!r}"
        raise ParameterError(msg)
    search = RFMEdgeSearch(scorer, bits=bits)
    while not search.done:
        search.advance(RFMEdgeSearch.merge(search.digest(f) for f in frames()))
    return search.fitted()
