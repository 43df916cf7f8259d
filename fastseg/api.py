"""The batch façade: what the CLI calls, and what scripts and pipelines call.

:func:`score` turns an order history into one row per customer with features and RFM scores;
:func:`run` adds segments (the main job); :func:`segment` evaluates segments over a scores frame.
Each has a ``*_job`` twin returning the full result (reports, timings) used by the CLI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from fastseg.errors import DataError, ParameterError
from fastseg.progress import Reporter, Stopwatch

if TYPE_CHECKING:
    from fastseg.changes import Changes
    from fastseg.clustering import ClusterResult
    from fastseg.exporting import ExportResult
    from fastseg.orders import RowReport
    from fastseg.outputs import OutputSet
    from fastseg.rules.catalog import Catalog
    from fastseg.scoring import RFMScorer
    from fastseg.segmenting import SegmentResult

__all__ = [
    "Reporter",
    "RunResult",
    "Stopwatch",
    "ScoreResult",
    "load_rules",
    "run",
    "run_job",
    "score",
    "score_job",
    "segment",
    "diff",
    "export",
    "cluster",
    "write_outputs",
]

Columns = Mapping[str, str] | Sequence[str] | None


def _watch(stopwatch: Stopwatch | None, progress: Reporter | None) -> Stopwatch:
    """The stopwatch of a job, reporting to ``progress`` when one is given."""
    watch = stopwatch if stopwatch is not None else Stopwatch()
    if progress is not None:
        watch.progress = progress
    return watch


def _kernels_stage(watch: Stopwatch, state: bool = False) -> None:
    """Compile the main job's kernels (``state``: and a refresh's) as a stage of its own,
    announced, when a reporter watches and they are not compiled and cached yet
    (:mod:`fastseg.warmup`); otherwise nothing: each stage loads the cached kernels it calls."""
    from fastseg import warmup

    if watch.progress.silent or not warmup.needed(state):
        return
    with watch.stage("kernels", note=warmup.MESSAGE):
        warmup.warm_up(state)


@dataclass
class ScoreResult:
    """Everything a scoring run produced: the scores, what was read, and how long it took."""

    scores: pl.DataFrame
    as_of: dt.date
    scorer: RFMScorer
    orders: RowReport
    customers: RowReport | None = None
    events: RowReport | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: with predictions (``run --predict``): the :class:`fastseg.predicting.Prediction`
    prediction: Any = None
    #: schemas of the canonical raw orders and events frames (for type-checking rule filters)
    sources: dict[str, pl.Schema | None] = field(default_factory=dict)
    #: the left-out order rows with their reason (when ``rejects`` was asked for)
    rejected: pl.DataFrame | None = field(default=None, repr=False)
    #: what was written: output name -> path
    outputs: dict[str, Path] = field(default_factory=dict)
    #: the customers were scored in buckets on disk (:class:`fastseg.bucketrun.BucketInfo`):
    #: ``scores`` is then empty (the rows are in the outputs) unless nothing was written
    buckets: Any = None
    #: with ``state``: the state after this run (:meth:`fastseg.state.StateInfo.to_dict`,
    #: with ``report``, the rows of every input applied so far)
    state: dict[str, Any] | None = None

    @property
    def n_customers(self) -> int:
        if self.buckets is not None:
            return int(self.buckets.customers)
        return self.scores.height

    @property
    def n_scored(self) -> int:
        if self.buckets is not None:
            return int(self.buckets.scored)
        return int(self.scores["r_score"].is_not_null().sum())

    def group_counts(self) -> pl.DataFrame:
        """Customers per ``rfm_group``, largest first."""
        if self.buckets is not None:
            return self.buckets.group_counts
        return (
            self.scores.group_by("rfm_group")
            .agg(pl.len().alias("customers"))
            .with_columns((pl.col("customers") / max(self.scores.height, 1)).alias("share"))
            .sort(["customers", "rfm_group"], descending=[True, False])
        )


@dataclass
class RunResult(ScoreResult):
    """A scoring run plus its segments."""

    segments: SegmentResult | None = None
    #: the changes since ``previous`` when the run was given one (written into the run folder)
    changes: Changes | None = None
    #: a bucketed run's tables, written bucket by bucket (:class:`fastseg.bucketrun.TableParts`)
    parts: dict[str, Any] = field(default_factory=dict)

    def diff(self, previous: Any) -> Changes:
        """What changed since ``previous`` (a run folder path or another :class:`RunResult`):
        joined/left per customer and segment, per-segment counts, RFM transitions
        (:class:`fastseg.changes.Changes`)."""
        from fastseg.changes import diff_results

        return diff_results(previous, self)


def _as_date(value: dt.date | dt.datetime | str | None) -> dt.date | None:
    from fastseg.orders import as_date as conv

    return conv(value, "as_of")


def _make_scorer(
    bins: int | None,
    method: str | None,
    thresholds: Mapping[str, Sequence[float]] | Sequence[str] | None,
    edges_in: str | Path | None,
    scorer: RFMScorer | None,
) -> tuple[RFMScorer, bool]:
    """The scorer to use and whether it still has to be fitted.

    Saved edges (``edges_in``) or a given ``scorer`` decide the bins and the method: a ``bins``,
    ``method`` or ``thresholds`` that disagrees with them is an error, never silently ignored.
    """
    from fastseg.scoring import RFMScorer, parse_thresholds

    if scorer is not None and edges_in is not None:
        msg = "scorer and edges_in: give one or the other, not both"
        raise ParameterError(msg)
    if scorer is None and edges_in is not None:
        scorer = RFMScorer.load(edges_in)
        where = f"--edges-in '{edges_in}'"
    else:
        where = "the given scorer"
    if scorer is not None:
        if bins is not None and bins != scorer.bins:
            msg = (
                f"--bins {bins} disagrees with {where}, which scores with {scorer.bins} bins: "
                f"drop --bins (the saved edges decide) or fit new edges without --edges-in"
            )
            raise ParameterError(msg)
        if (method is not None and method != scorer.method) or thresholds is not None:
            msg = (
                f"--method/--thresholds cannot change {where} (method {scorer.method}): drop them, "
                "or fit new edges without --edges-in"
            )
            raise ParameterError(msg)
        return scorer, not hasattr(scorer, "edges_")
    if thresholds is not None and not isinstance(thresholds, Mapping):
        thresholds = parse_thresholds(list(thresholds))
    return RFMScorer(
        bins=5 if bins is None else bins, method=method or "quantile", thresholds=thresholds
    ), True


def _output_set(*sources: Any) -> OutputSet:
    """An output set guarding every file, folder and glob pattern the job reads."""
    from fastseg.io import input_paths, input_patterns
    from fastseg.outputs import OutputSet

    paths: list[Path] = []
    patterns: list[str] = []
    for src in sources:
        paths += input_paths(src)
        patterns += input_patterns(src)
    return OutputSet(paths, patterns)


def _rules_path(rules: Any) -> Any:
    """The rules argument when it names a file (not TOML text or a Catalog), else None: the
    catalog loader's own test."""
    from fastseg.rules.catalog import names_a_file

    return rules if names_a_file(rules) else None


def check_time_zone(tz: str | None, option: str = "tz") -> str | None:
    """``tz`` when it names an IANA time zone (None stays None); else a ParameterError naming
    ``option`` and the closest zone (see :func:`fastseg.schema.check_time_zone`)."""
    from fastseg.schema import check_time_zone as check

    return check(tz, option)


