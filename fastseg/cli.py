"""The ``fastseg`` command line: a thin Typer layer over :mod:`fastseg.api`.

Every command makes its ``api`` call inside :func:`_friendly`, which turns any
:class:`~fastseg.errors.FastsegError` into one red line on stderr and exit status 1. Heavy imports
(Polars, Numba) happen inside the commands so that ``fastseg --help`` is instant.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastseg import __version__
from fastseg.errors import FastsegError

# ------------------------------------------------------------------------------------ help conventions
# Typer's help shows a ``<bool>`` type beside flags, its own types (``<str>``, ``<path>``,
# ``<list[str]>``) beside arguments already named by a metavar, and ``{ORDERS...}...`` in the
# usage line. The classes below restore click's conventions (``fastseg run [OPTIONS]
# ORDERS...``): the root group gives them to every command's parameters when it hands the command
# out, so a new command needs nothing. Each override applies only where this Typer has the method
# it replaces (older versions render the click way already).


def _help_param_classes() -> dict[type, type]:
    from typer.core import TyperArgument, TyperOption

    class Option(TyperOption):
        __slots__ = ()  # the layout of the base: instances change class in place

        if hasattr(TyperOption, "display_type_rich"):

            def display_type_rich(self, ctx: Any) -> str | None:
                if self.is_flag or self.count:  # a flag takes no value: nothing to show
                    return None
                return super().display_type_rich(ctx)

    class Argument(TyperArgument):
        __slots__ = ()

        if hasattr(TyperArgument, "display_type_rich"):

            def display_type_rich(self, ctx: Any) -> str | None:
                if self.metavar is not None:  # the metavar names the value already
                    return None
                return super().display_type_rich(ctx)

        if hasattr(TyperArgument, "_usage_display_name"):

            def _usage_display_name(self) -> str:
                name = self.display_name_raw
                repeats = self.nargs != 1
                name = name.removesuffix("...") if repeats else name
                name = name if self.required else f"[{name}]"
                return name + ("..." if repeats else "")

    return {TyperOption: Option, TyperArgument: Argument}


_PARAM_CLASSES = _help_param_classes()


def _conventional(params: list[Any]) -> list[Any]:
    """The parameters, each rendered by its class of :func:`_help_param_classes` (the same
    objects: only their class changes)."""
    for param in params:
        better = _PARAM_CLASSES.get(type(param))
        if better is not None:
            param.__class__ = better
    return params


def _conventional_command(cmd: Any, ctx: Any) -> None:
    """A command's parameters (its help option too), and a group's commands', conventional."""
    _conventional([*cmd.params, cmd.get_help_option(ctx)])
    for sub in getattr(cmd, "commands", {}).values():
        _conventional_command(sub, ctx)


class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (a bad option value, an unknown option) as one line on stderr, exit 2; the
    help of every command with click's conventions (:func:`_help_param_classes`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _conventional_command(cmd, ctx)
        return cmd

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:  # typer >= 0.20 vendors click
            from typer import _click as click
        except ImportError:  # pragma: no cover
            import click  # type: ignore[no-redef]

        standalone = kwargs.pop("standalone_mode", True)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = 0
        except click.exceptions.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "fastseg"
            _error_line(f"{exc.format_message()} (see '{command} --help')")
            code = 2
        except typer.Abort:
            _error_line("aborted")
            code = 1
        else:
            code = rv if isinstance(rv, int) else 0
        if standalone:
            sys.exit(code)
        return code


