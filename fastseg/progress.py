"""Progress of a job's long stages, for the person or the pipeline watching it.

A job is timed by a :class:`Stopwatch`: each stage is one ``with watch.stage("orders",
total=n) as st:`` block, whose loop calls ``st.advance(rows)`` once per batch (never per row).
The same block feeds the stopwatch's seconds (``run.json``'s ``timings_seconds``) and the
stopwatch's :class:`Reporter`, so the two never disagree.

Reporters (the API's default is the silent :class:`Reporter`; the CLI picks one with
:func:`reporter`):

:class:`Live`
    A rich progress display on a terminal: per stage its rows, rows/s and, when the row count
    is known (Parquet footers, or the planning query), an ETA. Transient: it is gone when the
    job ends.
:class:`TextLines`
    One plain line per finished stage, ``fastseg: orders  10,000,000 rows  3.21 s  (3.1M
    rows/s)``; a line when a stage that may be long starts (compiling the kernels); and, in a
    stage that runs long, a line every :data:`HEARTBEAT_S` seconds with the rows so far.
:class:`JsonLines`
    The same as one JSON object per line (``{"event": "stage", ...}``, a final ``{"event":
    "done", ...}``), with plain numbers.

This module imports neither Polars nor Numba (the CLI builds a reporter before it imports them).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

__all__ = [
    "HEARTBEAT_S",
    "JsonLines",
    "Live",
    "Reporter",
    "Stage",
    "Stopwatch",
    "TextLines",
    "format_duration",
    "format_rate",
    "reporter",
]

#: seconds between the progress lines of a long stage in a log (text and JSON)
HEARTBEAT_S = 15.0
#: the prefix of every text line
PREFIX = "fastseg: "


def format_rate(per_s: float | None, unit: str = "rows") -> str:
    """``3.1M rows/s``, ``850k rows/s``, ``120 rows/s``; blank when unknown or not finite."""
    if per_s is None or not per_s >= 0 or per_s == float("inf"):
        return ""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_s >= div:
            value = per_s / div
            return f"{value:.{1 if value < 100 else 0}f}{suffix} {unit}/s"
    return f"{per_s:.0f} {unit}/s"


def format_duration(seconds: float | None) -> str:
    """``0.42 s``, ``26 s``, ``4:05`` (minutes), ``1:02:03`` (hours); blank when unknown."""
    if seconds is None or not seconds >= 0 or seconds == float("inf"):
        return ""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Stage:
    """One running stage: what it counts, how far it got. Given by :meth:`Stopwatch.stage`."""

    __slots__ = ("name", "label", "unit", "total", "rows", "note", "t0", "seconds", "_reporter")

    def __init__(
        self,
        name: str,
        reporter: Reporter,
        *,
        label: str | None = None,
        unit: str = "rows",
        total: int | None = None,
        note: str | None = None,
    ) -> None:
        self.name, self.label, self.unit = name, label or name, unit
        self.total, self.note = total, note
        self.rows: int | None = None  # None: the stage counts nothing
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        self._reporter = reporter

    def advance(self, rows: int) -> None:
        """``rows`` more done (call it per batch)."""
        self.rows = (self.rows or 0) + int(rows)
        self._reporter.advanced(self)

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` rows so far (of ``total``, when it became known)."""
        if total is not None:
            self.total = int(total)
        self.rows = int(done)
        self._reporter.advanced(self)

    def restart(self) -> None:
        """The rows are read again from the start (a second pass): count from zero."""
        self.update(0)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def rate(self, seconds: float | None = None) -> float | None:
        """Rows per second (None: nothing counted, or too short to rate)."""
        s = self.elapsed if seconds is None else seconds
        if not self.rows or s < 1e-3:
            return None
        return self.rows / s

    def eta(self) -> float | None:
        """Seconds left at the rate so far (None: no total or no rate yet)."""
        rate = self.rate()
        if self.total is None or rate is None or self.rows is None:
            return None
        return max(self.total - self.rows, 0) / rate