def score_job(
    orders: Any,
    *,
    customers: Any = None,
    events: Any = None,
    as_of: dt.date | dt.datetime | str | None = None,
    bins: int | None = None,
    method: str | None = None,
    thresholds: Mapping[str, Sequence[float]] | Sequence[str] | None = None,
    columns: Columns = None,
    customer_columns: Columns = None,
    event_columns: Columns = None,
    windows: Sequence[int] = (30, 90, 365),
    strict: bool = False,
    rejects: str | Path | None = None,
    edges_in: str | Path | None = None,
    edges_out: str | Path | None = None,
    scorer: RFMScorer | None = None,
    aggregates: Sequence[Any] = (),
    extra_columns: Sequence[str] = (),
    reader: str | None = None,
    out: str | Path | None = None,
    out_format: str | None = None,
    btyd: bool = False,
    top_category: bool = False,
    tz: str | None = None,
    memory_limit: str | int | None = None,
    tmp_dir: str | Path | None = None,
    state: str | Path | None = None,
    keep_days: int | None = None,
    stopwatch: Stopwatch | None = None,
    progress: Reporter | None = None,
    _outputs: OutputSet | None = None,
    _buckets: Any = None,
    _refresh: Any = None,
) -> ScoreResult:
    """Read, build features, score: see :func:`score` for the parameters.

    ``out`` (with ``out_format``: ``"parquet"`` or ``"csv"``, default from the suffix) writes the
    scores; it, ``rejects`` and ``edges_out`` are declared before any row is read and committed
    together once everything succeeded (:class:`fastseg.outputs.OutputSet`).

    ``aggregates`` are windowed-aggregate specs from the rule compiler, computed in the same pass
    over the orders as the features (per streamed batch, then added up) and in one ``group_by``
    over the events. Stages timed: ``orders`` (read and aggregate the order rows, streamed),
    ``read`` (profiles, events), ``features`` (events, joins), ``scoring``, ``write``.

    ``progress`` (a :class:`fastseg.progress.Reporter`; None: silent) is told of each stage as
    it runs, with the order rows per batch; it becomes the reporter of ``stopwatch``. With a
    reporter that shows something, kernels not compiled yet are compiled first, as a stage of
    their own (``kernels``).

    ``memory_limit`` (``"1500MB"``, ``"4GiB"``, bytes; None: 75% of the memory available;
    ``False``: no limit): when the per-customer state would pass it, the rows are spilled to
    customer buckets under ``tmp_dir`` and scored bucket by bucket (:mod:`fastseg.buckets`),
    exactly as in memory. ``_buckets``: ``(spill folder, consume)`` of :func:`run_job` (its
    per-bucket segments); by default each bucket's scores go to the ``out`` file.

    ``state`` (a folder): a daily refresh (:mod:`fastseg.state`, docs/refresh.md) — the orders
    are the new ones, added to the state the folder holds (made from them when it is new or
    empty); the new state is committed with the outputs. ``orders`` may then be None (no new
    order: the scoring date given by ``as_of`` ages the state). ``keep_days``: the days of
    recent rows the new state keeps (at least the longest window).
    """
    from fastseg import features as feat
    from fastseg.outputs import frame_writer
    from fastseg.schema import check_time_zone

    watch = _watch(stopwatch, progress)
    windows = feat.check_windows(windows)
    as_of_day = _as_date(as_of)
    tz = check_time_zone(tz)
    if out_format is not None and out is None:
        msg = "out_format: give out (the scores file) too"
        raise ParameterError(msg)
    _check_mappings(customers, customer_columns, events, event_columns)
    frame_writer(pl.DataFrame(), out or "x.parquet", out_format)  # checks the format first
    if (state is not None or _refresh is not None) and memory_limit not in (None, False):
        msg = (
            "--memory-limit: a run with --state keeps every customer in memory (its state is "
            "about 100 bytes a customer); leave --memory-limit out"
        )
        raise ParameterError(msg)
    if orders is None and state is None and _refresh is None:
        msg = "orders: give the orders to score (None only with state: a new scoring date)"
        raise ParameterError(msg)
    the_scorer, needs_fit = _make_scorer(bins, method, thresholds, edges_in, scorer)
    from fastseg import buckets as B

    bud = None if memory_limit is False or state is not None or _refresh else B.budget(memory_limit)
    with contextlib.ExitStack() as stack:
        refresh = _refresh
        if state is not None:
            refresh = stack.enter_context(_open_state(state, orders, keep_days))
        if refresh is not None:
            if orders is None:
                orders = refresh.empty_orders()
            fixed = refresh.old.get("edges") if refresh.old is not None else None
            if fixed is not None and edges_in is None and scorer is None:
                if bins is not None or method is not None or thresholds is not None:
                    msg = (
                        f"--state '{refresh.sd.folder}' scores with fixed edges (from --edges-in "
                        "when it was made): drop --bins/--method/--thresholds, or rebuild it"
                    )
                    raise ParameterError(msg)
                from fastseg.scoring import RFMScorer as _Scorer

                the_scorer, needs_fit = _Scorer.from_dict(fixed), False
            refresh.fixed_edges = fixed  # edges given now: kept once fitted (below)
        if _buckets is not None:
            folder, consume = _buckets
        elif bud is not None:
            folder, consume = stack.enter_context(B.spill_folder(tmp_dir)), None
        outs = _outputs
        if outs is None:  # declared (and checked) before any row is read
            outs = stack.enter_context(_output_set(orders, customers, events, edges_in))
        targets = {
            name: outs.add_file(path, option)
            for name, path, option in (
                ("scores", out, "--out"),
                ("rejects", rejects, "--rejects"),
                ("edges", edges_out, "--edges-out"),
            )
            if path is not None
        }
        if refresh is not None:
            from fastseg.state import MANIFEST

            targets["state"] = outs.add_file(refresh.sd.path(MANIFEST), "--state")
        _kernels_stage(watch, state=refresh is not None)
        options = {
            "customers": customers,
            "events": events,
            "as_of": as_of_day,
            "columns": columns,
            "customer_columns": customer_columns,
            "event_columns": event_columns,
            "windows": windows,
            "strict": strict,
            "rejects": rejects is not None,
            "aggregates": aggregates,
            "extra_columns": extra_columns,
            "reader": reader,
            "btyd": btyd,
            "top_category": top_category,
            "tz": tz,
        }
        if refresh is not None:
            options["refresh"] = refresh
        parts = None
        too_large = None
        try:
            res = _score(
                orders, scorer=the_scorer, needs_fit=needs_fit, watch=watch, budget=bud, **options
            )
        except B.StateTooLarge as exc:  # outside this block: its traceback holds the state
            too_large = B.StateTooLarge(exc.customers, exc.rows_read, exc.state)
        if too_large is not None:
            from fastseg.bucketrun import TableParts, score_buckets

            assert bud is not None
            big = too_large
            if consume is None:
                parts = TableParts(folder, "scores")
                consume = lambda scores, _whole: parts.add(scores)  # noqa: E731
            whole, info = score_buckets(
                orders,
                bud=bud,
                too_large=big,
                folder=folder,
                scorer=the_scorer,
                needs_fit=needs_fit,
                watch=watch,
                consume=consume,
                options=options,
            )
            scores = pl.DataFrame()
            if parts is not None and out is None:  # the API's frame: every bucket's scores
                scores = pl.concat([pl.read_ipc(p) for p in parts.parts])
            elif parts is not None:
                scores = pl.DataFrame(schema=parts.schema())
            res = ScoreResult(
                scores=scores,
                as_of=whole.as_of,
                scorer=the_scorer,
                orders=whole.orders,
                customers=whole.customers,
                events=whole.events,
                timings=watch.seconds,
                sources=whole.sources,
                rejected=whole.rejected,
                buckets=info,
            )
        with watch.stage("write") if targets else contextlib.nullcontext():
            if "rejects" in targets:
                outs.write_frame(res.rejected, targets["rejects"])
                res.orders.rejects_path = targets["rejects"]
            if "edges" in targets:
                outs.write_text(targets["edges"], the_scorer.to_json())
            if "scores" in targets and parts is not None:
                fmt = out_format or (
                    "csv" if str(out).lower().endswith((".csv", ".tsv")) else "parquet"
                )
                outs.write_with(targets["scores"], lambda p: parts.write(p, fmt))
                res.outputs = dict(targets)
            elif "scores" in targets:
                outs.write_frame(res.scores, targets["scores"], out_format)
                res.outputs = dict(targets)
            if refresh is not None:
                if edges_in is not None or scorer is not None:
                    refresh.fixed_edges = res.scorer.to_dict()
                manifest = refresh.finished_manifest()
                outs.write_text(targets["state"], json.dumps(manifest, indent=1) + "\n")
                res.state = refresh.summary()
            if _outputs is None:
                outs.commit()
                if refresh is not None:
                    refresh.sd.remove_unlisted(manifest)
        res.timings = watch.seconds
        return res


@contextlib.contextmanager
def _open_state(state: str | Path, orders: Any, keep_days: int | None) -> Any:
    """The state folder, locked, with the fingerprints of the new orders checked against the
    inputs it applied (:class:`fastseg.state.Refresh`)."""
    from fastseg.io import scan_source
    from fastseg.state import Refresh, StateDir, check_keep_days, fingerprints

    keep_days = check_keep_days(keep_days)
    with StateDir.opened(state) as sd:
        prints = []
        if orders is not None:
            prints = fingerprints(orders, scan_source(orders, what="orders").files)
        refresh = Refresh(sd, prints, keep_days)
        refresh.check_inputs()
        yield refresh


@dataclass
class PartFeatures:
    """The per-customer features of one set of customers (all of them, a bucket on disk or a
    Spark partition), joined with their profiles, event features and rule aggregates, not
    scored: :func:`_features`'s result."""

    frame: pl.DataFrame
    as_of: dt.date
    orders: Any  # RowReport
    customers: Any = None  # RowReport of the profiles (None: no profiles)
    events: Any = None  # RowReport of the events
    sources: dict[str, pl.Schema | None] = field(default_factory=dict)
    rejected: pl.DataFrame | None = None
    max_used_day: int | None = None


def _score(
    orders: Any,
    *,
    scorer: RFMScorer,
    needs_fit: bool,
    watch: Stopwatch,
    **options: Any,
) -> ScoreResult:
    """The reading and scoring of :func:`score_job`; writes nothing."""
    part = _features(orders, watch=watch, **options)
    frame, order_report = part.frame, part.orders
    with watch.stage("scoring", unit="customers") as st:
        if needs_fit:
            try:
                scorer.fit(frame)
            except DataError as exc:
                msg = f"orders {order_report.source}: {exc}"
                raise DataError(msg) from None
        scores = scorer.transform(frame)
        st.advance(scores.height)
    return ScoreResult(
        scores=scores,
        as_of=part.as_of,
        scorer=scorer,
        orders=order_report,
        customers=part.customers,
        events=part.events,
        timings=watch.seconds,
        sources=part.sources,
        rejected=part.rejected,
    )