app = typer.Typer(
    name="fastseg",
    cls=_OneLineErrors,
    help="Fast, exact customer segmentation: RFM scores and rule-based segments from order histories.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
segments_app = typer.Typer(help="List, show and check segment catalogs.", no_args_is_help=True)
app.add_typer(segments_app, name="segments")
state_app = typer.Typer(
    help="Look at a daily-refresh state folder (--state).", no_args_is_help=True
)
app.add_typer(state_app, name="state")

# Piped output (logs, schedulers) gets wide tables instead of rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _one_line(text: str) -> str:
    """A message as one line: line breaks become '; ', runs of spaces one space."""
    parts = [" ".join(line.split()) for line in str(text).splitlines()]
    return "; ".join(p for p in parts if p)


def _error_line(message: str) -> None:
    """``error: MESSAGE`` on stderr: one line, the message never read as rich markup."""
    from rich.text import Text

    line = Text("error: ", style="bold red")
    line.append(_one_line(message))
    err.print(line, soft_wrap=True, highlight=False)


def _friendly(fn: F) -> F:
    """Map FastsegError to one red line and exit code 1 (the one place that does)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FastsegError as exc:
            _error_line(str(exc))
            raise typer.Exit(1) from None
        except OSError as exc:  # disk full, permission denied...: the environment, not a bug
            where = f" '{exc.filename}'" if getattr(exc, "filename", None) else ""
            _error_line(f"{exc.strerror or exc}{where}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            _error_line("interrupted: nothing was written (earlier outputs are as they were)")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _count(value: str, name: str) -> int:
    """Parse counts written as 1000000, 1e6 or 1_000_000."""
    try:
        number = float(value.replace("_", ""))
    except ValueError:
        raise typer.BadParameter(
            f"expected a whole number like 1000000 or 1e6, got {value!r}", param_hint=name
        ) from None
    if number != int(number) or number < 1:
        raise typer.BadParameter(
            f"expected a positive whole number, got {value!r}", param_hint=name
        )
    return int(number)


def _bins(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 2 <= number <= 10:
        raise typer.BadParameter(f"expected a whole number from 2 to 10, got {value!r}")
    return number


def _version(value: bool) -> None:
    if value:
        console.print(f"fastseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """fastseg: score every customer and place them in segments, exactly, in seconds."""


class OutFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"


class Method(StrEnum):
    quantile = "quantile"
    thresholds = "thresholds"


# ------------------------------------------------------------------------------------ shared options

FormatOpt = Annotated[
    OutFormat | None,
    typer.Option("--format", help="parquet or csv (default: from --out's suffix)."),
]
ColOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--col",
        help="Map a canonical order column to yours: CANONICAL=THEIRS (repeatable), e.g. --col order_ts=OrderDate "
        "(profiles: --customers-col; events: --events-col).",
        metavar="C=THEIRS",
    ),
]
CustomersColOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--customers-col",
        help="Map a canonical profile column to yours (with --customers): CANONICAL=THEIRS "
        "(repeatable), e.g. --customers-col customer_id=CustID --customers-col email_opt_in=OptIn.",
        metavar="C=THEIRS",
    ),
]
EventsColOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--events-col",
        help="Map a canonical event column to yours (with --events): CANONICAL=THEIRS "
        "(repeatable), e.g. --events-col event_ts=EventDate.",
        metavar="C=THEIRS",
    ),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Scoring date (YYYY-MM-DD). Default: the date of the latest order row; later rows are left out.",
        metavar="DATE",
    ),
]
CustomersOpt = Annotated[
    Path | None,
    typer.Option(
        "--customers",
        help="Customer profiles (Parquet/CSV/Arrow); customers without orders become prospects.",
        metavar="FILE",
    ),
]
EventsOpt = Annotated[
    Path | None,
    typer.Option(
        "--events", help="Engagement events: customer_id, event_ts, event.", metavar="FILE"
    ),
]
TzOpt = Annotated[
    str | None,
    typer.Option(
        "--tz",
        help="Store time zone (IANA name, e.g. Europe/Berlin): zone-aware timestamps are cut into days in it; naive ones are taken as local. Default: each timestamp's date in its own zone (UTC for most files).",
        metavar="ZONE",
    ),
]
MemoryLimitOpt = Annotated[
    str | None,
    typer.Option(
        "--memory-limit",
        help="Memory for the run, e.g. 1500MB, 4GB, 4GiB. When the customers' state would not fit, the rows are spilled to customer buckets on disk and scored bucket by bucket, with the same results. Default: 75% of the memory available.",
        metavar="SIZE",
    ),
]
TmpDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--tmp-dir",
        help="Folder for the spill files of a run in buckets (removed afterwards). Default: the system's temporary folder.",
        metavar="DIR",
    ),
]
StrictOpt = Annotated[
    bool, typer.Option("--strict", help="Fail if any order row has to be left out.")
]
RejectsOpt = Annotated[
    Path | None,
    typer.Option(
        "--rejects",
        help="Write the left-out order rows, with their reason, to this Parquet/CSV file.",
        metavar="FILE",
    ),
]
WindowsOpt = Annotated[
    str,
    typer.Option(
        "--windows",
        help="Trailing windows in days for orders_Nd / revenue_Nd features.",
        metavar="DAYS",
    ),
]


class LogFormat(StrEnum):
    text = "text"
    json = "json"


QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Print nothing but errors: no progress, no log lines, no summary (the files and the "
        "exit status tell the outcome).",
    ),
]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        help="Progress on stderr: text (a live display on a terminal, else one line per stage) "
        "or json (one JSON object per line, for pipelines).",
    ),
]


OrdersArg = Annotated[
    list[str],
    typer.Argument(
        help="Order history: Parquet files, folders or globs (one or more, one format); CSV; Arrow IPC.",
        metavar="ORDERS...",
    ),
]


def _one_or_many(paths: list[str]) -> str | list[str]:
    return paths[0] if len(paths) == 1 else paths


OrdersOrStateArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Order history: Parquet files, folders or globs (one or more, one format); CSV; Arrow IPC. With --state: the new orders (none: a new scoring date, --as-of, ages the state).",
        metavar="ORDERS...",
        show_default=False,
    ),
]
StateOpt = Annotated[
    Path | None,
    typer.Option(
        "--state",
        help="Daily refresh: a folder keeping the per-customer state; ORDERS are the new orders, added to it (the first run builds it from the whole history). The outputs equal a run over every input applied so far. See docs/refresh.md.",
        metavar="DIR",
    ),
]
KeepDaysOpt = Annotated[
    int | None,
    typer.Option(
        "--keep-days",
        help="With --state, when it is built: days of recent orders to keep for windows (default: the longest window the run needs; more lets longer rule windows be added later).",
        metavar="DAYS",
    ),
]


def _orders_or_state(orders: list[str] | None, state: Path | None, keep_days: int | None) -> Any:
    """The orders argument, which only --state makes optional."""
    if keep_days is not None and state is None:
        raise typer.BadParameter("needs --state", param_hint="--keep-days")
    if orders:
        return _one_or_many(orders)
    if state is None:
        raise typer.BadParameter(
            "give the order history (without orders only with --state DIR: a new scoring date)",
            param_hint="ORDERS...",
        )
    return None


BinsOpt = Annotated[
    str | None,
    typer.Option(
        "--bins",
        callback=_bins,
        help="Score levels k (2 to 10; default 5, or the bins of --edges-in).",
        show_default=False,
        metavar="K",
    ),
]
MethodOpt = Annotated[
    Method | None,
    typer.Option("--method", help="quantile (default) or thresholds.", show_default=False),
]
ThresholdsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--thresholds",
        help="Cut points per dimension for --method thresholds, e.g. r=30,90,180,365 (repeat for f and m).",
        metavar="D=V,V...",
    ),
]
EdgesInOpt = Annotated[
    Path | None,
    typer.Option(
        "--edges-in",
        help="Score against edges saved earlier (JSON) instead of fitting.",
        metavar="FILE",
    ),
]
EdgesOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--edges-out",
        help="Save the fitted edges (JSON) to score later batches against.",
        metavar="FILE",
    ),
]


def _need_thresholds(method: Method | None, thresholds: list[str] | None) -> None:
    if method is Method.thresholds and not thresholds:
        raise typer.BadParameter(
            "--method thresholds needs --thresholds r=...,f=...,m=...", param_hint="--thresholds"
        )


def _need_input(mapping: list[str] | None, source: Path | None, option: str, needs: str) -> None:
    if mapping and source is None:
        raise typer.BadParameter(
            f"it maps the columns of {needs}: give {needs} too", param_hint=option
        )


def _windows(text: str) -> tuple[int, ...]:
    from fastseg.config import MAX_WINDOW

    try:
        days = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        days = ()
    if not days or not all(1 <= d <= MAX_WINDOW for d in days) or len(set(days)) != len(days):
        raise typer.BadParameter(
            f"expected distinct whole numbers of days from 1 to {MAX_WINDOW:,} like 30,90,365, "
            f"got {text!r}",
            param_hint="--windows",
        )
    return days


# ------------------------------------------------------------------------------------ reporting


def _print_rows(report: Any, what: str = "orders") -> None:
    left = report.rows_left_out
    console.print(
        f"[bold]{what}[/bold] {escape(str(report.source))}: {report.rows_read:,} rows read, "
        f"[green]{report.rows_used:,} used[/green], "
        + (f"[yellow]{left:,} left out[/yellow]" if left else "0 left out")
    )
    for reason, n in report.left_out.items():
        if n:
            console.print(f"    {escape(reason)}: {n:,}")
    if getattr(report, "duplicates", 0):
        console.print(
            f"    exact duplicate rows (kept, may be repeat purchases): {report.duplicates:,}"
        )
    if report.rejects_path:
        console.print(f"    left-out rows written to {escape(str(report.rejects_path))}")


def _print_buckets(res: Any) -> None:
    info = getattr(res, "buckets", None)
    if info is None:
        return
    from fastseg.buckets import format_size

    console.print(
        f"in buckets: the customers' state would not fit --memory-limit "
        f"{format_size(info.memory_limit)}; {info.spilled_rows:,} rows spilled to "
        f"{info.buckets} buckets, scored in {info.units} parts"
    )


def _print_state(res: Any) -> None:
    info = getattr(res, "state", None)
    if info is None:
        return
    rows = info["rows"]
    console.print(
        f"state [bold]{escape(info['folder'])}[/bold]: {info['inputs_applied']:,} inputs applied, "
        f"{rows['rows_read']:,} rows read, {rows['rows_used']:,} used"
        + (f", {rows['rows_left_out']:,} left out" if rows["rows_left_out"] else "")
        + (
            f", {rows['exact_duplicate_rows']:,} exact duplicates"
            if rows["exact_duplicate_rows"]
            else ""
        )
        + f"; {info['customers']:,} customers, {info['recent_rows']:,} recent rows "
        f"({info['keep_days']} days), {_size(info['bytes'])}"
    )
    if info.get("reapplied"):
        console.print(
            f"    {escape(str(info['reapplied']))} was the last input applied: applied again, to "
            "the state before it (nothing counted twice)"
        )


def _size(n: int) -> str:
    from fastseg.buckets import format_size

    return format_size(n)


def _print_score_summary(res: Any) -> None:
    _print_rows(res.orders, "orders")
    _print_state(res)
    if res.customers is not None:
        _print_rows(res.customers, "customers")
    if res.events is not None:
        _print_rows(res.events, "events")
    console.print(
        f"scoring date [bold]{res.as_of}[/bold]: {res.n_customers:,} customers, "
        f"{res.n_scored:,} scored, {res.n_customers - res.n_scored:,} without an order"
    )
    _print_buckets(res)
    table = Table(title="RFM groups", title_justify="left")
    table.add_column("rfm_group")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    for g, n, share in res.group_counts().iter_rows():
        table.add_row(escape(g), f"{n:,}", f"{share:.1%}")
    console.print(table)


def _print_timings(timings: dict[str, float]) -> None:
    parts = ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
    console.print(f"time: {sum(timings.values()):.2f}s ({parts})")


def _stderr_line(line: str) -> None:
    """One plain line on stderr, flushed (a log sees it at once)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _reporter(quiet: bool, log_format: LogFormat) -> Any:
    """The progress reporter of a command (:func:`fastseg.progress.reporter`), on stderr."""
    from fastseg.progress import reporter

    return reporter(log_format.value, quiet=quiet, console=err)


def _outputs_field(paths: Any) -> list[str]:
    return [str(p) for p in paths]


# ------------------------------------------------------------------------------------ commands


@app.command()
@_friendly
def gen(
    out: Annotated[
        Path,
        typer.Argument(
            help="Folder to write orders.parquet, customers.parquet and events.parquet into.",
            metavar="DIR",
        ),
    ] = Path("fastseg-data"),
    orders: Annotated[
        str,
        typer.Option("--orders", help="Order rows to generate (1e6, 10000000...).", metavar="N"),
    ] = "1e6",
    customers: Annotated[
        str | None,
        typer.Option("--customers", help="Customers (default: orders / 10).", metavar="N"),
    ] = None,
    events: Annotated[
        str | None,
        typer.Option(
            "--events", help="Event rows (default: about the number of orders).", metavar="N"
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Random seed: the same seed gives the same data.", metavar="N"),
    ] = 0,
    string_ids: Annotated[
        bool,
        typer.Option("--string-ids", help="Customer ids as text (C0001234) instead of integers."),
    ] = False,
    chunk_rows: Annotated[
        str,
        typer.Option(
            "--chunk-rows",
            help="Rows generated and written per chunk (bounds memory).",
            metavar="N",
        ),
    ] = "1e6",
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Generate a synthetic retail store (orders, customers, events) as Parquet."""
    from fastseg import synthetic
    from fastseg.progress import Stopwatch

    n_orders = _count(orders, "--orders")
    with _reporter(quiet, log_format) as rep:
        with Stopwatch(rep).stage("generate", total=n_orders) as st:
            ds = synthetic.generate(
                out,
                orders=n_orders,
                customers=_count(customers, "--customers") if customers else None,
                events=_count(events, "--events") if events else None,
                seed=seed,
                string_ids=string_ids,
                chunk_rows=_count(chunk_rows, "--chunk-rows"),
                progress=st.update,
            )
        rep.done(command="gen", orders=ds.n_orders, outputs=_outputs_field([ds.folder]))
    if quiet:
        return
    console.print(
        f"wrote {ds.n_orders:,} orders, {ds.n_customers:,} customers and {ds.n_events:,} events "
        f"to {escape(str(ds.folder))} in {ds.seconds:.1f}s"
    )


@app.command()
@_friendly
def score(
    orders: OrdersOrStateArg = None,
    customers: CustomersOpt = None,
    events: EventsOpt = None,
    as_of: AsOfOpt = None,
    tz: TzOpt = None,
    bins: BinsOpt = None,
    method: MethodOpt = None,
    thresholds: ThresholdsOpt = None,
    col: ColOpt = None,
    customers_col: CustomersColOpt = None,
    events_col: EventsColOpt = None,
    edges_in: EdgesInOpt = None,
    edges_out: EdgesOutOpt = None,
    windows: WindowsOpt = "30,90,365",
    strict: StrictOpt = False,
    rejects: RejectsOpt = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output file for the scores.", metavar="FILE")
    ] = Path("scores.parquet"),
    fmt: FormatOpt = None,
    memory_limit: MemoryLimitOpt = None,
    tmp_dir: TmpDirOpt = None,
    state: StateOpt = None,
    keep_days: KeepDaysOpt = None,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Score every customer: features, R/F/M scores, RFM cell and group."""
    from fastseg import api

    source = _orders_or_state(orders, state, keep_days)
    _need_thresholds(method, thresholds)
    _need_input(customers_col, customers, "--customers-col", "--customers")
    _need_input(events_col, events, "--events-col", "--events")
    watch = api.Stopwatch()
    with _reporter(quiet, log_format) as rep:
        res = api.score_job(
            source,
            customers=customers,
            events=events,
            as_of=as_of,
            bins=bins,
            method=method.value if method else None,
            thresholds=thresholds or None,
            columns=col or None,
            customer_columns=customers_col or None,
            event_columns=events_col or None,
            windows=_windows(windows),
            strict=strict,
            rejects=rejects,
            edges_in=edges_in,
            edges_out=edges_out,
            out=out,
            out_format=fmt.value if fmt else None,
            tz=api.check_time_zone(tz, "--tz"),
            memory_limit=memory_limit,
            tmp_dir=tmp_dir,
            state=state,
            keep_days=keep_days,
            stopwatch=watch,
            progress=rep,
        )
        rep.done(command="score", **_job_fields(res))
    if quiet:
        return
    _print_score_summary(res)
    edges = res.outputs.get("edges")
    console.print(
        f"scores written to [bold]{escape(str(res.outputs['scores']))}[/bold]"
        + (f"; edges to {escape(str(edges))}" if edges else "")
    )
    _print_timings(watch.seconds)


class Unit(StrEnum):
    days = "days"
    weeks = "weeks"


@app.command("predict")
@_friendly
def predict_cmd(
    orders: OrdersArg,
    col: ColOpt = None,
    as_of: AsOfOpt = None,
    tz: TzOpt = None,
    strict: StrictOpt = False,
    unit: Annotated[
        Unit, typer.Option("--unit", help="Time unit of the fit (alpha is in it).")
    ] = Unit.weeks,
    horizon: Annotated[
        int,
        typer.Option(
            "--horizon",
            help="Days of the CLV and of an expected_orders_<H>d column (30, 90 and 365 are always there).",
            metavar="DAYS",
        ),
    ] = 365,
    discount_rate: Annotated[
        float | None,
        typer.Option(
            "--discount-rate",
            help="Annual rate discounting the CLV, e.g. 0.1 for 10% (in 30-day steps; default: none).",
            metavar="R",
        ),
    ] = None,
    params_in: Annotated[
        Path | None,
        typer.Option(
            "--params-in",
            help="Score against parameters saved with --params-out (no fit).",
            metavar="FILE",
        ),
    ] = None,
    params_out: Annotated[
        Path | None,
        typer.Option("--params-out", help="Save the fitted parameters (JSON).", metavar="FILE"),
    ] = None,
    holdout_from: Annotated[
        str | None,
        typer.Option(
            "--holdout-from",
            help="Fit on the orders before this day (YYYY-MM-DD), then compare predicted and actual repeat purchase days from it to the scoring date.",
            metavar="DATE",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output file for the predictions.", metavar="FILE")
    ] = Path("predictions.parquet"),
    fmt: FormatOpt = None,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """What each customer will do next: BG/NBD and Gamma-Gamma (p_alive, expected orders, CLV)."""
    from fastseg import api

    with _reporter(quiet, log_format) as rep:
        pred = api.predict(
            _one_or_many(orders),
            columns=col or None,
            as_of=as_of,
            strict=strict,
            unit=unit.value,
            horizon=horizon,
            discount_rate=discount_rate,
            params_in=params_in,
            params_out=params_out,
            holdout_from=holdout_from,
            out=out,
            out_format=fmt.value if fmt else None,
            tz=api.check_time_zone(tz, "--tz"),
            progress=rep,
        )
        rep.done(
            command="predict",
            customers=pred.frame.height,
            outputs=_outputs_field(pred.outputs.values()),
        )
    if quiet:
        return
    _print_prediction(pred)
    console.print(
        "written: " + ", ".join(str(p) for p in pred.outputs.values()),
        markup=False,
        highlight=False,
    )
    _print_timings(pred.timings)


def _print_prediction(pred: Any) -> None:
    bg, gg = pred.bgnbd.params_, pred.gamma_gamma.params_
    how = "fitted" if pred.fitted else "loaded"
    console.print(
        f"BG/NBD ({how}, {pred.unit}): r={bg['r']:.4g} alpha={bg['alpha']:.4g} a={bg['a']:.4g} "
        f"b={bg['b']:.4g}; Gamma-Gamma: p={gg['p']:.4g} q={gg['q']:.4g} v={gg['v']:.4g}",
        markup=False,
        highlight=False,
    )
    f = pred.frame
    known = f.filter(f["p_alive"].is_not_null())
    h = pred.horizon
    rows = [
        (band, f"{n:,}", f"{n / max(known.height, 1):.1%}")
        for band, n in (
            (b, int((known["churn_risk"] == b).sum())) for b in ("high", "medium", "low")
        )
    ]
    _print_table(
        f"churn risk of {known.height:,} customers with an order "
        f"({f.height - known.height:,} without: no prediction)",
        ("churn risk", "customers", "share"),
        rows,
        left=1,
    )
    console.print(
        f"expected purchase days in the next {h} days: {known[f'expected_orders_{h}d'].sum():,.0f}; "
        f"expected revenue (clv over {h} days"
        + (f", discounted at {pred.discount_rate:.1%} a year" if pred.discount_rate else "")
        + f"): {known['clv'].sum():,.2f}",
        markup=False,
        highlight=False,
    )
    if pred.holdout is not None:
        ho = pred.holdout
        _print_table(
            f"holdout {ho['from']} to {ho['to']}: repeat purchase days per customer, predicted "
            "against actual, by repeat purchase days before the holdout",
            ("repeat days before", "customers", "predicted", "actual"),
            [
                (
                    r["frequency"],
                    f"{r['customers']:,}",
                    f"{r['predicted_mean']:.3f}",
                    f"{r['actual_mean']:.3f}",
                )
                for r in ho["table"].iter_rows(named=True)
            ],
            left=1,
        )
        t = ho["totals"]
        console.print(
            f"holdout total: predicted {t['predicted']:,.0f}, actual {t['actual']:,.0f} "
            f"({t['predicted'] / t['actual'] - 1:+.1%})"
            if t["actual"]
            else "holdout total: no actual purchases",
            markup=False,
            highlight=False,
        )


class Layout(StrEnum):
    long = "long"
    wide = "wide"
    bitset = "bitset"


RulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        help="Segment catalog (TOML) to add to (or, with --no-builtin, use instead of) the built-in one.",
        metavar="FILE",
    ),
]
BuiltinOpt = Annotated[
    bool, typer.Option("--builtin/--no-builtin", help="Include the built-in catalog of segments.")
]


def _print_segments(seg: Any, limit: int | None = None) -> None:
    summary = seg.summary()
    table = Table(title=f"Segments ({len(seg.names)})", title_justify="left")
    for name, justify in (
        ("segment", "left"),
        ("customers", "right"),
        ("share", "right"),
        ("revenue", "right"),
        ("rev. share", "right"),
        ("aov", "right"),
        ("recency", "right"),
        ("freq.", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    num = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    for row in summary.head(limit or summary.height).iter_rows(named=True):
        table.add_row(
            escape(row["segment"]),
            f"{row['customers']:,}",
            num(row["share_customers"], ".1%"),
            num(row["revenue"], ",.0f"),
            num(row["share_revenue"], ".1%"),
            num(row["aov"], ",.2f"),
            num(row["mean_recency_days"], ",.0f"),
            num(row["mean_frequency"], ",.2f"),
        )
    console.print(table)
    for name, reason in seg.skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(name)}: {escape(reason)}")


@app.command()
@_friendly
def run(
    orders: OrdersOrStateArg = None,
    customers: CustomersOpt = None,
    events: EventsOpt = None,
    col: ColOpt = None,
    customers_col: CustomersColOpt = None,
    events_col: EventsColOpt = None,
    as_of: AsOfOpt = None,
    tz: TzOpt = None,
    rules: RulesOpt = None,
    builtin: BuiltinOpt = True,
    bins: BinsOpt = None,
    method: MethodOpt = None,
    thresholds: ThresholdsOpt = None,
    edges_in: EdgesInOpt = None,
    edges_out: EdgesOutOpt = None,
    windows: WindowsOpt = "30,90,365",
    strict: StrictOpt = False,
    rejects: RejectsOpt = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for scores, segments, groups (Parquet or CSV), summary.csv, overlaps.csv, membership.npz, run.json.",
            metavar="DIR",
        ),
    ] = Path("fastseg-out"),
    fmt: Annotated[
        OutFormat | None,
        typer.Option(
            "--format",
            help="Format of the scores, segments and groups tables: parquet (default) or csv.",
        ),
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="An earlier run folder: write who joined and left each segment since it (changes.parquet, changes.csv, transitions.csv).",
            metavar="RUN_DIR",
        ),
    ] = None,
    predict: Annotated[
        bool,
        typer.Option(
            "--predict",
            help="Also fit BG/NBD and Gamma-Gamma and add p_alive, expected_orders_*, clv, clv_score, churn_risk to the scores, for rules (see `fastseg predict`).",
        ),
    ] = False,
    params_in: Annotated[
        Path | None,
        typer.Option(
            "--params-in",
            help="With --predict: use parameters saved by `fastseg predict --params-out` (no fit).",
            metavar="FILE",
        ),
    ] = None,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Also write report.html into the run folder: one page with charts that opens offline (see `fastseg report`).",
        ),
    ] = False,
    memory_limit: MemoryLimitOpt = None,
    tmp_dir: TmpDirOpt = None,
    state: StateOpt = None,
    keep_days: KeepDaysOpt = None,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """The main job: features, RFM scores and segments in one go."""
    import sys

    from fastseg import api

    source = _orders_or_state(orders, state, keep_days)
    _need_thresholds(method, thresholds)
    _need_input(customers_col, customers, "--customers-col", "--customers")
    _need_input(events_col, events, "--events-col", "--events")
    if params_in is not None and not predict:
        raise typer.BadParameter("needs --predict", param_hint="--params-in")
    watch = api.Stopwatch()
    with _reporter(quiet, log_format) as rep:
        res = api.run_job(
            source,
            customers=customers,
            events=events,
            columns=col or None,
            customer_columns=customers_col or None,
            event_columns=events_col or None,
            as_of=as_of,
            rules=rules,
            builtin=builtin,
            bins=bins,
            method=method.value if method else None,
            thresholds=thresholds or None,
            edges_in=edges_in,
            edges_out=edges_out,
            windows=_windows(windows),
            strict=strict,
            rejects=rejects,
            out=out,
            out_format=fmt.value if fmt else None,
            previous=previous,
            predict=({"params_in": params_in} if params_in else True) if predict else False,
            report=report,
            memory_limit=memory_limit,
            tmp_dir=tmp_dir,
            state=state,
            keep_days=keep_days,
            tz=api.check_time_zone(tz, "--tz"),
            stopwatch=watch,
            progress=rep,
            command=["fastseg", *sys.argv[1:]],
        )
        rep.done(command="run", **_job_fields(res))
    if not quiet:
        _report_run(res)