class Reporter:
    """Silent: the base of the renderers, and what the API uses when given none."""

    #: a silent reporter: callers skip work done only to be shown (the kernel warm-up)
    silent = True

    def started(self, stage: Stage) -> None:
        """A stage began."""

    def advanced(self, stage: Stage) -> None:
        """A stage counted more rows (per batch)."""

    def finished(self, stage: Stage, ok: bool = True) -> None:
        """A stage ended (``ok`` False: by an exception)."""

    def done(self, **fields: Any) -> None:
        """The job ended well; ``fields`` (plain values) describe what it produced."""

    def close(self) -> None:
        """Stop any display (also after an error)."""

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SILENT = Reporter()


class Stopwatch:
    """Wall time per named stage, in the order the stages ran, told to ``progress`` as they go.

    A stage entered twice adds up in :attr:`seconds` (one entry in ``run.json``); the reporter
    hears of each entry unless it is entered with ``show=False``.
    """

    def __init__(self, progress: Reporter | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress: Reporter = progress if progress is not None else SILENT

    @contextmanager
    def stage(
        self,
        name: str,
        *,
        total: int | None = None,
        label: str | None = None,
        unit: str = "rows",
        note: str | None = None,
        show: bool = True,
    ) -> Iterator[Stage]:
        """Time the block as stage ``name``; the :class:`Stage` given counts its rows."""
        rep = self.progress if show else SILENT
        st = Stage(name, rep, label=label, unit=unit, total=total, note=note)
        rep.started(st)
        ok = False
        try:
            yield st
            ok = True
        finally:
            st.seconds = time.perf_counter() - st.t0
            self.seconds[name] = self.seconds.get(name, 0.0) + st.seconds
            rep.finished(st, ok)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def _stderr_line(line: str) -> None:
    stream = sys.stderr  # looked up per line: test runners swap it
    stream.write(line + "\n")
    stream.flush()


class _Lines(Reporter):
    """What the text and JSON renderers share: a sink for lines, heartbeats, the job's clock."""

    silent = False

    def __init__(
        self,
        write: Callable[[str], None] | IO[str] | None = None,
        *,
        heartbeat: float = HEARTBEAT_S,
    ) -> None:
        if write is None:
            self._write: Callable[[str], None] = _stderr_line
        elif callable(write):
            self._write = write
        else:
            stream = write
            self._write = lambda line: (stream.write(line + "\n"), stream.flush())  # type: ignore[func-returns-value]
        self.heartbeat = heartbeat
        self.t0 = time.perf_counter()
        self._beat = 0.0

    def started(self, stage: Stage) -> None:
        self._beat = time.perf_counter() + self.heartbeat
        if stage.note:
            self.note(stage)

    def advanced(self, stage: Stage) -> None:
        now = time.perf_counter()
        if now >= self._beat:
            self._beat = now + self.heartbeat
            self.beat(stage)

    def note(self, stage: Stage) -> None:
        raise NotImplementedError

    def beat(self, stage: Stage) -> None:
        raise NotImplementedError


class TextLines(_Lines):
    """One plain line per finished stage (``fastseg: orders  1,000 rows  0.01 s``)."""

    def note(self, stage: Stage) -> None:
        self._write(f"{PREFIX}{stage.note}...")

    def beat(self, stage: Stage) -> None:
        rows = stage.rows or 0
        parts = [f"{rows:,}" + (f" of {stage.total:,}" if stage.total else "") + f" {stage.unit}"]
        if stage.total:
            parts[0] += f" ({min(rows / stage.total, 1.0):.0%})"
        parts.append(format_rate(stage.rate(), stage.unit))
        eta = format_duration(stage.eta())
        if eta:
            parts.append(f"ETA {eta}")
        self._write(f"{PREFIX}{stage.label}  " + "  ".join(p for p in parts if p))

    def finished(self, stage: Stage, ok: bool = True) -> None:
        if not ok:
            return
        self._write(stage_line(stage))

    def done(self, **fields: Any) -> None:
        self._write(f"{PREFIX}done  {format_duration(time.perf_counter() - self.t0)}")


def stage_line(stage: Stage) -> str:
    """A finished stage as one text line: its label, rows, seconds and rate."""
    parts = [stage.label]
    if stage.rows is not None:
        parts.append(f"{stage.rows:,} {stage.unit}")
    parts.append(format_duration(stage.seconds))
    rate = format_rate(stage.rate(stage.seconds), stage.unit) if stage.unit == "rows" else ""
    line = PREFIX + "  ".join(parts)
    return f"{line}  ({rate})" if rate else line


class JsonLines(_Lines):
    """One JSON object per line: ``start`` (a long stage begins), ``progress`` (heartbeats),
    ``stage`` (one per finished stage) and a final ``done``."""

    def _emit(self, doc: dict[str, Any]) -> None:
        self._write(json.dumps(doc, separators=(", ", ": ")))

    def note(self, stage: Stage) -> None:
        self._emit({"event": "start", "stage": stage.name, "message": stage.note})

    def beat(self, stage: Stage) -> None:
        self._emit(
            {
                "event": "progress",
                "stage": stage.name,
                "rows": stage.rows,
                "total_rows": stage.total,
                "seconds": round(stage.elapsed, 4),
            }
        )

    def finished(self, stage: Stage, ok: bool = True) -> None:
        if not ok:
            return
        rate = stage.rate(stage.seconds)
        self._emit(
            {
                "event": "stage",
                "stage": stage.name,
                "seconds": round(stage.seconds, 4),
                "rows": stage.rows,
                "unit": stage.unit if stage.rows is not None else None,
                "total_rows": stage.total,
                "rows_per_s": round(rate, 1) if rate is not None else None,
            }
        )

    def done(self, **fields: Any) -> None:
        doc = {"event": "done", "seconds": round(time.perf_counter() - self.t0, 4)}
        self._emit({**doc, **fields})


class Live(Reporter):
    """A rich progress display on ``console`` (a terminal): one transient bar per stage."""

    silent = False

    def __init__(self, console: Any) -> None:
        self.console = console
        self._progress: Any = None
        self._tasks: dict[int, Any] = {}

    def _display(self) -> Any:
        if self._progress is None:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                _rows_column(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self._progress

    def started(self, stage: Stage) -> None:
        p = self._display()
        text = f"{stage.label}: {stage.note}" if stage.note else stage.label
        self._tasks[id(stage)] = p.add_task(text, total=stage.total, unit=None)

    def advanced(self, stage: Stage) -> None:
        task = self._tasks.get(id(stage))
        if task is not None:
            self._progress.update(task, completed=stage.rows, total=stage.total, unit=stage.unit)

    def finished(self, stage: Stage, ok: bool = True) -> None:
        task = self._tasks.pop(id(stage), None)
        if task is not None:
            self._progress.remove_task(task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()


def _rows_column() -> Any:
    """A rich column: rows done (of the total), rows/s and the time left, as rich measures
    them; the elapsed time for a stage that counts nothing."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RowsColumn(ProgressColumn):
        def render(self, task: Any) -> Any:
            unit = task.fields.get("unit")
            if not unit:
                return Text(format_duration(task.elapsed), style="progress.elapsed")
            done = f"{int(task.completed):,}"
            if task.total:
                done += f"/{int(task.total):,}"
            parts = [f"{done} {unit}", format_rate(task.speed, unit)]
            if task.total and task.time_remaining is not None:
                parts.append(f"ETA {format_duration(task.time_remaining)}")
            return Text("  ".join(p for p in parts if p), style="progress.data.speed")

    return RowsColumn()


def reporter(log_format: str = "text", *, quiet: bool = False, console: Any = None) -> Reporter:
    """The reporter a command uses: silent with ``quiet``; JSON lines with ``log_format="json"``;
    else a live display when ``console`` (rich, on stderr) is a terminal, plain lines if not."""
    if quiet:
        return Reporter()
    if log_format == "json":
        return JsonLines()
    if console is not None and console.is_terminal:
        return Live(console)
    return TextLines()