def _features(
    orders: Any,
    *,
    customers: Any,
    events: Any,
    as_of: dt.date | None,
    columns: Columns,
    customer_columns: Columns,
    event_columns: Columns,
    windows: tuple[int, ...],
    strict: bool,
    rejects: bool,
    aggregates: Sequence[Any],
    extra_columns: Sequence[str],
    reader: str | None,
    watch: Stopwatch,
    btyd: bool = False,
    top_category: bool = False,
    tz: str | None = None,
    loaded: bool = False,
    opened: Any = None,
    partial: bool = False,
    budget: Any = None,
    batch_rows: int | None = None,
    refresh: Any = None,
) -> PartFeatures:
    """Read the orders (and profiles, events) of a set of customers and build their features,
    joined, unscored. Stages ``orders``, ``read``, ``features``.

    ``loaded``: ``customers`` and ``events`` are frames :func:`fastseg.orders.load_customers`
    / :func:`~fastseg.orders.load_events` made already (a bucket's share of them: not typed,
    checked or counted again; their reports are the caller's). ``opened``: the orders' plan,
    statistics and reader made already (:mod:`fastseg.buckets`; see
    :func:`fastseg.pipeline.order_features`, as for ``partial`` and ``budget``).
    """
    from fastseg import direct as D
    from fastseg import features as feat
    from fastseg.orders import check_id_types, load_customers, load_events
    from fastseg.pipeline import aggregate_rules, order_features

    order_specs = [a for a in aggregates if a.source == "orders"]
    if refresh is not None:  # what the state carries, computed on a run without those rules too
        order_specs += refresh.hidden_specs(order_specs)
    order_cols = {c for a in order_specs for c in a.columns}
    if refresh is not None:
        order_cols |= set(refresh.kept_columns())
    with watch.stage("orders") as st:
        of = order_features(
            orders,
            columns=columns,
            as_of=as_of,
            strict=strict,
            rejects=rejects,
            windows=windows,
            aggregates=order_specs,
            extra_columns=sorted(order_cols | set(extra_columns)),
            reader=reader,
            progress=st,
            btyd=btyd,
            top_category=top_category,
            tz=tz,
            opened=opened,
            partial=partial,
            budget=budget,
            refresh=refresh,
            **({"batch_rows": batch_rows} if batch_rows else {}),
        )
    frame, extra, rejected = of.frame, of.aggregates, of.rejects
    order_report, as_of_date = of.report, of.as_of
    max_used_day = of.max_used_day
    sources: dict[str, pl.Schema | None] = {"orders": of.schema, "events": None}
    del of
    prof = ev_feat = ev = None
    cust_report = ev_report = None
    ev_extra = None
    ev_specs = [a for a in aggregates if a.source == "events"]
    ev_cols = sorted({c for a in ev_specs for c in a.columns} - {"event", "event_date"})
    direct = None
    int_ids = frame.schema["customer_id"] == pl.Int64
    if loaded:
        prof, ev = customers, events
        if ev is not None:
            sources["events"] = ev.schema
    elif events is not None and reader != "polars" and int_ids:  # Parquet, int ids: streamed
        direct = D.plan_direct_events(events, event_columns, extra_columns=ev_cols)
    if not loaded and (customers is not None or (events is not None and direct is None)):
        with watch.stage("read") as st:
            if customers is not None:
                prof, cust_report = load_customers(customers, columns=customer_columns, tz=tz)
                prof = check_id_types(frame, prof, "customers", cust_report.source)
                st.advance(cust_report.rows_read)
            if events is not None and direct is None:
                ev, ev_report = load_events(
                    events, as_of=as_of_date, columns=event_columns, extra_columns=ev_cols, tz=tz
                )
                ev = check_id_types(frame, ev, "events", ev_report.source)
                sources["events"] = ev.schema
                st.advance(ev_report.rows_read)
    with watch.stage("features", unit="customers") as st:
        if direct is not None:  # the events read as they are aggregated
            ev_feat, ev_report = D.event_features_direct(
                direct, as_of_date, feat.EVENT_WINDOWS, aggregates=ev_specs
            )
            sources["events"] = D.event_schema(direct)
        elif ev is not None:
            ev_feat = feat.event_features(ev, as_of_date)
            ev_extra = aggregate_rules(ev, ev_specs, as_of_date, frame.columns + ev_feat.columns)
        del ev
        frame = feat.join_customers(frame, prof, ev_feat)
        del prof, ev_feat  # the joined frame holds their columns
        frame = _join_extra(frame, [x for x in (extra, ev_extra) if x is not None])
        st.advance(frame.height)
    return PartFeatures(
        frame=frame,
        as_of=as_of_date,
        orders=order_report,
        customers=cust_report,
        events=ev_report,
        sources=sources,
        rejected=rejected,
        max_used_day=max_used_day,
    )


def _join_extra(frame: pl.DataFrame, extras: Sequence[Any]) -> pl.DataFrame:
    for agg, fills in extras:
        frame = frame.join(agg, on="customer_id", how="left")
        frame = frame.with_columns(
            pl.col(n).fill_null(v) for n, v in fills.items() if v is not None
        )
    return frame


def score(
    orders: Any,
    *,
    customers: Any = None,
    events: Any = None,
    as_of: dt.date | dt.datetime | str | None = None,
    bins: int | None = None,
    method: str | None = None,
    thresholds: Mapping[str, Sequence[float]] | Sequence[str] | None = None,
    columns: Columns = None,
    **options: Any,
) -> pl.DataFrame:
    """Score every customer: features, R/F/M scores, RFM cell, score and group.

    Parameters
    ----------
    orders
        Order history: a path (Parquet file/folder/glob, CSV, Arrow IPC) or a Polars, pandas or
        Arrow frame. Needs ``customer_id``, ``order_ts`` and ``amount`` (or ``quantity`` and
        ``unit_price``); see ``columns``.
    customers, events
        Optional profiles (every column carried through; customers without orders become
        prospects) and engagement events (``customer_id``, ``event_ts``, ``event``).
    as_of
        Scoring date; default: the date of the latest order row. Later rows are left out.
    bins
        Number of score levels ``k``, 2 to 10 (default 5; with ``edges_in``, the saved edges'
        bins, and a different ``bins`` is an error).
    method
        ``"quantile"`` (default) or ``"thresholds"`` (with ``edges_in``: the saved method).
    thresholds
        For ``method="thresholds"``: ``{"r": [30, 90, 180, 365], "f": [...], "m": [...]}`` (each
        ``bins - 1`` increasing cut points; r in days) or CLI-style ``["r=30,90,180,365", ...]``.
    columns
        Column mapping ``{canonical: yours}``, e.g. ``{"order_ts": "OrderDate"}``.
    **options
        ``windows`` (trailing windows in days, default 30, 90, 365), ``strict``, ``rejects``
        (path for left-out rows), ``edges_in``/``edges_out`` (JSON), ``scorer`` (a fitted
        :class:`~fastseg.scoring.RFMScorer`), ``customer_columns`` and ``event_columns`` (the
        profiles' and the events' mappings, like ``columns``: ``{"email_opt_in": "OptIn"}``),
        ``reader`` (None: chosen by the source; ``"arrow"`` or ``"polars"`` forces one of the
        two readers of :mod:`fastseg.sources`, for tests and comparisons), ``tz`` (an IANA time
        zone such as ``"Europe/Berlin"``: zone-aware timestamps are cut into days in that zone,
        naive ones are taken as local already; see docs/input.md, "Time zones"),
        ``memory_limit`` (``"1500MB"``, ``"4GiB"`` or bytes; default 75% of the memory
        available; ``False``: none) and ``tmp_dir``: past the limit the customers are scored in
        buckets on disk under ``tmp_dir``, with the same scores (docs/performance.md, "Larger
        than memory"); the returned frame then holds every bucket's rows, bucket by bucket.
        ``state`` (a folder) and ``keep_days``: a daily refresh (docs/refresh.md) — ``orders``
        are the new orders, added to the state the folder keeps (built from them when new);
        the scores equal one run over every input applied so far. ``orders=None`` with
        ``state`` and a later ``as_of``: no new orders, the state ages.

    Returns
    -------
    polars.DataFrame
        One row per customer, sorted by ``customer_id``.

    Examples
    --------
    >>> import fastseg, polars as pl, datetime as dt
    >>> orders = pl.DataFrame({"customer_id": [1, 1, 2], "order_ts": [dt.date(2026, 1, d) for d in (1, 5, 3)],
    ...                        "amount": [10.0, 20.0, 5.0]})
    >>> fastseg.score(orders).select("customer_id", "recency_days", "frequency", "rfm_cell").rows()
    [(1, 0, 2, '333'), (2, 2, 1, '111')]
    """
    return score_job(
        orders,
        customers=customers,
        events=events,
        as_of=as_of,
        bins=bins,
        method=method,
        thresholds=thresholds,
        columns=columns,
        **options,
    ).scores


# ------------------------------------------------------------------------------------ segments


def load_rules(rules: Any = None, *, builtin: bool = True) -> Catalog:
    """The catalog to run: the built-in one and/or the user's (a TOML path, TOML text or a
    :class:`~fastseg.rules.catalog.Catalog`). User segments replace built-ins of the same name.

    Rules are checked for syntax, references and cycles here, before any data is read.
    """
    from fastseg.errors import RuleError
    from fastseg.rules.catalog import Catalog, builtin_catalog, load_catalog
    from fastseg.rules.compile import catalog_problems

    catalog = builtin_catalog() if builtin else Catalog()
    if rules is not None:
        user = rules if isinstance(rules, Catalog) else load_catalog(rules)
        catalog = catalog.merge(user) if builtin else user
    if not len(catalog):
        msg = "no segments to evaluate: give rules (a TOML catalog) or keep the built-in catalog"
        raise RuleError(msg)
    problems = catalog_problems(catalog)
    if problems:
        where = f"{path}: " if (path := _rules_path(rules)) is not None else ""
        raise RuleError(where + _joined(problems, limit=5))
    return catalog


def segment(
    scores: Any,
    rules: Any = None,
    *,
    builtin: bool = True,
    as_of: dt.date | dt.datetime | str | None = None,
    threads: int | None = None,
    out: str | Path | None = None,
    layout: str = "long",
    clusters: Any = None,
    progress: Reporter | None = None,
) -> SegmentResult:
    """Evaluate segments over a scores frame (the output of :func:`score`).

    Parameters
    ----------
    scores
        A scores frame or a path to one (Parquet, CSV, Arrow IPC).
    rules
        A segment catalog: TOML path or text, or a :class:`~fastseg.rules.catalog.Catalog`.
    builtin
        Include the built-in catalog (user segments of the same name replace built-ins).
        Built-in segments whose fields the scores lack are skipped (see ``result.skipped``).
    as_of
        Date that relative dates in rules (``-30d``, ``today``) count from. Default: the latest
        ``last_order_date`` in the scores.
    threads
        Numba threads for the bitset kernels (default: all).
    out
        Write the membership to this file (atomically; never onto the scores file or the rules).
    layout
        With ``out``: ``"long"`` (``customer_id``, ``segment``), ``"wide"`` (one boolean column
        per segment) or ``"bitset"`` (``.npz``, see :meth:`SegmentResult.save_bitsets`).
    clusters
        The clusters of these customers (the file ``fastseg cluster --out`` wrote, or its frame):
        ``cluster`` and ``cluster_label`` are joined to the scores on ``customer_id``, so rules
        can use them (``cluster_label = 'recent · frequent · high spend'``, ``cluster = 0``).
        Every customer of the scores must be in it.
    progress
        A :class:`fastseg.progress.Reporter` told of the stages (``read``, ``segments``,
        ``write``) as they run; None: silent.

    Returns
    -------
    SegmentResult
        ``summary()``, ``members(name)``, ``overlaps()``, ``to_long()``, ``to_wide()``,
        ``groups()``, ``to_bitsets()``.

    Notes
    -----
    Windowed aggregates over raw orders (``orders(since: -90d, channel: 'app')``) need the order
    rows: use :func:`run`. On a scores frame, only those already present as columns
    (``orders_90d``) are available; segments needing others are skipped (built-in) or rejected.
    """

    if layout not in LAYOUTS:
        msg = f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}"
        raise ParameterError(msg)
    catalog = load_rules(rules, builtin=builtin)
    watch = _watch(None, progress)
    with _output_set(scores, _rules_path(rules), clusters) as outs:
        target = outs.add_file(out, "--out") if out is not None else None
        _kernels_stage(watch)
        seg = _segment(scores, catalog, as_of, threads, watch, clusters)
        if target is not None:
            with watch.stage("write"):
                if layout == "bitset":
                    outs.write_with(target, seg.write_bitsets)
                else:
                    outs.write_frame(seg.to_long() if layout == "long" else seg.to_wide(), target)
                outs.commit()
    return seg