def _job_fields(res: Any) -> dict[str, Any]:
    """What the final ``done`` log event says of a scoring run (plain values)."""
    return {
        "orders": res.orders.rows_read,
        "customers": res.n_customers,
        "scored": res.n_scored,
        "outputs": _outputs_field(res.outputs.values()),
    }


def _report_run(res: Any) -> None:
    _print_score_summary(res)
    _print_segments(res.segments)
    if res.prediction is not None:
        _print_prediction(res.prediction)
    if res.changes is not None:
        _print_changes(res.changes)
    console.print("written: " + ", ".join(str(p) for p in res.outputs.values()), markup=False)
    _print_timings(res.timings)


def _print_changes(ch: Any, limit: int = 20) -> None:
    c = ch.customers
    console.print(
        f"changes since {escape(ch.previous['as_of'])}"
        + (f" ({escape(ch.previous['path'])})" if ch.previous.get("path") else "")
        + f": {c['after']:,} customers, {c['new']:,} new, {c['gone']:,} gone, "
        f"{c['staying']:,} staying"
    )
    rows = [
        r
        for r in ch.summary.iter_rows(named=True)
        if r["status"] != "kept" or r["joined"] or r["left"]
    ]
    rows.sort(key=lambda r: -((r["joined"] or 0) + (r["left"] or 0)))
    fmt = lambda v: "" if v is None else f"{v:,}"  # noqa: E731
    _print_table(
        f"Segment changes ({len(rows)} of {ch.summary.height} segments changed)",
        ("segment", "status", "before", "after", "joined", "left"),
        [
            (
                escape(r["segment"]),
                r["status"],
                fmt(r["before"]),
                fmt(r["after"]),
                fmt(r["joined"]),
                fmt(r["left"]),
            )
            for r in rows[:limit]
        ],
        left=2,
    )
    if len(rows) > limit:
        console.print(f"... and {len(rows) - limit} more segments changed (see changes.csv)")
    for note in ch.notes:
        console.print(f"[yellow]note[/yellow]: {escape(note)}")


