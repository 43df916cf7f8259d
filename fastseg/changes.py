"""What changed between two runs (``fastseg diff``, ``run --previous``): who joined and left
every segment, and RFM group transitions.

The two runs are aligned by ``customer_id`` (customers differ between days: new ones arrive,
others are gone), and the changes are computed from the segment bitsets: the bits of one run are
remapped onto the customers of the other by a Numba kernel (:func:`fastseg.kernels.bitset.changes`),
never by joining the long membership tables.

Results (:class:`Changes`):

- ``changes`` — one row per customer and changed segment: ``customer_id``, ``segment``,
  ``change`` (``joined``: a member now and not in the previous run, new customers included;
  ``left``: a member then and not now, customers gone included). Only segments present in both
  runs; segment-major, ``joined`` before ``left``.
- ``summary`` — per segment: ``segment``, ``status`` (``kept``, ``added``: only in the current
  run, ``removed``: only in the previous one), ``before``, ``after``, ``joined``, ``left``,
  ``stayed`` (null where the segment is absent from a run).
- ``transitions`` — ``before`` × ``after`` RFM group: ``customers``, ``revenue_before``,
  ``revenue_after`` (the ``monetary`` of each run), with ``(new)`` customers as ``before`` and
  ``(gone)`` ones as ``after``; customers without a group count as ``(none)``.
- ``notes`` — what a reader must know, such as RFM edges that moved between the runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fastseg.errors import InputError
from fastseg.progress import Reporter, Stopwatch

if TYPE_CHECKING:
    from fastseg.outputs import OutputSet
    from fastseg.runs import RunFolder

__all__ = ["DIFF_FILES", "Changes", "Side", "diff_results", "diff_runs", "stage_changes"]

#: what a diff writes (into ``fastseg diff --out DIR`` or the run folder of ``run --previous``)
DIFF_FILES = ("changes.parquet", "changes.csv", "transitions.csv", "diff.json")
NEW, GONE, NONE = "(new)", "(gone)", "(none)"
CHANGE = pl.Enum(["joined", "left"])
STATUS = pl.Enum(["kept", "added", "removed"])


@dataclass
class Side:
    """One run as the diff needs it: customer ids (bit order), segment bitsets, RFM groups."""

    ids: pl.Series
    names: tuple[str, ...]
    words: NDArray[np.uint64]
    groups: pl.Series  # rfm_group per customer (String, may be null)
    revenue: pl.Series  # monetary per customer (Float64)
    as_of: str
    edges: Any
    run_id: str | None = None
    path: str | None = None

    @classmethod
    def of_folder(cls, run: RunFolder) -> Side:
        scores = run.scan("scores", ["customer_id", "rfm_group", "monetary"])
        ids = _canonical_ids(scores["customer_id"], run.need("scores"))
        run.set_customer_ids(ids)  # checked: no null, no id twice
        names, words = run.membership()
        return cls(
            ids=ids,
            names=names,
            words=words,
            groups=scores["rfm_group"].cast(pl.String),
            revenue=scores["monetary"].cast(pl.Float64),
            as_of=run.as_of,
            edges=run.edges,
            run_id=run.run_id,
            path=str(run.path),
        )

    @classmethod
    def of_result(cls, result: Any) -> Side:
        seg = result.segments
        return cls(
            ids=result.scores["customer_id"],
            names=seg.names,
            words=seg.bitsets,
            groups=result.scores["rfm_group"].cast(pl.String),
            revenue=result.scores["monetary"].cast(pl.Float64),
            as_of=str(result.as_of),
            edges=result.scorer.to_dict(),
        )


@dataclass
class Changes:
    """What changed between two runs (see the module docstring for the frames)."""

    changes: pl.DataFrame
    summary: pl.DataFrame
    transitions: pl.DataFrame
    notes: list[str]
    customers: dict[str, int]
    segments_added: list[str]
    segments_removed: list[str]
    edges_changed: bool
    previous: dict[str, Any]
    current: dict[str, Any]
    seconds: float = 0.0
    files: dict[str, Any] = field(default_factory=dict)

    def transition_matrix(self, measure: str = "customers") -> pl.DataFrame:
        """``transitions`` as a matrix: one row per ``before`` group, one column per ``after``
        group (``measure``: ``customers``, ``revenue_before`` or ``revenue_after``)."""
        t = self.transitions
        if t.is_empty():
            return pl.DataFrame({"before": []}, {"before": pl.String})
        seen = set(t["after"].to_list())
        order = sorted(seen - {GONE}) + ([GONE] if GONE in seen else [])
        wide = t.pivot(on="after", index="before", values=measure, aggregate_function=None)
        return wide.select("before", *order).fill_null(0)

    def to_dict(self) -> dict[str, Any]:
        """The summary of the diff that ``diff.json`` holds (and a run's ``run.json`` under
        ``previous``)."""
        return {
            "previous": self.previous,
            "current": self.current,
            "customers": self.customers,
            "segments_added": self.segments_added,
            "segments_removed": self.segments_removed,
            "rfm_edges_changed": self.edges_changed,
            "notes": self.notes,
            "seconds": round(self.seconds, 4),
        }


# -------------------------------------------------------------------------------- alignment


def _canonical_ids(ids: pl.Series, where: Path) -> pl.Series:
    """Ids as fastseg writes them, Int64 or String, whatever wrote the folder."""
    if ids.dtype == pl.Int64 or ids.dtype == pl.String:
        return ids
    if ids.dtype.is_integer():
        try:
            return ids.cast(pl.Int64)
        except pl.exceptions.PolarsError:
            msg = (
                f"{where}: customer_id holds integers beyond the 64-bit signed range; write the "
                "ids as text"
            )
            raise InputError(msg) from None
    if ids.dtype in (pl.Categorical, pl.Null) or isinstance(ids.dtype, pl.Enum):
        return ids.cast(pl.String)
    msg = f"{where}: customer_id is {ids.dtype}; expected integers or text"
    raise InputError(msg)


def _check_id_kinds(prev: Side, cur: Side) -> None:
    pi, ci = prev.ids.dtype.is_integer(), cur.ids.dtype.is_integer()
    if pi != ci and len(prev.ids) and len(cur.ids):
        kind = {True: "integers", False: "text"}
        msg = (
            f"customer ids of the previous run{_at(prev)} are {kind[pi]} and of this run "
            f"{kind[ci]}: they cannot be matched; read both days' ids the same way "
            "(map the same column with --col customer_id=...)"
        )
        raise InputError(msg)


def _at(side: Side) -> str:
    return f" ({side.path})" if side.path else ""


def align(prev: pl.Series, cur: pl.Series) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(c2p, p2c)``: for every current customer its row in the previous run (-1: new), and
    for every previous customer its row now (-1: gone). Ids are distinct within a run.

    fastseg writes a run's customers sorted by id, so this is one linear merge; lists that are
    not sorted (a run folder from elsewhere) go through Polars' hash join.
    """
    n_p, n_c = len(prev), len(cur)
    if n_p == 0 or n_c == 0:
        return np.full(n_c, -1, dtype=np.int64), np.full(n_p, -1, dtype=np.int64)
    merged = _merge(prev, cur)
    if merged is not None:
        p2c, c2p = merged
        return c2p, p2c
    left = pl.DataFrame({"customer_id": cur, "_i": np.arange(n_c, dtype=np.int64)})
    right = pl.DataFrame({"customer_id": prev, "_j": np.arange(n_p, dtype=np.int64)})
    pairs = left.join(right, on="customer_id", how="inner")
    i, j = pairs["_i"].to_numpy(), pairs["_j"].to_numpy()
    c2p = np.full(n_c, -1, dtype=np.int64)
    p2c = np.full(n_p, -1, dtype=np.int64)
    c2p[i] = j
    p2c[j] = i
    return c2p, p2c