#: membership layouts :func:`segment` writes
LAYOUTS = ("long", "wide", "bitset")


def _segment(
    scores: Any,
    catalog: Catalog,
    as_of: Any,
    threads: int | None,
    watch: Stopwatch,
    clusters: Any = None,
) -> SegmentResult:
    from fastseg.io import scan_source
    from fastseg.orders import collect
    from fastseg.rules.compile import compile_catalog
    from fastseg.segmenting import evaluate

    if isinstance(scores, pl.DataFrame):
        frame = scores
    else:
        with watch.stage("read", unit="customers") as st:
            src = scan_source(scores, what="scores", infer_types=True)
            frame = collect(src.frame, src.label, src)
            st.advance(frame.height)
    if "customer_id" not in frame.columns:
        from fastseg.errors import SchemaError

        where = "scores" if isinstance(scores, pl.DataFrame) else f"scores {src.label}"
        msg = f"{where}: no 'customer_id' column (found: {', '.join(frame.columns[:20])}); pass the output of `fastseg score`"
        raise SchemaError(msg)
    if clusters is not None:
        from fastseg.clustering import join_clusters

        frame = join_clusters(frame, clusters)
    day = _as_date(as_of)
    if day is None:
        last = frame["last_order_date"].max() if "last_order_date" in frame.columns else None
        day = last if isinstance(last, dt.date) else dt.date.today()
    with watch.stage("segments", unit="customers") as st:
        compiled = compile_catalog(catalog, frame.schema, day, missing="error", sources={})
        seg = evaluate(frame, compiled, threads=threads)
        st.advance(frame.height)
    return seg


#: documented canonical order rows (``_row_schema`` of a plan with every column) for checking
#: rules without an orders file; ``order_id`` may be text or a number (its values unchecked)
_DOCUMENTED_ORDER_ROWS: dict[str, pl.DataType] = {
    "customer_id": pl.Null(),
    "order_date": pl.Date(),
    "amount": pl.Float64(),
    "order_id": pl.Null(),
    "quantity": pl.Float64(),
    "unit_price": pl.Float64(),
    "category": pl.String(),
    "channel": pl.String(),
    "discount": pl.Float64(),
}
_DOCUMENTED_EVENT_ROWS: dict[str, pl.DataType] = {
    "customer_id": pl.Null(),
    "event_date": pl.Date(),
    "event": pl.String(),
}


@dataclass(frozen=True)
class _Expected:
    """What the rules will run on, known before any row is read."""

    schema: dict[str, pl.DataType]
    sources: dict[str, dict[str, pl.DataType] | None]
    event_types_open: bool  # an events file: any event type's features may exist
    given: frozenset[str]  # the inputs given: orders, customers, events
    predict: bool

    def extra_field(self, name: str) -> pl.DataType | None:
        """An event feature of an event type only the rows tell (with an events file)."""
        from fastseg.config import EVENT_WINDOWS

        if not self.event_types_open:
            return None
        m = re.fullmatch(r"(.+)_(\d+)d", name)
        if m and int(m.group(2)) in EVENT_WINDOWS and m.group(1) not in ("orders", "revenue"):
            return pl.Int64()
        return pl.Int64() if name.startswith("days_since_") and len(name) > 11 else None

    def advice(self, name: str) -> str:
        """Which input or option would bring an unknown field, source (``orders()``) or
        source column (``orders.channel``); "" when none would."""
        from fastseg.schema import PREDICTED_FIELDS

        if name.endswith("()"):
            return f"give --{name[:-2]} FILE"
        if "." in name and name.split(".", 1)[0] in ("orders", "events"):
            source = name.split(".", 1)[0]
            if source not in self.given:
                return f"give --{source} FILE to check against your {source}' columns"
            return ""
        if name in PREDICTED_FIELDS or re.fullmatch(r"expected_orders_\d+d", name):
            return (
                ""
                if self.predict
                else "predicted fields need fastseg run --predict (check with --predict)"
            )
        if re.fullmatch(r"days_since_.+|.+_\d+d", name) and "events" not in self.given:
            return "give --events FILE for the features of its event types"
        if "customers" not in self.given:
            return "give --customers FILE if it is a column of your profiles"
        return ""


def _rule_columns(catalog: Catalog, source: str) -> list[str]:
    """The source columns the catalog's aggregates read (filters, ``distinct``, ``quantity``):
    the order plan keeps them, as the run's does (:func:`_score`)."""
    from fastseg.rules.compile import required_aggregates

    cols = {
        c for spec in required_aggregates(catalog) if spec.source == source for c in spec.columns
    }
    return sorted(cols)


def _expected(
    catalog: Catalog,
    orders: Any,
    options: Mapping[str, Any],
    *,
    predict: Any,
    documented: bool,
) -> _Expected:
    """The scores frame and raw rows the rules will see, from the inputs' schemas (Parquet
    footers, CSV headers: no row is read). An input not given is absent (``documented=False``:
    as the run will be) or its documented columns (``True``: checking rules without data)."""
    from fastseg.features import check_windows
    from fastseg.orders import customer_names, plan_customers, plan_events, plan_orders
    from fastseg.pipeline import _row_schema
    from fastseg.rules.compile import scores_schema

    customers, events = options.get("customers"), options.get("events")
    given = frozenset(
        n
        for n, v in (("orders", orders), ("customers", customers), ("events", events))
        if v is not None
    )
    sources: dict[str, dict[str, pl.DataType] | None] = {}
    if orders is not None:
        plan = plan_orders(
            orders, columns=options.get("columns"), extra_columns=_rule_columns(catalog, "orders")
        )
        sources["orders"] = dict(_row_schema(plan))
        category, discount = "category" in plan.columns, "discount" in plan.columns
    else:
        sources["orders"] = dict(_DOCUMENTED_ORDER_ROWS) if documented else None
        category = discount = True
    profile = customers is None and documented
    schema = scores_schema(
        category=category,
        discount=discount,
        profile=profile,
        events=events is None and documented,
        predictions=False,
    )
    for name in [n for n in schema if re.fullmatch(r"(orders|revenue)_\d+d", n)]:
        del schema[name]
    for w in check_windows(options.get("windows", (30, 90, 365))):
        schema[f"orders_{w}d"], schema[f"revenue_{w}d"] = pl.Int64(), pl.Float64()
    if customers is not None:
        src, resolved, found = plan_customers(customers, options.get("customer_columns"))
        documented_types = scores_schema()
        for name, col in customer_names(resolved, found).items():
            dtype = found[col]
            if src.kind == "csv" and dtype == pl.String and name in documented_types:
                dtype = documented_types[name]  # text columns are typed on reading
            schema.setdefault(name, dtype)
    if events is not None:
        src, resolved, _ = plan_events(events, options.get("event_columns"))
        found = src.frame.collect_schema()
        rows: dict[str, pl.DataType] = dict(_DOCUMENTED_EVENT_ROWS)
        used = set(resolved.values())
        rows.update({c: d for c, d in found.items() if c not in used and c not in rows})
        sources["events"] = rows
    else:
        sources["events"] = dict(_DOCUMENTED_EVENT_ROWS) if documented else None
    if predict:
        from fastseg.predicting import prediction_schema

        horizon = predict.get("horizon", 365) if isinstance(predict, Mapping) else 365
        schema.update(prediction_schema(horizon))
    return _Expected(schema, sources, events is not None, given, bool(predict))


def _problems(catalog: Catalog, expected: _Expected, segments: Any) -> list[Any]:
    from fastseg.rules.compile import catalog_problems

    return catalog_problems(
        catalog,
        expected.schema,
        sources=expected.sources,
        extra_field=expected.extra_field,
        advice=expected.advice,
        segments=segments,
    )


#: problems found before any row is read that stop a run: what the compiler would reject
#: after reading (types of scores fields wait for the data: text profile columns are typed then)
_EARLY_KINDS = ("field", "source", "column", "filter")


def _joined(problems: Sequence[Any], limit: int = 20) -> str:
    """Problems as one line, joined with '; ' (at most ``limit``)."""
    text = "; ".join(p.located() for p in problems[:limit])
    if len(problems) > limit:
        text += f"; and {len(problems) - limit} more (`fastseg segments check` lists all)"
    return text


def _check_fields_early(
    catalog: Catalog, orders: Any, options: Mapping[str, Any], *, predict: Any = False
) -> None:
    """Unknown fields, aggregates' unknown source columns and filter value types of the user's
    rules, found from the inputs' schemas before any row is read; all in one error.

    The scores columns are predicted from the order columns present, the windows, and the
    profile file's columns; event features depend on the event types in the data, so with an
    events file any ``*_Nd`` / ``days_since_*`` name is let through (the compiler checks it
    after reading). Type errors of scores fields are left to the compiler.
    """
    from fastseg.errors import RuleError

    user = [s.name for s in catalog.segments if not getattr(s, "builtin", False)]
    expected = _expected(catalog, orders, options, predict=predict, documented=False)
    problems = [p for p in _problems(catalog, expected, user) if p.kind in _EARLY_KINDS]
    if problems:
        raise RuleError(_joined(problems))