@app.command("diff")
@_friendly
def diff_cmd(
    previous: Annotated[
        Path, typer.Argument(help="The earlier run folder.", metavar="PREV_RUN_DIR")
    ],
    current: Annotated[Path, typer.Argument(help="The later run folder.", metavar="CUR_RUN_DIR")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder for changes.parquet, changes.csv, transitions.csv and diff.json (default: print only).",
            metavar="DIR",
        ),
    ] = None,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Who joined and left each segment between two runs, and how customers moved between RFM groups."""
    from fastseg import api

    with _reporter(quiet, log_format) as rep:
        ch = api.diff(previous, current, out=out, progress=rep)
        files = [*ch.files.values(), str(Path(out) / "diff.json")] if out is not None else []
        rep.done(command="diff", customers=ch.customers["after"], outputs=files)
    if quiet:
        return
    _print_changes(ch)
    if out is not None:
        console.print(
            f"written to {escape(str(out))}: changes.parquet, changes.csv, transitions.csv, diff.json"
        )
    console.print(f"compared in {ch.seconds:.2f} s")


@app.command("report")
@_friendly
def report_cmd(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder written by `fastseg run --out`.", metavar="RUN_DIR")
    ],
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="An earlier run folder: add who joined and left each segment and the RFM transitions since it (default: the changes the run folder holds, if any).",
            metavar="PREV_RUN_DIR",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The HTML file to write (default: report.html in the run folder).",
            metavar="FILE",
        ),
    ] = None,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """One self-contained HTML page for a run (headline figures, segments, the R×F grid, distributions, overlaps, changes) that opens offline in any browser."""
    from fastseg import api

    with _reporter(quiet, log_format) as progress:
        rep = api.report(run_dir, previous=previous, out=out, progress=progress)
        progress.done(command="report", outputs=[str(rep.path)])
    if quiet:
        return
    console.print(
        f"report written to [bold]{escape(str(rep.path))}[/bold]: {rep.charts} charts, "
        f"{rep.bytes / 1e6:.1f} MB, in {rep.seconds:.1f} s"
    )


class Hash(StrEnum):
    sha256 = "sha256"


@app.command("export")
@_friendly
def export_cmd(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder written by `fastseg run --out`.", metavar="RUN_DIR")
    ],
    segment: Annotated[
        list[str],
        typer.Option(
            "--segment",
            "-s",
            help="Segment to export (repeatable); each gets DIR/NAME.csv (or .parquet).",
            metavar="NAME",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for the files and manifest.json (replaced as one set).",
            metavar="DIR",
        ),
    ],
    customers: Annotated[
        Path | None,
        typer.Option(
            "--customers",
            help="Profiles to take the columns from that the run's scores lack (and those of "
            "customers gone from the run, for --changes).",
            metavar="PROFILES",
        ),
    ] = None,
    customers_col: CustomersColOpt = None,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            help="Columns after customer_id, e.g. email,phone,first_name (default: the email "
            "and phone columns there are).",
            metavar="COLS",
        ),
    ] = None,
    hash_: Annotated[
        Hash | None,
        typer.Option(
            "--hash",
            help="Replace email and phone by the SHA-256 (lowercase hex) of their normalized "
            "value, as ad platforms take them.",
        ),
    ] = None,
    changes: Annotated[
        bool,
        typer.Option(
            "--changes",
            help="Also NAME.added.csv and NAME.removed.csv: who joined and left since the "
            "previous run (a run made with a previous run).",
        ),
    ] = False,
    fmt: Annotated[OutFormat, typer.Option("--format", help="csv or parquet.")] = OutFormat.csv,
    default_country: Annotated[
        str | None,
        typer.Option(
            "--default-country",
            help="ISO region (US, GB...) of phone numbers written without a country code.",
            metavar="CC",
        ),
    ] = None,
    phone_country: Annotated[
        str | None,
        typer.Option(
            "--phone-country",
            help="Column with each customer's ISO country (e.g. country): numbers without a country code are read there (--default-country where it is empty).",
            metavar="COLUMN",
        ),
    ] = None,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Export who is in segments of a run, one file per segment, for an email tool or ad platform."""
    from fastseg import api

    _need_input(customers_col, customers, "--customers-col", "--customers")
    if not any(s.strip() for s in segment):
        raise typer.BadParameter("give the name of a segment of the run", param_hint="--segment")
    if default_country is not None:
        import phonenumbers as pn

        if default_country.strip().upper() not in pn.SUPPORTED_REGIONS:
            raise typer.BadParameter(
                f"{default_country!r} is not an ISO 3166 region phone numbers know; give a "
                "two-letter code such as US, GB, DE or FR",
                param_hint="--default-country",
            )
    with _reporter(quiet, log_format) as rep:
        res = api.export(
            run_dir,
            segment,
            out=out,
            customers=customers,
            customer_columns=customers_col or None,
            columns=columns,
            hash=hash_.value if hash_ else None,
            changes=changes,
            out_format=fmt.value,
            default_country=default_country,
            phone_country=phone_country,
            progress=rep,
        )
        rep.done(
            command="export",
            rows=sum(f.rows for f in res.files),
            outputs=_outputs_field([*(f.path for f in res.files), res.manifest]),
        )
    if quiet:
        return
    table = Table(
        title=f"Export of {escape(str(res.run))} ({escape(res.as_of)})", title_justify="left"
    )
    for name, justify in (("file", "left"), ("rows", "right"), ("unusable identifiers", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for f in res.files:
        parts = [
            f"{col} {n['missing']:,} missing, {n['invalid']:,} invalid"
            for col, n in f.unusable.items()
        ]
        table.add_row(escape(f.path.name), f"{f.rows:,}", escape("; ".join(parts)))
    console.print(table)
    for note in res.notes:
        console.print(f"[yellow]note[/yellow]: {escape(note)}")
    what = f"{len(res.files)} file(s)" + (", identifiers hashed (sha256)" if res.hash else "")
    console.print(
        f"written to [bold]{escape(str(res.out))}[/bold]: {what}, manifest.json "
        f"({sum(res.timings.values()):.2f}s)"
    )


@app.command()
@_friendly
def demo(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for the synthetic data and the results.", metavar="DIR"
        ),
    ] = Path("fastseg-demo"),
    orders: Annotated[
        str, typer.Option("--orders", help="Order rows to generate.", metavar="N")
    ] = "1e6",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.", metavar="N")] = 0,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Generate a synthetic store and run the main job on it (features, scores, segments)."""
    from fastseg import api, synthetic

    n = _count(orders, "--orders")
    data = out / "data"
    watch = api.Stopwatch()
    with _reporter(quiet, log_format) as rep:
        watch.progress = rep
        with watch.stage("generate", total=n) as st:
            ds = synthetic.generate(data, orders=n, seed=seed, progress=st.update)
        del watch.seconds["generate"]  # run.json times the job, not the data's generation
        res = api.run_job(
            ds.orders,
            customers=ds.customers,
            events=ds.events,
            out=out / "results",
            report=True,
            stopwatch=watch,
        )
        rep.done(command="demo", **_job_fields(res))
    if quiet:
        return
    console.print(
        f"synthetic store: {ds.n_orders:,} orders, {ds.n_customers:,} customers, {ds.n_events:,} events "
        f"in {escape(str(ds.folder))} ({ds.seconds:.1f}s)"
    )
    _report_run(res)
    if "report" in res.outputs:
        console.print(
            f"\nreport: [bold]{escape(str(res.outputs['report']))}[/bold] (open it in a browser)"
        )
    console.print(
        f"\nnext: [bold]{escape(f'fastseg run {ds.orders} --customers {ds.customers} --events {ds.events} --rules my_segments.toml')}[/bold]"
    )


@app.command("segment")
@_friendly
def segment_cmd(
    scores: Annotated[
        str,
        typer.Argument(
            help="A scores file written by `fastseg score` (Parquet, CSV, Arrow).", metavar="SCORES"
        ),
    ],
    rules: RulesOpt = None,
    builtin: BuiltinOpt = True,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Date relative dates in rules count from (default: the latest last_order_date).",
            metavar="DATE",
        ),
    ] = None,
    layout: Annotated[
        Layout,
        typer.Option(
            "--layout",
            help="long (customer_id, segment), wide (one boolean column per segment) or bitset (.npz).",
        ),
    ] = Layout.long,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output file for the membership.", metavar="FILE")
    ] = Path("segments.parquet"),
    clusters: Annotated[
        Path | None,
        typer.Option(
            "--clusters",
            help="Clusters of these customers (written by `fastseg cluster --out`): join cluster and cluster_label on customer_id, for rules such as cluster_label = 'recent · frequent · high spend'.",
            metavar="FILE",
        ),
    ] = None,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Evaluate segments over a scores file."""
    from fastseg import api

    with _reporter(quiet, log_format) as rep:
        seg = api.segment(
            str(scores),
            rules,
            builtin=builtin,
            as_of=as_of,
            out=out,
            layout=layout.value,
            clusters=clusters,
            progress=rep,
        )
        rep.done(command="segment", customers=seg.n_customers, outputs=[str(out)])
    if quiet:
        return
    _print_segments(seg)
    console.print(f"membership ({layout.value}) written to [bold]{escape(str(out))}[/bold]")


def _k_value(text: str | None) -> int | str | None:
    """--k as the API takes it: a whole number, "auto", or the text itself (the API's one-line
    error names the allowed values)."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else text