def _merge(prev: pl.Series, cur: pl.Series) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """``(p2c, c2p)`` by a merge of the two sorted lists, or None when one is not sorted."""
    from fastseg.kernels.align import merge_sorted_int, merge_sorted_text
    from fastseg.segmenting import text_buffers

    if prev.dtype.is_integer():
        return merge_sorted_int(prev.cast(pl.Int64).to_numpy(), cur.cast(pl.Int64).to_numpy())
    return merge_sorted_text(text_buffers(prev), text_buffers(cur))


def _same_edges(a: Any, b: Any) -> bool:
    keys = ("method", "bins", "edges")
    if not isinstance(a, dict) or not isinstance(b, dict):
        return a == b
    return all(a.get(k) == b.get(k) for k in keys)


def diff_sides(prev: Side, cur: Side) -> Changes:
    """The changes from ``prev`` to ``cur`` (see :class:`Changes`)."""
    from fastseg.kernels import bitset as bs

    t0 = time.perf_counter()
    _check_id_kinds(prev, cur)
    if not len(prev.ids) and prev.ids.dtype != cur.ids.dtype:  # an empty run: any id type
        prev.ids = prev.ids.cast(cur.ids.dtype)
    if not len(cur.ids) and cur.ids.dtype != prev.ids.dtype:
        cur.ids = cur.ids.cast(prev.ids.dtype)
    c2p, p2c = align(prev.ids, cur.ids)
    common = [n for n in cur.names if n in set(prev.names)]
    ci = np.array([cur.names.index(n) for n in common], dtype=np.int64)
    pi = np.array([prev.names.index(n) for n in common], dtype=np.int64)
    joined, stayed = bs.changes(cur.words, ci, prev.words, pi, c2p)
    left, _ = bs.changes(prev.words, pi, cur.words, ci, p2c)
    n_joined = bs.popcount(joined) if common else np.zeros(0, np.int64)
    n_left = bs.popcount(left) if common else np.zeros(0, np.int64)
    changes = _change_rows(common, joined, n_joined, cur.ids, left, n_left, prev.ids)

    sizes_c = dict(zip(cur.names, np.asarray(bs.popcount(cur.words)).tolist(), strict=True))
    sizes_p = dict(zip(prev.names, np.asarray(bs.popcount(prev.words)).tolist(), strict=True))
    added = [n for n in cur.names if n not in sizes_p]
    removed = [n for n in prev.names if n not in sizes_c]
    k = {n: i for i, n in enumerate(common)}
    rows = []
    for n in [*cur.names, *removed]:
        status = "kept" if n in k else ("added" if n in added else "removed")
        at = k.get(n)
        rows.append(
            (
                n,
                status,
                sizes_p.get(n),
                sizes_c.get(n),
                None if at is None else int(n_joined[at]),
                None if at is None else int(n_left[at]),
                None if at is None else int(stayed[at]),
            )
        )
    summary = pl.DataFrame(
        rows,
        schema={
            "segment": pl.String,
            "status": STATUS,
            "before": pl.Int64,
            "after": pl.Int64,
            "joined": pl.Int64,
            "left": pl.Int64,
            "stayed": pl.Int64,
        },
        orient="row",
    )
    transitions = _transitions(prev, cur, c2p, p2c)
    n_new = int((c2p < 0).sum())
    n_gone = int((p2c < 0).sum())
    customers = {
        "before": len(prev.ids),
        "after": len(cur.ids),
        "new": n_new,
        "gone": n_gone,
        "staying": len(cur.ids) - n_new,
    }
    same_edges = _same_edges(prev.edges, cur.edges)
    notes = []
    if not same_edges:
        notes.append(
            "the two runs were scored with different RFM edges (quantile cut points move with "
            "the data): customers can change rfm_group in transitions.csv without changing "
            "behaviour; score every day against one set of edges with --edges-in EDGES.json "
            "(save them once with --edges-out)"
        )
    if prev.as_of == cur.as_of and prev.run_id != cur.run_id:
        notes.append(
            f"both runs were scored for the same date ({cur.as_of}): if this is a rerun of the "
            "day, these are the changes since the first attempt, not since the day before; keep "
            "one folder per day (runs/$DAY) and compare with the day before"
        )
    if added:
        notes.append(f"segments only in the current run (added): {', '.join(added)}")
    if removed:
        notes.append(f"segments only in the previous run (removed): {', '.join(removed)}")
    return Changes(
        changes=changes,
        summary=summary,
        transitions=transitions,
        notes=notes,
        customers=customers,
        segments_added=added,
        segments_removed=removed,
        edges_changed=not same_edges,
        previous={"path": prev.path, "run_id": prev.run_id, "as_of": prev.as_of},
        current={"path": cur.path, "run_id": cur.run_id, "as_of": cur.as_of},
        seconds=time.perf_counter() - t0,
    )