@dataclass(frozen=True)
class RulesCheck:
    """What :func:`check_rules` found.

    Attributes
    ----------
    path : str
        The catalog checked.
    problems : list of Problem
        Every problem (:class:`fastseg.rules.compile.Problem`): the catalog's own (names,
        keys; kind ``catalog``), then the segments' in file order.
    segments, groups : int
        How many the file defines (valid or not).
    toml_lines : dict
        The line in the file of each problem's place (by index into ``problems``), when its
        rule is found in the file.
    """

    path: str
    problems: list[Any]
    segments: int
    groups: int
    toml_lines: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No problem."""
        return not self.problems


def check_rules(
    rules: str | Path,
    *,
    builtin: bool = True,
    orders: Any = None,
    customers: Any = None,
    events: Any = None,
    columns: Columns = None,
    customer_columns: Columns = None,
    event_columns: Columns = None,
    windows: Sequence[int] = (30, 90, 365),
    predict: bool = False,
) -> RulesCheck:
    """Check a catalog file without reading any row: every problem, with its place.

    Fields are checked against what fastseg produces (features for ``windows``, scores,
    predicted fields with ``predict``, event features) and, for the inputs given, their
    schemas (Parquet footers, CSV headers): profile fields come from ``customers``,
    aggregates' filters are checked against the columns of ``orders`` and ``events`` and
    their types. An input not given stands for its documented columns; a profile field that is
    not documented is then unknown (give ``customers``).

    Examples
    --------
    >>> check_rules("my_segments.toml").ok  # doctest: +SKIP
    True
    """
    import tomllib

    from fastseg.io import read_text
    from fastseg.rules.catalog import builtin_catalog, load_catalog
    from fastseg.rules.compile import Problem

    _check_mappings(customers, customer_columns, events, event_columns)
    errors: list[str] = []
    text = read_text(rules, "catalog file", missing_hint="check the path")
    user = load_catalog(rules, errors=errors)  # raises only for invalid TOML
    data = tomllib.loads(text)
    n_seg, n_grp = len(data.get("segment", []) or []), len(data.get("group", []) or [])
    catalog = builtin_catalog().merge(user) if builtin else user
    options = {
        "customers": customers,
        "events": events,
        "columns": columns,
        "customer_columns": customer_columns,
        "event_columns": event_columns,
        "windows": windows,
    }
    expected = _expected(catalog, orders, options, predict=predict, documented=True)
    mine = [s.name for s in user.segments] + [g.name for g in user.groups]
    found = _problems(catalog, expected, mine)
    origin = str(Path(rules))
    loaded = [
        Problem(e[len(origin) + 2 :] if e.startswith(origin + ": ") else e, kind="catalog")
        for e in errors
    ]
    lines = _toml_lines(text, found)
    order = sorted(
        range(len(found)), key=lambda k: (lines.get(k, 0), found[k].line, found[k].column)
    )
    problems = loaded + [found[k] for k in order]
    toml_lines = {len(loaded) + j: lines[k] for j, k in enumerate(order) if k in lines}
    return RulesCheck(origin, problems, n_seg, n_grp, toml_lines)


def _toml_lines(text: str, problems: Sequence[Any]) -> dict[int, int]:
    """The file line of each problem's place: the line of its segment's ``rule`` key, plus the
    rule line when the rule is a multi-line string written as it reads."""
    import tomllib

    lines = text.splitlines()
    rule_at: dict[str, tuple[int, str]] = {}  # segment -> (line index of `rule =`, raw value)
    name: str | None = None
    rule: tuple[int, str] | None = None
    in_segment = False
    for i, line in enumerate([*lines, "["]):
        if line.strip().startswith("["):
            if in_segment and name is not None and rule is not None:
                rule_at.setdefault(name, rule)
            in_segment = line.strip().replace(" ", "") == "[[segment]]"
            name = rule = None
            continue
        m = re.match(r"\s*(name|rule)\s*=\s*(.*)$", line) if in_segment else None
        if m is None:
            continue
        if m.group(1) == "rule":
            rule = rule or (i, m.group(2))
            continue
        try:
            value = tomllib.loads(f"v = {m.group(2)}")["v"]
        except tomllib.TOMLDecodeError:
            continue
        name = value if isinstance(value, str) else None
    out: dict[int, int] = {}
    for k, p in enumerate(problems):
        seg = getattr(p, "segment", None)
        if seg is None or seg not in rule_at:
            continue
        index, raw = rule_at[seg]
        line = index + 1
        if p.line and raw.lstrip()[:3] in ('"""', "'''"):
            first_blank = raw.lstrip()[3:].strip() == ""  # a newline after the quotes is trimmed
            line += p.line - (0 if first_blank else 1)
        out[k] = line
    return out


def run_job(
    orders: Any,
    *,
    rules: Any = None,
    builtin: bool = True,
    out: str | Path | None = None,
    out_format: str | None = None,
    previous: Any = None,
    report: bool = False,
    predict: bool | Mapping[str, Any] = False,
    threads: int | None = None,
    stopwatch: Stopwatch | None = None,
    progress: Reporter | None = None,
    command: Sequence[str] | None = None,
    **score_options: Any,
) -> RunResult:
    """The main job: features, scores and segments in one go (see :func:`run`).

    The run folder ``out`` and any ``rejects``/``edges_out`` file are declared before any row is
    read, written to a staging area, and committed as one set only when everything succeeded.
    ``previous`` (a run folder) is opened before any row is read too. ``progress``: as for
    :func:`score_job`.
    """
    from fastseg.rules.compile import compile_catalog, required_aggregates
    from fastseg.runs import open_run
    from fastseg.segmenting import evaluate

    if out_format not in (None, "parquet", "csv"):
        msg = f"out_format: expected parquet or csv, got {out_format!r}"
        raise ParameterError(msg)
    if out_format is not None and out is None:
        msg = "out_format: give out (the run folder) too"
        raise ParameterError(msg)
    if report and out is None:
        msg = "report: give out (the run folder the report is written into) too"
        raise ParameterError(msg)
    from fastseg.schema import check_time_zone

    check_time_zone(score_options.get("tz"))
    watch = _watch(stopwatch, progress)
    prev = None
    if previous is not None and not isinstance(previous, RunResult):
        prev = open_run(previous, "--previous")
        prev.check()
    with watch.stage("rules", show=False):  # checks, before any row is read: not a long stage
        catalog = load_rules(rules, builtin=builtin)
        specs = required_aggregates(catalog)
        if rules is not None and orders is not None:
            _check_fields_early(catalog, orders, score_options, predict=predict)
    # the previous run is an input too, unless it is the folder this run replaces
    replaces = prev is not None and out is not None and _same_path(prev.path, out)
    reads = _output_set(
        orders,
        score_options.get("customers"),
        score_options.get("events"),
        score_options.get("edges_in"),
        _rules_path(rules),
        prev.path if prev is not None and not replaces else None,
    )
    limit = score_options.pop("memory_limit", None)
    tmp_dir = score_options.pop("tmp_dir", None)
    state = score_options.pop("state", None)
    keep_days = score_options.pop("keep_days", None)
    from fastseg import buckets as B

    if state is not None and limit not in (None, False):
        msg = (
            "--memory-limit: a run with --state keeps every customer in memory (its state is "
            "about 100 bytes a customer); leave --memory-limit out"
        )
        raise ParameterError(msg)
    if orders is None and state is None:
        msg = "orders: give the orders to score (None only with state: a new scoring date)"
        raise ParameterError(msg)

    if limit not in (None, False):
        B.budget(limit)  # a bad size is said first
    whole_needed = [
        what
        for what, given in (
            ("predict (--predict)", predict),
            ("compare with an earlier run (--previous)", previous),
            ("write the report (--report)", report),
        )
        if given
    ]
    if whole_needed and limit not in (None, False):
        msg = (
            f"--memory-limit: a run in buckets cannot {' or '.join(whole_needed)} yet: they "
            "need every customer in memory; leave --memory-limit out, or run fastseg diff / "
            "fastseg report on the run folder afterwards"
        )
        raise ParameterError(msg)
    bud = None if whole_needed or limit is False or state is not None else B.budget(limit)
    with reads as outs, contextlib.ExitStack() as stack:
        refresh = None
        if state is not None:  # locked until the outputs and the new state are committed
            refresh = stack.enter_context(_open_state(state, orders, keep_days))
        folder = None
        if out is not None:
            folder = outs.add_folder(out, "--out", reserved=(*RUN_FILES, "run.json"))
        spill = stack.enter_context(B.spill_folder(tmp_dir)) if bud is not None else None
        per_bucket = _BucketSegments(catalog, spill, threads) if spill is not None else None
        res = score_job(
            orders,
            aggregates=specs,
            stopwatch=watch,
            _outputs=outs,
            btyd=bool(predict),
            top_category=_uses_field(catalog, "top_category"),
            memory_limit=bud if bud is not None else False,
            _buckets=(spill, per_bucket) if per_bucket is not None else None,
            _refresh=refresh,
            **score_options,
        )
        fields = {f: getattr(res, f) for f in res.__dataclass_fields__}
        if res.buckets is not None:
            assert per_bucket is not None
            score_parts = per_bucket.parts["scores"]
            if folder is None:  # nothing written: the caller gets every bucket's scores
                fields["scores"] = pl.concat([pl.read_ipc(p) for p in score_parts.parts])
            else:
                fields["scores"] = pl.DataFrame(schema=score_parts.schema())
            result = RunResult(**fields, segments=per_bucket.merged, parts=per_bucket.parts)
            if result.segments is None:  # no customer at all cannot happen: rows were used
                raise DataError("no customer was scored")
        else:
            if predict:
                res.prediction = _add_predictions(res, predict, watch)
                fields = {f: getattr(res, f) for f in res.__dataclass_fields__}
            with watch.stage("rules", show=False):
                compiled = compile_catalog(
                    catalog, res.scores.schema, res.as_of, missing="error", sources=res.sources
                )
            with watch.stage("segments", unit="customers") as st:
                seg = evaluate(res.scores, compiled, threads=threads)
                st.advance(res.n_customers)
            result = RunResult(**fields, segments=seg)
        base = previous if isinstance(previous, RunResult) else prev
        if base is not None and folder is None:
            with watch.stage("diff"):
                result.changes = result.diff(base)
        if folder is not None:
            record = _run_record(
                orders, rules, score_options, command, threads=threads, builtin=builtin
            )
            if res.buckets is not None:
                record = {**record, "buckets": res.buckets.to_dict()}
            if res.state is not None:
                record = {**record, "state": res.state}
            staged = _stage_run(
                result,
                outs,
                folder,
                watch,
                out_format=out_format or "parquet",
                record=record,
                previous=base,
                with_report=report,
            )
            result.outputs = {**res.outputs, **staged}
        outs.commit()
        if refresh is not None:
            refresh.sd.remove_unlisted(refresh.finished_manifest())
    result.timings = watch.seconds
    return result