def _print_profile(res: Any) -> None:
    prof = res.profile
    feats = [c for c in prof.columns if c.startswith("mean_")]
    num = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    _print_table(
        f"Clusters ({res.k}, {'fitted' if res.fitted else 'from the saved model'})",
        ("cluster", "label", "customers", "share", "revenue", "rev. share", *feats),
        [
            (
                "" if r["cluster"] is None else str(r["cluster"]),
                escape(r["label"]),
                f"{r['customers']:,}",
                num(r["share"], ".1%"),
                num(r["revenue"], ",.0f"),
                num(r["revenue_share"], ".1%"),
                *(num(r[f], ",.2f") for f in feats),
            )
            for r in prof.iter_rows(named=True)
        ],
        left=2,
    )
    if res.silhouette:
        best = res.k
        scores = ", ".join(
            f"{'[bold]' if k == best else ''}k={k} {'n/a' if s is None else f'{s:.3f}'}"
            f"{'[/bold]' if k == best else ''}"
            for k, s in res.silhouette.items()
        )
        console.print(f"silhouette (higher is better): {scores}; chose k={best}")


@app.command("cluster")
@_friendly
def cluster_cmd(
    scores: Annotated[
        str,
        typer.Argument(
            help="Scores written by `fastseg score` (Parquet, CSV, Arrow) or a run folder.",
            metavar="SCORES",
        ),
    ],
    k: Annotated[
        str | None,
        typer.Option(
            "--k",
            help="Number of clusters, 2 to 100 (default 5), or auto: the k from 2 to 8 with the best silhouette score.",
            metavar="K|auto",
        ),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="Numeric score columns to cluster on, comma-separated (default: recency_days,frequency,monetary).",
            metavar="COLS",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Seed of k-means and of the silhouette sample (default 0).", min=0
        ),
    ] = None,
    model_in: Annotated[
        Path | None,
        typer.Option(
            "--model-in",
            help="Assign with a saved model (from --model-out) instead of fitting: the same clusters as the day it was fit.",
            metavar="FILE",
        ),
    ] = None,
    model_out: Annotated[
        Path | None,
        typer.Option(
            "--model-out",
            help="Save the fitted model (scaling, centroids, labels) as JSON, for --model-in.",
            metavar="FILE",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output file: customer_id, cluster, cluster_label (Parquet or CSV by the suffix).",
            metavar="FILE",
        ),
    ] = Path("clusters.parquet"),
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    r"""Behavioural clusters (k-means on standardized features), each with a label and a profile; needs scikit-learn: pip install 'fastseg\[ml]'."""
    from fastseg import api

    with _reporter(quiet, log_format) as rep:
        res = api.cluster(
            scores,
            k=_k_value(k),
            features=features,
            seed=seed,
            model_in=model_in,
            model_out=model_out,
            out=out,
            progress=rep,
        )
        rep.done(command="cluster", customers=res.n_customers, outputs=_outputs_field(res.outputs))
    if quiet:
        return
    _print_profile(res)
    written = ", ".join(escape(str(p)) for p in res.outputs)
    console.print(f"written: [bold]{written}[/bold] in {res.seconds:.2f} s")