def _change_rows(
    common: list[str],
    joined: NDArray[np.uint64],
    n_joined: NDArray[np.int64],
    cur_ids: pl.Series,
    left: NDArray[np.uint64],
    n_left: NDArray[np.int64],
    prev_ids: pl.Series,
) -> pl.DataFrame:
    from fastseg.kernels import bitset as bs

    seg_type = pl.Enum(common)
    labels = pl.Series("segment", common, dtype=seg_type)
    parts = []
    for words, sizes, ids, change in (
        (joined, n_joined, cur_ids, "joined"),
        (left, n_left, prev_ids, "left"),
    ):
        if not common:
            continue
        rows, segs = bs.members_all(words, sizes)
        parts.append(
            pl.DataFrame(
                [
                    ids.gather(pl.Series(rows)).rename("customer_id"),
                    labels.gather(pl.Series(segs.astype(np.uint32))),
                    pl.Series("change", [change], dtype=CHANGE).extend_constant(
                        change, len(rows) - 1
                    )
                    if len(rows)
                    else pl.Series("change", [], dtype=CHANGE),
                ]
            )
        )
    if not parts:
        dtype = cur_ids.dtype
        return pl.DataFrame(
            {"customer_id": [], "segment": [], "change": []},
            schema={"customer_id": dtype, "segment": seg_type, "change": CHANGE},
        )
    out = pl.concat(parts, how="vertical")
    # segment-major, joined before left (both parts are already ordered within)
    return out.sort(["segment", "change"], maintain_order=True)