class _BucketSegments:
    """``run``'s work on each bucket of a bucketed run: its segments evaluated, its scores,
    memberships and groups written as parts, its summary and overlaps added up."""

    def __init__(self, catalog: Catalog, folder: Path, threads: int | None) -> None:
        from fastseg.bucketrun import TableParts

        self.catalog, self.threads = catalog, threads
        self.compiled: Any = None
        self.merged: Any = None
        self.parts = {n: TableParts(folder, n) for n in ("scores", "segments", "groups")}

    def __call__(self, scores: pl.DataFrame, whole: PartFeatures) -> None:
        from fastseg.bucketrun import MergedSegments
        from fastseg.rules.compile import compile_catalog
        from fastseg.segmenting import evaluate

        if self.compiled is None:
            self.compiled = compile_catalog(
                self.catalog, scores.schema, whole.as_of, missing="error", sources=whole.sources
            )
        seg = evaluate(scores, self.compiled, threads=self.threads)
        self.parts["scores"].add(scores)
        self.parts["segments"].add(seg.to_long())
        if seg.groups_spec:
            self.parts["groups"].add(seg.groups())
        if self.merged is None:
            self.merged = MergedSegments.first(seg)
        self.merged.add(seg)


def _check_mappings(
    customers: Any, customer_columns: Columns, events: Any, event_columns: Columns
) -> None:
    """A column mapping of an input not given is an error that says to give it."""
    for name, mapping, source in (
        ("customer_columns", customer_columns, customers),
        ("event_columns", event_columns, events),
    ):
        if mapping and source is None:
            msg = f"{name}: give {name.split('_')[0]}s too (the input it maps)"
            raise ParameterError(msg)


def _uses_field(catalog: Catalog, name: str) -> bool:
    """Whether a rule of the catalog reads the scores column ``name``."""
    from fastseg.rules.ast import Field, walk_terms
    from fastseg.rules.parse import parse_rule

    return any(
        isinstance(t, Field) and t.name == name
        for seg in catalog.segments
        for t in walk_terms(parse_rule(seg.rule))  # parsed already: rules with errors fail first
    )


def _add_predictions(res: ScoreResult, predict: Any, watch: Stopwatch) -> Any:
    """Fit the BTYD models on ``res.scores`` (or load ``params_in``) and add the predicted
    columns to it, so rules can use them (``run --predict``)."""
    from fastseg import predicting as P
    from fastseg.btyd import need_scipy

    need_scipy()
    opts = dict(predict) if isinstance(predict, Mapping) else {}
    unknown = set(opts) - {"unit", "horizon", "discount_rate", "params_in"}
    if unknown:
        msg = f"predict: unknown options {', '.join(sorted(unknown))} (unit, horizon, discount_rate, params_in)"
        raise ParameterError(msg)
    params = P.load_params(opts.pop("params_in")) if opts.get("params_in") else None
    opts.pop("params_in", None)
    with watch.stage("predict", unit="customers") as st:
        pred = P.predict_frame(res.scores, params=params, as_of=res.as_of, **opts)
        added = [c for c in pred.frame.columns if c not in res.scores.columns]
        res.scores = res.scores.hstack(pred.frame.select(added))
        st.advance(res.scores.height)
    return pred


def _same_path(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _run_record(
    orders: Any,
    rules: Any,
    options: Mapping[str, Any],
    command: Sequence[str] | None,
    **extra: Any,
) -> dict[str, Any]:
    """What run.json records about how the run was made: the command line, the rules file and
    its SHA-256, every input file with its size and modification time, the options."""
    import hashlib

    from fastseg.io import input_paths

    def files(role: str, source: Any) -> list[dict[str, Any]]:
        if source is None or not isinstance(source, str | Path | list | tuple):
            return [] if source is None else [{"role": role, "path": f"<{type(source).__name__}>"}]
        out = []
        for p in input_paths(source):
            try:
                if p.is_dir():  # a folder of parts: their count, total size, latest change
                    stats = [f.stat() for f in p.rglob("*") if f.is_file()]
                    size, latest = (
                        sum(st.st_size for st in stats),
                        max((st.st_mtime for st in stats), default=p.stat().st_mtime),
                    )
                else:
                    stats = []
                    st = p.stat()
                    size, latest = st.st_size, st.st_mtime
            except OSError:
                continue
            mtime = dt.datetime.fromtimestamp(latest, dt.UTC)
            entry = {
                "role": role,
                "path": str(p),
                "bytes": size,
                "modified": mtime.isoformat(timespec="seconds"),
            }
            if p.is_dir():
                entry["files"] = len(stats)
            out.append(entry)
        return out

    inputs = files("orders", orders)
    for role in ("customers", "events", "edges_in"):
        inputs += files(role, options.get(role))
    rules_doc = None
    path = _rules_path(rules)
    if path is not None:
        data = Path(path).read_bytes()
        rules_doc = {"path": str(path), "sha256": hashlib.sha256(data).hexdigest()}
    elif rules is not None:
        rules_doc = {"path": None, "given_as": type(rules).__name__}
    shown = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in options.items()
        if k in ("as_of", "bins", "method", "thresholds", "columns", "windows", "strict", "tz")
        and v is not None
    }
    return {
        "command": list(command) if command is not None else None,
        "rules": rules_doc,
        "builtin_rules": extra.get("builtin", True),
        "inputs": inputs,
        "options": shown,
    }


#: the files of a run folder (tables in Parquet, or CSV with ``out_format="csv"``), and with
#: ``previous`` the changes since that run; run.json is written last: it lists the others
RUN_TABLES = ("scores", "segments", "groups")
RUN_FILES = (
    *(f"{t}.{x}" for t in RUN_TABLES for x in ("parquet", "csv")),
    "summary.csv",
    "overlaps.csv",
    "membership.npz",
    "changes.parquet",
    "changes.csv",
    "transitions.csv",
    "diff.json",
    "report.html",
)


def _stage_run(
    result: RunResult,
    outs: OutputSet,
    folder: Path,
    watch: Stopwatch | None = None,
    *,
    out_format: str = "parquet",
    record: Mapping[str, Any] | None = None,
    previous: Any = None,
    with_report: bool = False,
) -> dict[str, Path]:
    """Write the run folder's files into the staging area of ``outs``; with ``previous`` (an
    opened run folder) the changes since it too; with ``with_report`` the HTML report. Stages:
    ``write`` (the tables; the diff inside it is shown apart as ``diff``), ``report``, and
    ``run.json`` last (added to ``write``)."""
    import json
    import uuid

    from fastseg import __version__
    from fastseg.runs import MEMBERSHIP_FILE, schema_record, write_membership

    watch = watch if watch is not None else Stopwatch()
    seg = result.segments
    assert seg is not None
    tab = "csv" if out_format == "csv" else "parquet"
    frames: dict[str, Any] = {
        "scores": (lambda: result.scores, tab),
        "segments": (getattr(seg, "to_long", None), tab),
        "summary": (lambda: _money_to_cents(seg.summary()), "csv"),
        "overlaps": (seg.overlaps, "csv"),
    }
    if seg.groups_spec:
        frames["groups"] = (getattr(seg, "groups", None), tab)
    paths: dict[str, Path] = {}
    schemas: dict[str, dict[str, str]] = {}
    small: dict[str, pl.DataFrame] = {}  # kept for the report
    diff_doc = ch = None
    with watch.stage("write"):
        for name, (make, fmt) in frames.items():
            tp = result.parts.get(name)
            if tp is not None and tp.parts:  # a bucketed run: the parts, joined
                schemas[name] = schema_record(pl.DataFrame(schema=tp.schema()))
                paths[name] = outs.write_with(
                    folder / f"{name}.{fmt}", lambda p, tp=tp, fmt=fmt: tp.write(p, fmt)
                )
                continue
            df = make()
            if name in RUN_TABLES:
                schemas[name] = schema_record(df)
            paths[name] = outs.write_frame(df, folder / f"{name}.{fmt}", fmt)
            if name in ("summary", "overlaps"):
                small[name] = df
            del df
        paths["membership"] = outs.write_with(
            folder / MEMBERSHIP_FILE,
            lambda p: write_membership(p, seg.names, seg.bitsets, seg.n_customers),
        )
        if previous is not None:
            from fastseg import changes as D

            ch = D.diff_results(previous, result)
            paths.update(D.stage_changes(ch, outs, folder))
            diff_doc = ch.to_dict()
            result.changes = ch

    def timings() -> dict[str, float]:
        t = dict(watch.seconds)
        if diff_doc is not None:  # inside the write, shown apart
            t["diff"] = diff_doc["seconds"]
            t["write"] = t.get("write", 0.0) - diff_doc["seconds"]
        return {k: round(v, 4) for k, v in t.items()}

    def sizes() -> dict[str, int]:
        return {
            str(p.relative_to(folder)): outs.path(p).stat().st_size
            for p in outs.files()
            if p.is_relative_to(folder)
        }

    ids = result.scores["customer_id"]
    report = {
        "fastseg": __version__,
        "run_id": uuid.uuid4().hex,
        "as_of": str(result.as_of),
        "customers": result.n_customers,
        "scored": result.n_scored,
        "customer_id_dtype": "Int64" if ids.dtype.is_integer() else "String",
        "table_format": tab,
        "schemas": schemas,
        "segments": len(seg.names),
        "skipped_segments": [{"segment": n, "reason": r} for n, r in seg.skipped],
        **(record or {}),
        "orders": result.orders.to_dict(),
        "customers_file": result.customers.to_dict() if result.customers else None,
        "events_file": result.events.to_dict() if result.events else None,
        "edges": result.scorer.to_dict(),
        "previous": diff_doc,
        "files": sizes(),
        "outputs_outside": sorted(str(p) for p in outs.files() if not p.is_relative_to(folder)),
        "timings_seconds": timings(),
    }
    if with_report:
        from fastseg import reporting

        with watch.stage("report"):
            data = reporting.collect(
                result.scores,
                small["summary"],
                small["overlaps"],
                report,
                changes=ch.summary if ch is not None else None,
                transitions=ch.transitions if ch is not None else None,
                changes_doc=diff_doc,
            )
            paths["report"] = outs.write_text(
                folder / reporting.REPORT_FILE, reporting.build_html(data)
            )
    with watch.stage("write", show=False):  # run.json, last: it lists the others
        report["files"] = sizes()
        report["timings_seconds"] = timings()
        text = json.dumps(report, indent=2, default=str) + "\n"
        paths["run"] = outs.write_text(folder / "run.json", text)
    return paths