@state_app.command("info")
@_friendly
def state_info_cmd(
    folder: Annotated[Path, typer.Argument(help="The state folder (--state DIR).", metavar="DIR")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """What a state folder holds: scoring date, customers, inputs applied, size, what it carries."""
    import json

    from fastseg.state import state_info

    info = state_info(folder).to_dict()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    rows = info["rows"]
    last = info["last_input"]
    lines = [
        ("folder", info["folder"]),
        ("scoring date", f"{info['as_of']} (latest order {info['latest_date']})"),
        ("customers", f"{info['customers']:,} ({info['customer_ids']} ids)"),
        ("inputs applied", f"{info['inputs_applied']:,}"),
        (
            "last input",
            f"{last['source']} ({last['rows_read']:,} rows, applied {last['applied_at']})"
            if last
            else "none",
        ),
        (
            "rows",
            f"{rows['rows_read']:,} read, {rows['rows_used']:,} used, "
            f"{rows['rows_left_out']:,} left out, {rows['exact_duplicate_rows']:,} exact duplicates",
        ),
        ("windows", ", ".join(f"{w}d" for w in info["windows"])),
        ("recent rows", f"{info['recent_rows']:,} (the last {info['keep_days']} days)"),
        ("order lines", "counted once across inputs" if info["order_lines"] else "no order ids"),
        (
            "rule aggregates",
            ", ".join(info["rule_aggregates_carried"])
            or "none carried (windowed ones are recomputed)",
        ),
        ("rule columns kept", ", ".join(info["recent_columns"]) or "none"),
        ("top_category", "kept" if info["top_category"] else "not kept"),
        ("purchase days (--predict)", "kept" if info["purchase_days"] else "not kept"),
        ("edges", info["edges"]),
        ("size", _size(info["bytes"])),
        (
            "made",
            f"{info['created_at']} by fastseg {info['fastseg']}, updated {info['updated_at']}",
        ),
    ]
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for k, v in lines:
        table.add_row(escape(k), escape(str(v)))
    console.print(table)


@segments_app.command("list")
@_friendly
def segments_list(rules: RulesOpt = None, builtin: BuiltinOpt = True) -> None:
    """List the segments of the built-in catalog (and of --rules)."""
    from fastseg import api

    catalog = api.load_rules(rules, builtin=builtin)
    table = Table(title=f"{len(catalog)} segments", title_justify="left")
    table.add_column("segment")
    table.add_column("description")
    for s in catalog.segments:
        table.add_row(escape(s.name), escape(s.description))
    console.print(table)
    for g in catalog.groups:
        console.print(
            f"group [bold]{escape(g.name)}[/bold]: {escape(', '.join(g.segments))} "
            f"(else {escape(g.fallback)})"
        )


@segments_app.command("show")
@_friendly
def segments_show(
    name: Annotated[str, typer.Argument(help="Segment or group name.", metavar="NAME")],
    rules: RulesOpt = None,
    builtin: BuiltinOpt = True,
) -> None:
    """Show one segment's rule and description (or a group's members)."""
    from fastseg import api

    catalog = api.load_rules(rules, builtin=builtin)
    if any(g.name == name for g in catalog.groups):
        g = catalog.group(name)
        console.print(f"[bold]{escape(g.name)}[/bold] (group): {escape(g.description)}")
        console.print(
            f"first match wins: {escape(', '.join(g.segments))}; "
            f"else [italic]{escape(g.fallback)}[/italic]"
        )
        return
    s = catalog.get(name)
    console.print(f"[bold]{escape(s.name)}[/bold]: {escape(s.description)}")
    console.print(s.rule, markup=False, highlight=False)


@segments_app.command("check")
@_friendly
def segments_check(
    file: Annotated[
        Path, typer.Argument(help="Catalog TOML file to validate (no row is read).", metavar="FILE")
    ],
    orders: Annotated[
        list[str] | None,
        typer.Option(
            "--orders",
            help="Check order filters (orders(channel: 'app')) against these orders' columns and "
            "types (repeatable, as `run` takes them).",
            metavar="FILE",
        ),
    ] = None,
    customers: Annotated[
        Path | None,
        typer.Option(
            "--customers",
            help="Check profile fields against this customers file's columns.",
            metavar="FILE",
        ),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(
            "--events",
            help="Check event filters against this events file's columns (and allow the "
            "features of any event type).",
            metavar="FILE",
        ),
    ] = None,
    col: ColOpt = None,
    customers_col: CustomersColOpt = None,
    events_col: EventsColOpt = None,
    windows: WindowsOpt = "30,90,365",
    predict: Annotated[
        bool,
        typer.Option("--predict", help="Allow the fields `run --predict` adds (p_alive, clv...)."),
    ] = False,
    builtin: BuiltinOpt = True,
    fmt: Annotated[
        LogFormat,
        typer.Option(
            "--format",
            help="text (one problem per line, with the rule and a caret) or json (one document "
            "on stdout: file, ok, segments, groups, problems).",
        ),
    ] = LogFormat.text,
) -> None:
    """Validate a catalog: syntax, fields, types, references and cycles, without reading any row.

    Lists every problem with its place (FILE:LINE, the segment, the line and column in the
    rule) and exits 1 if there is any. Without inputs, fields are checked against what fastseg
    documents; give the inputs to check against their columns (Parquet footers, CSV headers).
    """
    from fastseg import api

    _need_input(col, orders and Path(orders[0]), "--col", "--orders")
    _need_input(customers_col, customers, "--customers-col", "--customers")
    _need_input(events_col, events, "--events-col", "--events")
    res = api.check_rules(
        file,
        builtin=builtin,
        orders=_one_or_many(orders) if orders else None,
        customers=customers,
        events=events,
        columns=col or None,
        customer_columns=customers_col or None,
        event_columns=events_col or None,
        windows=_windows(windows),
        predict=predict,
    )
    if fmt is LogFormat.json:
        _print_check_json(res)
    elif res.ok:
        console.print(
            f"[green]ok[/green]: {res.segments} segments, {res.groups} groups ({escape(str(file))})"
        )
    if res.ok:
        return
    for i, problem in enumerate(res.problems if fmt is LogFormat.text else ()):
        where = f"{res.path}:{res.toml_lines[i]}" if i in res.toml_lines else res.path
        console.print(
            f"{where}: {_one_line(problem.located())}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if problem.line and problem.rule and problem.kind != "syntax":
            excerpt, caret = _rule_excerpt(problem.rule, problem.line, problem.column)
            console.print(
                f"    {excerpt}\n    {caret}", markup=False, highlight=False, soft_wrap=True
            )
    from fastseg.errors import RuleError

    if len(res.problems) == 1:
        raise RuleError(f"{res.path}: {res.problems[0].located()}")
    names = list(dict.fromkeys(p.segment for p in res.problems if p.segment))
    which = f" in {', '.join(repr(n) for n in names[:10])}" if names else ""
    more = " ..." if len(names) > 10 else ""
    listed = "listed above" if fmt is LogFormat.text else "in the JSON on stdout"
    msg = f"{res.path}: {len(res.problems)} problems{which}{more} ({listed})"
    raise RuleError(msg)


def _print_check_json(res: Any) -> None:
    import json

    doc = {
        "file": res.path,
        "ok": res.ok,
        "segments": res.segments,
        "groups": res.groups,
        "problems": [
            {
                "segment": p.segment,
                "file_line": res.toml_lines.get(i),
                "line": p.line or None,
                "column": p.column or None,
                "field": p.field,
                "kind": p.kind,
                "message": p.text,
            }
            for i, p in enumerate(res.problems)
        ],
    }
    sys.stdout.write(json.dumps(doc, ensure_ascii=True) + "\n")
    sys.stdout.flush()


def _rule_excerpt(rule: str, line: int, column: int, context: int = 30) -> tuple[str, str]:
    """The rule's line around a place (control characters shown escaped) and a caret below."""
    lines = rule.split("\n")
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    start = max(0, column - 1 - context)
    before, after = text[start : column - 1], text[column - 1 : column - 1 + context]
    shown_before = _visible(before)
    head = "…" if start > 0 else ""
    tail = "…" if column - 1 + context < len(text) else ""
    return head + shown_before + _visible(after) + tail, " " * (len(head) + len(shown_before)) + "^"


def _visible(text: str) -> str:
    """Text with control characters (ANSI escapes, tabs) written as escapes."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


@app.command()
@_friendly
def bench(
    orders: Annotated[
        str | None,
        typer.Option(
            "--orders",
            help="Order counts to measure, each in a fresh process (default 1e6,1e7,3e7; with --whole-process 1e7).",
            metavar="N[,N...]",
        ),
    ] = None,
    customers_per_order: Annotated[
        float,
        typer.Option(
            "--customers-per-order", help="Customers generated per order (0 < x <= 1).", metavar="X"
        ),
    ] = 0.1,
    segments: Annotated[
        str,
        typer.Option(
            "--segments",
            help="'builtin' (the built-in catalog) or N synthetic rules over the score fields.",
            metavar="builtin|N",
        ),
    ] = "builtin",
    repeat: Annotated[
        int,
        typer.Option(
            "--repeat",
            min=1,
            max=100,
            help="Runs per size; the first (kernel load) is reported apart, the median is over the others. "
            "With --whole-process: timed rounds per shape, after one untimed warm-up; medians over them.",
            metavar="N",
        ),
    ] = 3,
    target_orders: Annotated[
        str | None,
        typer.Option(
            "--target-orders",
            help="Predict time and memory for this many orders (e.g. 2e9).",
            metavar="N",
        ),
    ] = None,
    target_customers: Annotated[
        str | None,
        typer.Option(
            "--target-customers",
            help="... and this many customers (default: --customers-per-order x orders).",
            metavar="N",
        ),
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines",
            help="Also time the pandas, plain Polars and DuckDB recipes on the same data (needs "
            "pandas and DuckDB: pip install 'fastseg\\[bench]').",
        ),
    ] = False,
    whole_process: Annotated[
        bool,
        typer.Option(
            "--whole-process",
            help="Time `fastseg score` and the Polars, DuckDB and pandas scripts as fresh processes, "
            "spawn to exit, with peak RSS, on each id shape of --shapes (the pandas and DuckDB "
            "contenders need pip install 'fastseg\\[bench]').",
        ),
    ] = False,
    shapes: Annotated[
        str,
        typer.Option(
            "--shapes",
            help="With --whole-process: some of tiny (1,000 orders: the fixed cost), dense, sparse, "
            "store13, uuid, csv.",
            metavar="SHAPES",
        ),
    ] = "tiny,dense,sparse,store13,uuid,csv",
    contenders: Annotated[
        str,
        typer.Option(
            "--contenders",
            help="With --whole-process: some of fastseg, polars, duckdb, pandas (fastseg always runs).",
            metavar="NAMES",
        ),
    ] = "fastseg,polars,duckdb,pandas",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="With --whole-process: where the order files are cached and reused "
            "(default: fastseg-bench-data in the system's temp folder).",
            metavar="DIR",
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Write the full report as JSON to this file.", metavar="FILE"),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the generated data.", metavar="N")
    ] = 0,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            help="Folder for the temporary data (default: the system's temp folder).",
            metavar="DIR",
        ),
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            "--memory-limit",
            help="With --whole-process: run `fastseg score --memory-limit SIZE` and say whether its peak RSS stayed under SIZE (a run in buckets on disk when the state would not fit).",
            metavar="SIZE",
        ),
    ] = None,
) -> None:
    """Measure the main job on this machine, stage by stage, and size a machine for your data.

    With --whole-process: `fastseg score` against the scripts users write, as fresh processes.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fastseg.bench import stages as fbench

    if whole_process:
        given = [
            name
            for name, value in (
                ("--baselines", baselines),
                ("--target-orders", target_orders),
                ("--target-customers", target_customers),
                ("--segments", segments != "builtin"),
            )
            if value
        ]
        if given:
            raise typer.BadParameter(
                f"{', '.join(given)} cannot be combined with --whole-process (it times `fastseg "
                "score` against the recipes; run the stage bench separately)",
                param_hint="--whole-process",
            )
    elif memory_limit is not None:
        raise typer.BadParameter(
            "--memory-limit goes with --whole-process (it runs `fastseg score --memory-limit`)",
            param_hint="--memory-limit",
        )
    if memory_limit is not None:
        from fastseg.buckets import parse_size

        parse_size(memory_limit)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = bar.add_task("starting", total=None)
    t0 = time.perf_counter()
    last: list[str] = []

    def progress(done: int, total: int, label: str) -> None:
        if err.is_terminal:
            bar.update(task, completed=done, total=total, description=label)
        elif [label] != last:  # a log: one line per step, as it starts or ends
            last[:] = [label]
            _stderr_line(
                f"fastseg bench: [{done}/{total}] {label}  ({time.perf_counter() - t0:.1f} s)"
            )

    if whole_process:
        from fastseg.bench import whole as bench_whole

        with bar:
            whole = bench_whole.run_whole_process(
                orders or "1e7",
                shapes=shapes,
                contenders=contenders,
                repeat=repeat,
                customers_per_order=customers_per_order,
                seed=seed,
                data_dir=data_dir,
                workdir=workdir,
                json_path=json_path,
                progress=progress,
                memory_limit=memory_limit,
            )
        _print_table(
            "whole process, spawn to exit: median time · peak RSS "
            "(fastseg vs best: the faster of Polars and DuckDB; memory = fastseg peak / its peak)",
            whole.HEADERS,
            whole.rows(),
            left=1,
        )
        for line in whole.summary_lines():
            console.print(line, markup=False, highlight=False)
        if whole.json_path:
            console.print(f"report written to [bold]{escape(str(whole.json_path))}[/bold]")
        return
    with bar:
        report = fbench.run_bench(
            orders or "1e6,1e7,3e7",
            customers_per_order=customers_per_order,
            segments=segments,
            repeat=repeat,
            target_orders=_count(target_orders, "--target-orders") if target_orders else None,
            target_customers=_count(target_customers, "--target-customers")
            if target_customers
            else None,
            baselines=baselines,
            json_path=json_path,
            seed=seed,
            workdir=workdir,
            progress=progress,
        )
    tables = [
        (
            "fastseg main job, stage by stage (median of the steady runs; first = kernel load)",
            report.STAGE_HEADERS,
            report.stage_rows(),
        )
    ]
    if baselines:
        tables.append(
            (
                "read→scores: fastseg vs the recipes users write (speed: recipe time / fastseg time; memory: fastseg peak / recipe peak)",
                report.BASELINE_HEADERS,
                report.baseline_rows(),
            )
        )
    for title, headers, rows in tables:
        _print_table(title, headers, rows, left=2)
    for line in report.summary_lines():
        console.print(line, markup=False, highlight=False)
    if report.json_path:
        console.print(f"report written to [bold]{escape(str(report.json_path))}[/bold]")


def _print_table(title: str, headers: Any, rows: Any, *, left: int) -> None:
    """A report table: the first ``left`` columns left-aligned, the figures right-aligned."""
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < left else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