def _transitions(
    prev: Side, cur: Side, c2p: NDArray[np.int64], p2c: NDArray[np.int64]
) -> pl.DataFrame:
    """before x after RFM group counts and revenue, with (new) and (gone): group codes tallied
    in one pass by a kernel (the customers are never joined)."""
    from fastseg.kernels.align import transitions as transition_counts

    labels = sorted(
        set(prev.groups.drop_nulls().unique().to_list())
        | set(cur.groups.drop_nulls().unique().to_list())
        | {NONE}
    )
    names = [NEW, *labels, GONE]
    g = len(names)
    enum = pl.Enum(names)

    def codes(groups: pl.Series) -> NDArray[np.uint32]:
        return groups.fill_null(NONE).cast(enum).to_physical().to_numpy()

    def money(values: pl.Series) -> NDArray[np.float64]:
        return values.fill_null(0.0).fill_nan(0.0).to_numpy()

    customers, rev_before, rev_after = transition_counts(
        codes(prev.groups), money(prev.revenue), codes(cur.groups), money(cur.revenue), c2p, p2c, g
    )
    cells = np.flatnonzero(customers)
    b, a = cells // g, cells % g
    # (new) first and (gone) last; groups by name between (the codes are in that order)
    out = pl.DataFrame(
        {
            "before": pl.Series([names[x] for x in b], dtype=pl.String),
            "after": pl.Series([names[x] for x in a], dtype=pl.String),
            "customers": pl.Series(customers[cells], dtype=pl.Int64),
            "revenue_before": pl.Series(rev_before[cells], dtype=pl.Float64).round(2),
            "revenue_after": pl.Series(rev_after[cells], dtype=pl.Float64).round(2),
        }
    )
    return out.with_columns(
        pl.when(pl.col("before") == NEW)
        .then(None)
        .otherwise("revenue_before")
        .alias("revenue_before"),
        pl.when(pl.col("after") == GONE)
        .then(None)
        .otherwise("revenue_after")
        .alias("revenue_after"),
    )