def diff(
    previous: str | Path | RunResult,
    current: str | Path | RunResult,
    *,
    out: str | Path | None = None,
    progress: Reporter | None = None,
) -> Changes:
    """What changed between two runs: who joined and left every segment, and RFM transitions.

    Parameters
    ----------
    previous, current
        Run folders written by ``fastseg run --out`` (or :class:`RunResult` objects).
    out
        Folder to write ``changes.parquet``, ``changes.csv``, ``transitions.csv`` and
        ``diff.json`` into, as one set; None: nothing written.
    progress
        A :class:`fastseg.progress.Reporter` told of the stages (``diff``, ``write``); None:
        silent.

    Returns
    -------
    Changes
        ``changes`` (``customer_id``, ``segment``, ``change``), ``summary`` (per segment:
        ``before``, ``after``, ``joined``, ``left``, ``stayed``), ``transitions`` (RFM group
        before x after), ``notes`` (:class:`fastseg.changes.Changes`).
    """
    from fastseg.changes import diff_runs

    return diff_runs(previous, current, out, progress=progress)


def report(
    run: str | Path,
    *,
    previous: str | Path | None = None,
    out: str | Path | None = None,
    progress: Reporter | None = None,
) -> ReportResult:
    """Write the HTML report of a run folder: one self-contained page with charts.

    Parameters
    ----------
    run
        A run folder written by ``fastseg run --out``.
    previous
        An earlier run folder: the page shows who joined and left each segment and the RFM
        transitions since it. Without it, the changes the run folder holds (``fastseg run
        --previous``) are shown, if any.
    out
        The HTML file to write, atomically (default: ``report.html`` in the run folder; no other
        file of the run folder may be written).

    Returns
    -------
    ReportResult
        ``path``, ``bytes``, ``charts`` (the number of charts on the page) and ``seconds``.

    progress
        A :class:`fastseg.progress.Reporter` told of the stages (``read``: the aggregates and,
        with ``previous``, the diff; ``report``: the charts and the page); None: silent.

    The page opens offline (the chart library is embedded) and is built from aggregates, so its
    size does not grow with the number of customers (see docs/report.md).
    """
    from fastseg import reporting
    from fastseg.runs import open_run

    t0 = time.perf_counter()
    cur = open_run(run, "run folder")
    cur.check()
    prev = None
    if previous is not None:
        prev = open_run(previous, "--previous")
        prev.check()
        if _same_path(prev.path, cur.path):
            msg = (
                f"--previous {previous}: that is the run folder itself; give an earlier run folder"
            )
            raise ParameterError(msg)
    target = Path(cur.path / reporting.REPORT_FILE if out is None else out)
    inside = _same_path(target.parent, cur.path)
    if inside and target.name != reporting.REPORT_FILE:
        msg = (
            f"--out {target}: inside the run folder only {reporting.REPORT_FILE} may be written "
            f"(the other files are the run's); write {cur.path / reporting.REPORT_FILE} or a file "
            "outside the folder"
        )
        raise ParameterError(msg)
    if target.suffix.lower() not in (".html", ".htm"):
        msg = (
            f"--out {target}: the report is an HTML page; give a file name ending in .html "
            f"(e.g. {target.with_suffix('.html').name})"
        )
        raise ParameterError(msg)
    # report.html in its own run folder: the files read are the inputs, not the whole folder
    reads = [cur.path / n for n in reporting.files_read(cur)] if inside else [cur.path]
    watch = _watch(None, progress)
    with _output_set(*reads, prev.path if prev is not None else None) as outs:
        target = outs.add_file(target, "--out")
        with watch.stage("read"):
            data = reporting.collect_folder(cur, prev)
        with watch.stage("report"):
            specs = reporting.chart_specs(data)
            page = reporting.render(data, specs)
            outs.write_text(target, page)
        outs.commit()
    return ReportResult(
        path=target,
        bytes=len(page.encode()),
        charts=len(specs),
        seconds=time.perf_counter() - t0,
    )


@dataclass
class ReportResult:
    """What :func:`report` wrote: ``path``, its size in ``bytes``, the number of ``charts`` on
    the page and the ``seconds`` it took."""

    path: Path
    bytes: int
    charts: int
    seconds: float


def _money_to_cents(summary: pl.DataFrame) -> pl.DataFrame:
    """summary.csv for people: money to cents, means to two decimals, shares to six."""
    return summary.with_columns(
        pl.col("revenue", "aov").round(2),
        pl.col("mean_recency_days", "mean_frequency").round(2),
        pl.col("share_customers", "share_revenue").round(6),
    )


def predict(
    orders: Any,
    *,
    as_of: dt.date | dt.datetime | str | None = None,
    unit: str = "weeks",
    horizon: int = 365,
    discount_rate: float | None = None,
    params_in: str | Path | None = None,
    params_out: str | Path | None = None,
    holdout_from: dt.date | dt.datetime | str | None = None,
    out: str | Path | None = None,
    out_format: str | None = None,
    progress: Reporter | None = None,
    **score_options: Any,
) -> Any:
    """What each customer will do next: BG/NBD and Gamma-Gamma fitted to the order history.

    Parameters
    ----------
    orders
        Order history (path or frame), as for :func:`score` (``columns``, ``strict`` and the
        other reading options pass through ``score_options``).
    as_of
        Scoring date (default: the latest order's day).
    unit
        ``"weeks"`` (default) or ``"days"``: the time unit of the fit (``alpha`` is in it).
    horizon
        Days of the ``clv`` and of an ``expected_orders_<horizon>d`` column (30, 90 and 365
        are always there).
    discount_rate
        Annual rate discounting ``clv`` (0.1 = 10%), in 30-day steps; None: undiscounted.
    params_in, params_out
        Score against saved parameters (no fit), or save the fitted ones (JSON, format
        ``fastseg-btyd-1``).
    holdout_from
        Fit on the orders before this day, then compare predicted with actual repeat purchase
        days from it to ``as_of``: :attr:`Prediction.holdout` per calibration frequency and
        in total. The predictions are then those of that fit, at ``as_of``.
    out, out_format
        Write the predictions (Parquet or CSV by suffix); with ``params_out``, one set.

    Returns
    -------
    fastseg.predicting.Prediction
        ``frame`` (``customer_id``, the BTYD summary, ``p_alive``, ``expected_orders_30d`` ...,
        ``expected_order_value``, ``clv``, ``churn_risk``), the models, ``params``, and
        ``holdout`` (table, totals) with ``holdout_from``. See docs/predict.md.
    """
    from fastseg import predicting as P
    from fastseg.btyd import need_scipy
    from fastseg.outputs import frame_writer

    need_scipy()
    written = [k for k in ("out", "rejects", "edges_out") if score_options.get(k) is not None]
    if written:
        msg = f"predict writes its predictions and parameters only, not {', '.join(written)}"
        raise ParameterError(msg)
    if params_in is not None and params_out is not None:
        msg = "give params_in (score against saved parameters) or params_out (save a fit), not both"
        raise ParameterError(msg)
    if params_in is not None and holdout_from is not None:
        msg = "holdout_from checks a fit: it cannot be combined with params_in"
        raise ParameterError(msg)
    if out_format is not None and out is None:
        msg = "out_format: give out too"
        raise ParameterError(msg)
    frame_writer(pl.DataFrame(), out or "x.parquet", out_format)  # checks the format first
    P._check_options(unit, horizon, discount_rate)
    params = P.load_params(params_in) if params_in is not None else None
    watch = _watch(None, progress)
    with _output_set(orders, params_in, score_options.get("edges_in")) as outs:
        targets = {
            name: outs.add_file(path, option)
            for name, path, option in (
                ("out", out, "--out"),
                ("params", params_out, "--params-out"),
            )
            if path is not None
        }
        holdout = None
        if holdout_from is not None:
            cut = _as_date(holdout_from)
            assert cut is not None
            try:
                calib = score_job(
                    orders,
                    as_of=cut - dt.timedelta(days=1),
                    btyd=True,
                    stopwatch=watch,
                    **score_options,
                )
            except DataError as exc:
                if "no usable order" not in str(exc):
                    raise
                msg = f"--holdout-from {cut}: no usable order before that day, nothing to fit on ({exc})"
                raise DataError(msg) from None
            with watch.stage("fit", unit="customers") as st:
                bg, gg = P.fit(calib.scores, unit=unit)
                st.advance(calib.scores.height)
            params = P.params_doc(bg, gg, unit, calib.as_of)
        res = score_job(orders, as_of=as_of, btyd=True, stopwatch=watch, **score_options)
        if holdout_from is not None:
            end = res.as_of
            if end < cut:
                msg = f"holdout_from {cut} is after the scoring date {end}: nothing is held out"
                raise ParameterError(msg)
            total = res.scores.select("customer_id", total=pl.col("btyd_frequency") + 1)
            before = calib.scores.select("customer_id", before=pl.col("btyd_frequency") + 1)
            actual = before.join(total, on="customer_id", how="left").select(
                "customer_id", actual=(pl.col("total") - pl.col("before")).fill_null(0)
            )
            table, totals = P.holdout_table(calib.scores, bg, actual, (end - cut).days + 1)
            holdout = {"from": str(cut), "to": str(end), "table": table, "totals": totals}
        with watch.stage("predict", unit="customers") as st:
            pred = P.predict_frame(
                res.scores,
                unit=unit,
                horizon=horizon,
                discount_rate=discount_rate,
                params=params,
                as_of=res.as_of,
            )
            st.advance(pred.frame.height)
        if holdout is not None:
            pred.fitted = True
            pred.params["holdout"] = {
                "from": holdout["from"],
                "to": holdout["to"],
                "totals": holdout["totals"],
                "by_frequency": holdout["table"].to_dicts(),
            }
        pred.holdout = holdout
        pred.score = res
        with watch.stage("write") if targets else contextlib.nullcontext():
            if "out" in targets:
                outs.write_frame(pred.frame, targets["out"], out_format)
            if "params" in targets:
                import json

                outs.write_text(targets["params"], json.dumps(pred.params, indent=2) + "\n")
            outs.commit()
    pred.outputs = targets
    pred.timings = watch.seconds
    return pred