# -------------------------------------------------------------------------------- entry points


def diff_results(previous: Any, current: Any) -> Changes:
    """Changes from ``previous`` (a run folder path, :class:`~fastseg.runs.RunFolder` or
    :class:`~fastseg.api.RunResult`) to ``current`` (the same kinds)."""
    return diff_sides(_side(previous, "previous"), _side(current, "current"))


def _side(run: Any, option: str) -> Side:
    from fastseg.runs import RunFolder, open_run

    if isinstance(run, Side):
        return run
    if isinstance(run, RunFolder):
        return Side.of_folder(run)
    if getattr(run, "segments", None) is not None and hasattr(run, "scorer"):
        return Side.of_result(run)
    if isinstance(run, str | Path):
        return Side.of_folder(open_run(run, option))
    msg = f"{option}: expected a run folder or a RunResult, got {type(run).__name__}"
    raise InputError(msg)


def stage_changes(ch: Changes, outs: OutputSet, folder: Path) -> dict[str, Path]:
    """Write ``changes.parquet``, ``changes.csv``, ``transitions.csv`` into the staging area of
    ``outs`` (``diff.json`` is written by :func:`diff_runs`; a run keeps it in ``run.json``)."""
    paths = {
        "changes": outs.write_frame(ch.changes, folder / "changes.parquet", "parquet"),
        "changes_summary": outs.write_frame(ch.summary, folder / "changes.csv", "csv"),
        "transitions": outs.write_frame(ch.transitions, folder / "transitions.csv", "csv"),
    }
    return paths


def diff_runs(
    previous: Any,
    current: Any,
    out: str | Path | None = None,
    *,
    progress: Reporter | None = None,
) -> Changes:
    """The changes between two run folders; with ``out``, written to that folder as one set:
    ``changes.parquet``, ``changes.csv``, ``transitions.csv`` and ``diff.json``. Stages (told
    to ``progress``): ``diff``, ``write``."""
    from fastseg.outputs import OutputSet
    from fastseg.runs import open_run

    watch = Stopwatch(progress)
    prev = open_run(previous, "previous run") if isinstance(previous, str | Path) else previous
    cur = open_run(current, "current run") if isinstance(current, str | Path) else current
    inputs = [r.path for r in (prev, cur) if hasattr(r, "path")]
    if out is None:
        with watch.stage("diff", unit="customers") as st:
            ch = diff_results(prev, cur)
            st.advance(ch.customers["after"])
        return ch
    with OutputSet(inputs) as outs:
        folder = outs.add_folder(out, "--out", reserved=DIFF_FILES, marker="diff.json")
        with watch.stage("diff", unit="customers") as st:
            ch = diff_results(prev, cur)
            st.advance(ch.customers["after"])
        with watch.stage("write"):
            ch.files = {k: str(v) for k, v in stage_changes(ch, outs, folder).items()}
            doc = {"format": "fastseg-diff-1", "as_of": ch.current["as_of"], **ch.to_dict()}
            doc["files"] = {
                str(p.relative_to(folder)): outs.path(p).stat().st_size
                for p in outs.files()
                if p.is_relative_to(folder)
            }
            outs.write_text(folder / "diff.json", json.dumps(doc, indent=2, default=str) + "\n")
            outs.commit()
    return ch