def export(
    run_dir: str | Path,
    segments: str | Sequence[str],
    *,
    out: str | Path,
    customers: Any = None,
    customer_columns: Columns = None,
    columns: str | Sequence[str] | None = None,
    hash: str | None = None,
    changes: bool = False,
    out_format: str = "csv",
    default_country: str | None = None,
    phone_country: str | None = None,
    progress: Reporter | None = None,
) -> ExportResult:
    """Write who is in segments of a run, one file per segment, for an email tool or ad platform.

    Parameters
    ----------
    run_dir
        A run folder written by ``fastseg run --out`` (or :func:`run` with ``out``).
    segments
        Segment name(s) of that run; each gets ``out/NAME.csv`` (or ``.parquet``).
    out
        Folder for the files and ``manifest.json``, replaced as one set.
    customers
        Customer profiles (path or frame) to take columns from that the run's scores do not hold
        (scores carry the profile columns of a run made with ``customers``), and the columns of
        customers gone from the run for the ``.removed`` files.
    customer_columns
        Map profile columns: ``{"email": "EmailAddress"}`` or ``["email=EmailAddress"]``.
    columns
        Columns after ``customer_id`` (``"email,phone,first_name"`` or a list); default: the
        identifier columns there are (``email``, ``phone``, ``*_email``, ``*_phone``).
    hash
        ``"sha256"``: identifiers replaced by the lowercase hex SHA-256 of their normalized value.
    changes
        Also ``NAME.added.csv`` and ``NAME.removed.csv``: who joined and who left the segment
        since the previous run (the run must have been made with ``previous``).
    out_format
        ``"csv"`` (default) or ``"parquet"``.
    default_country
        ISO region (``"US"``) of phone numbers written without a country code.
    phone_country
        A column (of the scores or the profiles) holding each customer's ISO country
        (``"GB"``): a number without a country code is read in its row's region, and in
        ``default_country`` where that is empty or not a region.
    progress
        A :class:`fastseg.progress.Reporter` told of the stages (``check``, ``read``,
        ``normalize``, ``write``); None: silent.

    Returns
    -------
    ExportResult
        The files with their rows and unusable identifiers per reason, and notes
        (:class:`fastseg.exporting.ExportResult`). Identifiers are normalized as Google Customer
        Match and Meta Custom Audiences document it (:mod:`fastseg.exporting`); a row whose
        identifier is missing or invalid is written with a null there and counted.

    Examples
    --------
    >>> import fastseg  # doctest: +SKIP
    >>> res = fastseg.export("results/", ["vip", "at_risk"], out="audiences/", hash="sha256")  # doctest: +SKIP
    >>> res.summary()  # doctest: +SKIP
    """
    from fastseg.exporting import export_run

    return export_run(
        run_dir,
        segments,
        out=out,
        customers=customers,
        customer_columns=customer_columns,
        columns=columns,
        hash=hash,
        changes=changes,
        out_format=out_format,
        default_country=default_country,
        phone_country=phone_country,
        progress=progress,
    )


def cluster(
    scores: Any,
    *,
    k: int | str | None = None,
    features: str | Sequence[str] | None = None,
    seed: int | None = None,
    model_in: str | Path | None = None,
    model_out: str | Path | None = None,
    out: str | Path | None = None,
    progress: Reporter | None = None,
) -> ClusterResult:
    """Behavioural clusters: k-means over standardized features, with a readable label and a
    profile per cluster, and a model that puts tomorrow's customers in the same clusters.

    Needs scikit-learn (``pip install 'fastseg[ml]'``) to fit; a saved model assigns without it.

    Parameters
    ----------
    scores
        A scores frame, a scores file written by ``fastseg score`` (Parquet, CSV, Arrow IPC) or a
        run folder (its ``scores`` table).
    k
        Number of clusters, 2 to 100 (default 5), or ``"auto"``: the k from 2 to 8 with the best
        silhouette score on a seeded sample of 10,000 customers. With ``model_in``: None or the
        model's k.
    features
        Numeric columns to cluster on (a list or ``"a,b,c"``); default ``recency_days``,
        ``frequency``, ``monetary``. With ``model_in``: None or the model's features.
    seed
        Seed of k-means and of the silhouette sample (default 0): the same scores and seed give
        the same clusters, numbered the same.
    model_in
        A model written by ``model_out``: assign with its transform, scaling and centroids
        instead of fitting (no scikit-learn needed).
    model_out
        Write the fitted model (JSON) there, committed with ``out``.
    out
        Write ``customer_id``, ``cluster``, ``cluster_label`` (Parquet or CSV by the suffix),
        atomically; never onto an input.
    progress
        A :class:`fastseg.progress.Reporter` told of the stages (``read``, ``cluster``,
        ``write``); None: silent.

    Returns
    -------
    ClusterResult
        ``clusters``, ``profile`` (per cluster: ``customers``, ``share``, ``revenue``,
        ``revenue_share``, ``mean_<feature>``), ``model`` (a
        :class:`~fastseg.clustering.ClusterModel`), ``silhouette`` (per k, with ``"auto"``).

    Notes
    -----
    Customers without an order get no cluster (null) and the label ``prospects``; customers with
    an order but a missing chosen feature get none and the label ``missing features``. Both are
    counted in the profile. How features are transformed, and clusters ordered and labelled:
    :mod:`fastseg.clustering` and docs/clusters.md.

    Examples
    --------
    >>> import fastseg  # doctest: +SKIP
    >>> res = fastseg.cluster("scores.parquet", k="auto", model_out="model.json", out="clusters.parquet")  # doctest: +SKIP
    >>> res.profile  # doctest: +SKIP
    """
    from fastseg.clustering import cluster_scores

    return cluster_scores(
        scores,
        k=k,
        features=features,
        seed=seed,
        model_in=model_in,
        model_out=model_out,
        out=out,
        progress=progress,
    )


def write_outputs(result: RunResult, out: str | Path) -> dict[str, Path]:
    """Write ``scores.parquet``, ``segments.parquet`` (long: customer_id, segment),
    ``summary.csv``, ``overlaps.csv``, ``groups.parquet`` (when the catalog has groups) and
    ``run.json`` into the folder ``out``, committed as one set (the folder holds the complete
    previous set or the complete new one at every moment)."""
    from fastseg.outputs import OutputSet

    with OutputSet() as outs:
        folder = outs.add_folder(out, "out")
        paths = _stage_run(result, outs, folder)
        outs.commit()
    return paths


def run(
    orders: Any,
    *,
    rules: Any = None,
    builtin: bool = True,
    out: str | Path | None = None,
    **options: Any,
) -> RunResult:
    """Features, RFM scores and segments in one go — the main job.

    Parameters
    ----------
    orders
        Order history (path or frame), as for :func:`score`.
    rules
        User segment catalog (TOML path or text, or a Catalog), added to the built-in one.
    builtin
        Include the built-in catalog (default True).
    out
        Folder to write ``scores.parquet``, ``segments.parquet``, ``summary.csv``,
        ``overlaps.csv``, ``groups.parquet``, ``membership.npz`` and ``run.json`` into, as one
        set; None: no files.
    out_format
        ``"parquet"`` (default) or ``"csv"``: the format of the scores, segments and groups
        tables of ``out``.
    previous
        An earlier run (its folder, or a :class:`RunResult`): the changes since it are computed
        (:attr:`RunResult.changes`) and, with ``out``, written into the run folder as
        ``changes.parquet``, ``changes.csv`` and ``transitions.csv`` (see :func:`fastseg.diff`).
    **options
        Everything :func:`score` takes (``customers``, ``events``, ``as_of``, ``bins``,
        ``columns``, ``memory_limit``, ``tmp_dir``...), and ``threads``. A run in buckets
        (past ``memory_limit``) gives a :class:`RunResult` whose ``scores`` is empty when they
        were written to ``out`` (else every bucket's rows) and whose ``segments`` has the sizes, summary and overlaps of all
        buckets (:class:`fastseg.bucketrun.MergedSegments`); it cannot ``predict``, compare with
        ``previous`` or write the ``report``. ``state``/``keep_days``: a daily refresh, as for
        :func:`score`; :attr:`RunResult.state` then describes the new state.

    Returns
    -------
    RunResult
        ``scores``, ``segments`` (a :class:`~fastseg.segmenting.SegmentResult`), row reports,
        timings and the written ``outputs``.
    """
    return run_job(orders, rules=rules, builtin=builtin, out=out, **options)
