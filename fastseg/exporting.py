"""Audience exports (``fastseg export``, :func:`fastseg.export`): who is in a segment, as files for an email tool or an
ad platform.

For every segment asked for, ``NAME.csv`` (or ``NAME.parquet``): ``customer_id`` then the chosen
columns, one row per member, in the run's customer order. With ``changes=True`` (a run made with
``previous``) also ``NAME.added.csv`` (customers who joined the segment since the previous run)
and ``NAME.removed.csv`` (who left it). ``manifest.json`` lists every file: segment, kind, rows,
the rows whose identifiers have no usable value (per column and reason) and the file's SHA-256.
The folder is committed as one set (:class:`fastseg.outputs.OutputSet`): it holds the complete
previous export or the complete new one, never a mix; everything that can be checked without
reading rows (segments, columns, options, the target folder) is checked before anything is
written.

Identifiers
-----------
Columns named ``email`` or ``*_email`` hold email addresses, ``phone`` or ``*_phone`` phone
numbers. They are normalized the way Google Customer Match and Meta Custom Audiences document
it, so that the same person gives the same value (and the same hash) everywhere:

- **email**: leading and trailing white space removed (Unicode ``White_Space``), lower-cased
  (Unicode). Usable when the result matches ``^[a-z0-9_.+-]+@[a-z0-9-]+\\.[a-z0-9-.]+$``, the
  pattern of Meta's business SDK (:data:`EMAIL_PATTERN`). Dots and ``+tags`` are kept: Google
  accepts Gmail addresses with their dots, and neither platform asks to drop tags.
- **phone**: E.164 (``+``, country code, number: ``+14155552671``) by phonenumbers, the Python
  port of Google's libphonenumber, and usable only when libphonenumber calls the number valid.
  A number starting with ``+`` or ``00`` carries its country code; any other needs
  ``default_country`` (an ISO region such as ``US``), whose national and international
  prefixes are then understood too (``011 44 ...`` from the US). Without it such a number is
  invalid (counted as ``no_country_code`` too, and the notes say to give ``--default-country``).
- other columns (``first_name``...) are written as they are.

With ``hash="sha256"`` the lowercase hex SHA-256 of the normalized value (UTF-8) replaces it,
under the same column name. A value that is null or blank is **missing**, one that does not
normalize is **invalid**: the row is still written (the segment's file has every member), with a
null in that column, and counted per file, column and reason in ``manifest.json``.

Normalization runs once per distinct value: emails vectorized in Polars, phones through
phonenumbers, hashes through hashlib.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fastseg.errors import InputError, ParameterError, SchemaError
from fastseg.progress import Reporter, Stopwatch

if TYPE_CHECKING:
    from fastseg.outputs import OutputSet
    from fastseg.runs import RunFolder

__all__ = [
    "EMAIL_PATTERN",
    "EXPORT_FORMAT",
    "MANIFEST",
    "ExportFile",
    "ExportResult",
    "email_status",
    "export_run",
    "identifier_kind",
    "normalize_email",
    "normalize_phone",
    "normalize_phones",
    "sha256_hex",
]

EXPORT_FORMAT = "fastseg-export-1"
MANIFEST = "manifest.json"
HASHES = ("sha256",)
FORMATS = ("csv", "parquet")
#: the files of one segment: its members, and with ``changes`` who joined and who left
KINDS = {"members": "", "added": ".added", "removed": ".removed"}
#: Meta's email pattern (facebook-python-business-sdk, ``adobjects/serverside/normalize.py``),
#: applied to the trimmed, lower-cased value
EMAIL_PATTERN = r"^[a-z0-9_.+-]+@[a-z0-9-]+\.[a-z0-9-.]+$"
OK, MISSING, INVALID, NO_COUNTRY = "ok", "missing", "invalid", "no_country_code"
STATUS = pl.Enum([OK, MISSING, INVALID, NO_COUNTRY])
#: segment names usable as file names as they are (the catalog's names always are)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")
_STATUS_PREFIX = "__status_"


# -------------------------------------------------------------------------------- identifiers


def identifier_kind(column: str) -> str | None:
    """``"email"``, ``"phone"`` or None: what a column holds, by its name (``email``,
    ``work_email``, ``phone``, ``mobile_phone``...).

    >>> identifier_kind("work_email"), identifier_kind("phone"), identifier_kind("first_name")
    ('email', 'phone', None)
    """
    for kind in ("email", "phone"):
        if column == kind or column.endswith(f"_{kind}"):
            return kind
    return None


def normalize_email(values: pl.Series) -> pl.Series:
    """Emails trimmed of white space and lower-cased (nulls stay null; no validity check).

    >>> normalize_email(pl.Series([" Foo.Bar@Example.COM "])).to_list()
    ['foo.bar@example.com']
    """
    return _as_text(values).str.strip_chars().str.to_lowercase()


def _as_text(values: pl.Series) -> pl.Series:
    """Identifier values as text; a nested value (a list, a struct) cannot be one: it reads as
    text no address or number matches, so it counts as invalid, never dropped."""
    if isinstance(values.dtype, pl.List | pl.Array | pl.Struct | pl.Object):
        return (
            pl.select(
                pl.when(pl.lit(values).is_null()).then(None).otherwise(pl.lit("<nested value>"))
            )
            .to_series()
            .rename(values.name)
        )
    return values.cast(pl.String)


def email_status(normalized: pl.Series) -> pl.Series:
    """``ok``, ``missing`` (null or empty) or ``invalid`` for emails from :func:`normalize_email`."""
    s = pl.col("v")
    status = (
        pl.when(s.is_null() | (s == ""))
        .then(pl.lit(MISSING))
        .when(s.str.contains(EMAIL_PATTERN))
        .then(pl.lit(OK))
        .otherwise(pl.lit(INVALID))
    )
    return normalized.to_frame("v").select(status.cast(STATUS)).to_series()


def normalize_phone(text: str | None, default_country: str | None = None) -> tuple[str | None, str]:
    """One phone number in E.164 and its status: ``(e164, "ok")``, or ``(None, reason)`` with
    reason ``missing``, ``invalid`` or ``no_country_code`` (no ``+``/``00`` prefix and no
    ``default_country``).

    >>> normalize_phone("(415) 555-2671", "US")
    ('+14155552671', 'ok')
    >>> normalize_phone("0044 20 7946 0958")
    ('+442079460958', 'ok')
    >>> normalize_phone("020 7946 0958")
    (None, 'no_country_code')
    """
    import phonenumbers as pn

    if text is None or not text.strip():
        return None, MISSING
    s = text.strip()
    if s.startswith("+"):
        tries: list[tuple[str, str | None]] = [(s, None)]
    elif s.startswith("00"):  # the international prefix of most countries, ITU-T's advice
        tries = [(s, default_country)] if default_country else []
        tries.append(("+" + s[2:], None))
    elif default_country:
        tries = [(s, default_country)]
    else:
        return None, NO_COUNTRY
    for value, region in tries:
        try:
            number = pn.parse(value, region)
        except pn.NumberParseException:
            continue
        if pn.is_valid_number(number):
            return pn.format_number(number, pn.PhoneNumberFormat.E164), OK
    return None, INVALID


def _per_distinct(values: pl.Series, fn: Any, dtypes: Sequence[pl.DataType]) -> list[pl.Series]:
    """Apply ``fn`` (value -> tuple of outputs) once per distinct non-null value of ``values``;
    the outputs aligned with ``values`` (nulls: null outputs)."""
    distinct = values.drop_nulls().unique()
    results = [fn(v) for v in distinct.to_list()]
    names = [f"_o{i}" for i in range(len(dtypes))]
    table = pl.DataFrame(
        {"v": distinct, **{n: [r[i] for r in results] for i, n in enumerate(names)}},
        schema={"v": values.dtype, **dict(zip(names, dtypes, strict=True))},
    )
    joined = values.to_frame("v").join(table, on="v", how="left", maintain_order="left")
    return [joined[n] for n in names]


def normalize_phones(
    values: pl.Series, default_country: str | None = None, regions: pl.Series | None = None
) -> tuple[pl.Series, pl.Series]:
    """Phone numbers in E.164 (null where unusable) and their status (:data:`STATUS`), parsed
    once per distinct value (:func:`normalize_phone`). ``regions``: each row's own ISO region
    for a number without a country code (a customer's country); ``default_country`` where it is
    empty or not a region phone numbers know.

    >>> e164, _ = normalize_phones(pl.Series(["020 7946 0958", "(415) 555-2671"]), "US",
    ...                            regions=pl.Series(["gb", None]))
    >>> e164.to_list()
    ['+442079460958', '+14155552671']
    """
    text = _as_text(values).str.strip_chars()
    if regions is None:
        e164, status = _per_distinct(
            text, lambda v: normalize_phone(v, default_country), [pl.String(), pl.String()]
        )
    else:
        import phonenumbers as pn

        known = sorted(pn.SUPPORTED_REGIONS)
        region = _as_text(regions).str.strip_chars().str.to_uppercase()
        region = pl.select(
            pl.when(pl.lit(region).is_in(known))
            .then(pl.lit(region))
            .otherwise(pl.lit(default_country, pl.String))
        ).to_series()
        # one parse per distinct (number, region): the key joins them with a unit separator
        key = pl.select(
            pl.when(pl.lit(text).is_not_null()).then(
                pl.concat_str([pl.lit(text), pl.lit(region).fill_null("")], separator="\x1f")
            )
        ).to_series()

        def parse(k: str) -> tuple[str | None, str]:
            number, _, where = k.rpartition("\x1f")
            return normalize_phone(number, where or None)

        e164, status = _per_distinct(key, parse, [pl.String(), pl.String()])
    status = status.fill_null(MISSING).cast(STATUS)
    return e164, status


def sha256_hex(values: pl.Series) -> pl.Series:
    """The lowercase hex SHA-256 of each value's UTF-8 bytes (nulls stay null), hashed once per
    distinct value.

    >>> sha256_hex(pl.Series(["a@b.co"])).item() == hashlib.sha256(b"a@b.co").hexdigest()
    True
    """
    (out,) = _per_distinct(
        values.cast(pl.String),
        lambda v: (hashlib.sha256(v.encode("utf-8")).hexdigest(),),
        [pl.String()],
    )
    return out


def normalize_identifiers(
    frame: pl.DataFrame,
    columns: Iterable[str],
    *,
    hash: str | None = None,
    default_country: str | None = None,
    phone_country: str | None = None,
) -> pl.DataFrame:
    """``frame`` with each identifier column of ``columns`` normalized (or hashed; null where
    unusable) and a ``__status_COLUMN`` column beside it (:data:`STATUS`); phone numbers without
    a country code read in the region of the ``phone_country`` column of their row when given,
    else ``default_country``."""
    out = []
    for col in columns:
        kind = identifier_kind(col)
        if kind is None:
            continue
        if kind == "email":
            value = normalize_email(frame[col])
            status = email_status(value)
            value = pl.select(pl.when(status == OK).then(value)).to_series()
        else:
            regions = frame[phone_country] if phone_country is not None else None
            value, status = normalize_phones(frame[col], default_country, regions)
        if hash == "sha256":
            value = sha256_hex(value)
        out += [value.alias(col), status.alias(_STATUS_PREFIX + col)]
    return frame.with_columns(out) if out else frame


# -------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ExportFile:
    """One file of an export."""

    path: Path
    segment: str
    kind: str  # members, added or removed
    rows: int
    #: per identifier column: rows whose value is ``missing`` or ``invalid`` (and, for phones,
    #: ``no_country_code``: the invalid ones without a country code)
    unusable: dict[str, dict[str, int]]
    #: rows with no usable identifier at all (0 when no identifier column is exported)
    no_identifier: int
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "kind": self.kind,
            "rows": self.rows,
            "unusable": self.unusable,
            "rows_without_identifier": self.no_identifier,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


@dataclass
class ExportResult:
    """What :func:`fastseg.export` wrote: the folder, each file, and what a reader must know."""

    out: Path
    run: Path
    run_id: str | None
    as_of: str
    segments: list[str]
    columns: list[str]
    identifiers: dict[str, str]  # column -> email / phone
    hash: str | None
    files: list[ExportFile]
    notes: list[str]
    manifest: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def summary(self) -> pl.DataFrame:
        """One row per file: ``file``, ``segment``, ``kind``, ``rows``, and per identifier
        column ``COLUMN_missing`` and ``COLUMN_invalid``."""
        rows = []
        for f in self.files:
            row: dict[str, Any] = {
                "file": f.path.name,
                "segment": f.segment,
                "kind": f.kind,
                "rows": f.rows,
            }
            for col in self.identifiers:
                row[f"{col}_missing"] = f.unusable[col]["missing"]
                row[f"{col}_invalid"] = f.unusable[col]["invalid"]
            rows.append(row)
        return pl.DataFrame(rows)


# -------------------------------------------------------------------------------- checks


def _check_options(
    segments: str | Sequence[str],
    columns: str | Sequence[str] | None,
    hash: str | None,
    out_format: str,
    default_country: str | None,
) -> tuple[list[str], list[str] | None, str | None, str, str | None]:
    wanted = [segments] if isinstance(segments, str) else list(segments)
    wanted = list(dict.fromkeys(str(s).strip() for s in wanted if str(s).strip()))
    if not wanted:
        msg = "--segment: give at least one segment to export (see the run's summary.csv)"
        raise ParameterError(msg)
    cols: list[str] | None = None
    if columns is not None:
        items = columns.split(",") if isinstance(columns, str) else list(columns)
        cols = list(dict.fromkeys(c.strip() for c in items if c.strip()))
        if isinstance(columns, str) and not cols:
            msg = (
                "--columns: expected column names separated by commas, e.g. email,phone,first_name"
            )
            raise ParameterError(msg)
        cols = [c for c in cols if c != "customer_id"]  # always the first column
    if hash is not None and hash not in HASHES:
        msg = f"--hash: expected one of {', '.join(HASHES)}, got {hash!r}"
        raise ParameterError(msg)
    if out_format not in FORMATS:
        msg = f"--format: expected one of {', '.join(FORMATS)}, got {out_format!r}"
        raise ParameterError(msg)
    region = None
    if default_country is not None:
        import phonenumbers as pn

        region = str(default_country).strip().upper()
        if region not in pn.SUPPORTED_REGIONS:
            msg = (
                f"--default-country: {default_country!r} is not an ISO 3166 region phone "
                "numbers know; give a two-letter code such as US, GB, DE or FR"
            )
            raise ParameterError(msg)
    return wanted, cols, hash, out_format, region


def _pick_segments(run: RunFolder, names: tuple[str, ...], wanted: list[str]) -> list[int]:
    """The bitset rows of the wanted segments; one line naming an unknown one with the known
    ones (closest first), or a name that cannot be a file name."""
    index = {n: i for i, n in enumerate(names)}
    for name in wanted:
        if name not in index:
            close = difflib.get_close_matches(name, names, n=len(names), cutoff=0.0)
            shown = ", ".join(close[:40]) + (
                f", ... ({len(names)} in all)" if len(names) > 40 else ""
            )
            best = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {best[0]!r}?)" if best else ""
            msg = (
                f"--segment {name!r}: no such segment in {run.path}{hint}; known, closest "
                f"first: {shown or '(none)'}"
            )
            raise ParameterError(msg)
        if not _SAFE_NAME.fullmatch(name):
            msg = (
                f"--segment {name!r}: the name cannot be used as a file name (only letters, digits, "
                "_ and -, not starting with -); rename the segment in the catalog and run again"
            )
            raise ParameterError(msg)
    folded: dict[str, str] = {}
    for name in wanted:
        other = folded.setdefault(name.casefold(), name)
        if other != name:
            msg = (
                f"--segment {other!r} and {name!r} differ only in case, so their files would "
                "collide on some file systems; export them into separate folders"
            )
            raise ParameterError(msg)
    return [index[n] for n in wanted]


def _check_changes(run: RunFolder, wanted: list[str]) -> Path:
    path = run.table("changes")
    prev = run.meta.get("previous")
    if path is None and prev:
        msg = (
            f"--changes: {run.path} was made with --previous but its changes.parquet is missing; "
            "the folder was changed by hand: run fastseg run again"
        )
        raise InputError(msg)
    if path is None:
        msg = (
            f"--changes: {run.path} was made without a previous run, so it records no joined or "
            "left customers; make the run against the earlier one: "
            "fastseg run ORDERS --previous EARLIER_RUN_DIR --out RUN_DIR"
        )
        raise InputError(msg)
    if not isinstance(prev, dict) or not isinstance(prev.get("segments_added") or [], list):
        msg = (
            f"--changes: the 'previous' record of {run.path / 'run.json'} is not one fastseg "
            "wrote; the folder was changed by hand: run fastseg run again"
        )
        raise InputError(msg)
    have = run.columns("changes")
    missing = [c for c in ("customer_id", "segment", "change") if c not in have]
    if missing:
        msg = (
            f"--changes: {path} has no column {missing[0]!r} (found: {', '.join(have)}); the "
            "folder was changed by hand: run fastseg run again"
        )
        raise InputError(msg)
    added = [n for n in wanted if n in set(prev.get("segments_added") or ())]
    if added:
        msg = (
            f"--changes: segment {added[0]!r} is not in the previous run "
            f"({(prev.get('previous') or {}).get('path', 'unknown')}), so it has no joined or "
            "left customers; export it without --changes (every member is new)"
        )
        raise InputError(msg)
    return path


@dataclass(frozen=True)
class _Plan:
    """Where each exported column comes from."""

    columns: list[str]
    from_scores: list[str]
    from_profiles: list[str]


def _profile_names(customers: Any, mapping: Mapping[str, str]) -> list[str]:
    """The columns the profiles will have once loaded (mapped columns under their canonical
    names), from the schema only."""
    from fastseg.io import scan_source

    src = scan_source(customers, what="customers")
    try:
        found = src.frame.collect_schema().names()
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"cannot read {src.label}: {first} (is it a valid {src.kind} file?)"
        raise InputError(msg) from exc
    bad = [(c, t) for c, t in mapping.items() if t not in found]
    if bad:
        canon, theirs = bad[0]
        msg = (
            f"--customers-col {canon}={theirs}: no column {theirs!r} in {src.label} "
            f"(found: {', '.join(found[:40])})"
        )
        raise SchemaError(msg)
    renamed = {theirs: canon for canon, theirs in mapping.items()}
    names = [renamed.get(c, c) for c in found if c not in mapping or c in renamed]
    return [c for c in dict.fromkeys(names) if c != "customer_id"]


def _plan_columns(
    run: RunFolder,
    customers: Any,
    mapping: dict[str, str],
    columns: list[str] | None,
) -> _Plan:
    from fastseg import schema

    scores = [c for c in run.columns("scores") if c != "customer_id"]
    profiles = _profile_names(customers, mapping) if customers is not None else []
    mapped = [c for c in mapping if c != "customer_id"]
    available = list(dict.fromkeys([*scores, *profiles]))
    if columns is None:  # the identifiers there are
        columns = [c for c in available if identifier_kind(c)]
        columns = sorted(
            columns, key=lambda c: (identifier_kind(c) != "email", c not in ("email", "phone"))
        )
    missing = [c for c in columns if c not in available]
    if missing:
        shown = ", ".join(available[:60]) + (
            f", ... ({len(available)} in all)" if len(available) > 60 else ""
        )
        where = f"the run's scores ({run.need('scores')})"
        if missing[0] in schema.CUSTOMER_COLUMNS:
            mapping_fix = (
                f"--customers-col {missing[0]}=THEIRS maps a profile column of another name"
            )
        else:  # only the canonical profile names can be mapped: ask for theirs as it is
            mapping_fix = "ask for a profile column by its own name"
        if customers is not None:
            where += f" or the profiles ({customers})"
            fix = f"choose among them ({mapping_fix})"
        elif not run.meta.get("customers_file"):
            fix = f"the run was made without profiles: give them with --customers PROFILES ({mapping_fix})"
        else:
            fix = f"give profiles that have it with --customers PROFILES ({mapping_fix})"
        close = difflib.get_close_matches(missing[0], available, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        names = ", ".join(repr(c) for c in missing)
        msg = (
            f"--columns: no column {names} in {where}{hint}; available: {shown or '(none)'}; {fix}"
        )
        raise SchemaError(msg)
    from_profiles = [c for c in columns if c in mapped or c not in scores]
    from_scores = [c for c in columns if c not in from_profiles]
    return _Plan(columns, from_scores, from_profiles)


# -------------------------------------------------------------------------------- reading


def _load_profiles(
    customers: Any, mapping: dict[str, str], ids: pl.Series
) -> tuple[pl.DataFrame, Any]:
    """The profiles, mapped columns under their canonical names, ids of the run's type."""
    from fastseg.orders import load_customers

    prof, report = load_customers(customers, columns=mapping)
    for canon, theirs in mapping.items():  # the loader keeps other mapped columns as they are
        if canon != "customer_id" and theirs in prof.columns and theirs != canon:
            prof = prof.drop(canon, strict=False).rename({theirs: canon})
    want, have = ids.dtype, prof.schema["customer_id"]
    if want != have:
        if want == pl.String:
            prof = prof.with_columns(pl.col("customer_id").cast(pl.String))
        else:
            msg = (
                f"--customers: customer ids in {report.source} are text but the run's are "
                "integers; give the profiles the run was made with, or map the matching column "
                "with --customers-col customer_id=COLUMN"
            )
            raise SchemaError(msg)
    return prof, report


def _pool(
    run: RunFolder,
    plan: _Plan,
    need: pl.Series,
    prof: pl.DataFrame | None,
) -> tuple[pl.DataFrame, int]:
    """One row per customer in ``need`` (distinct ids): ``customer_id`` and the plan's columns.
    Customers gone from the run (who left a segment since the previous run) take every column
    from the profiles when given (else null). Also returns how many are gone."""
    in_run = need.is_in(run.customer_ids().implode())
    base = pl.DataFrame({"customer_id": need, "__in_run": in_run})
    gone = int((~in_run).sum())
    if plan.from_scores:
        scores = run.scan("scores", ["customer_id", *plan.from_scores])
        base = base.join(scores, on="customer_id", how="left", maintain_order="left")
    if prof is not None:
        fallback = [c for c in plan.from_scores if c in prof.columns] if gone else []
        take = [*plan.from_profiles, *fallback]
        if take:
            right = prof.select(
                "customer_id", *(pl.col(c).alias(f"__profile_{c}") for c in dict.fromkeys(take))
            )
            base = base.join(right, on="customer_id", how="left", maintain_order="left")
            fills = [pl.col(f"__profile_{c}").alias(c) for c in plan.from_profiles]
            for c in fallback:
                here, there = pl.col(c), pl.col(f"__profile_{c}")
                if base.schema[c] != base.schema[f"__profile_{c}"]:
                    here, there = here.cast(pl.String), there.cast(pl.String)
                fills.append(pl.when("__in_run").then(here).otherwise(there).alias(c))
            base = base.with_columns(fills)
    return base.select("customer_id", *plan.columns), gone


# -------------------------------------------------------------------------------- writing


def _counts(
    frame: pl.DataFrame, identifiers: Sequence[str]
) -> tuple[dict[str, dict[str, int]], int]:
    if not identifiers:
        return {}, 0
    st = [pl.col(_STATUS_PREFIX + c) for c in identifiers]
    exprs = []
    for c, s in zip(identifiers, st, strict=True):
        exprs += [
            (s == MISSING).sum().alias(f"{c}|missing"),
            s.is_in([INVALID, NO_COUNTRY]).sum().alias(f"{c}|invalid"),
            (s == NO_COUNTRY).sum().alias(f"{c}|no_country_code"),
        ]
    exprs.append(pl.all_horizontal([s != OK for s in st]).sum().alias("|none"))
    row = frame.select(exprs).row(0, named=True)
    out: dict[str, dict[str, int]] = {}
    for c in identifiers:
        out[c] = {"missing": int(row[f"{c}|missing"]), "invalid": int(row[f"{c}|invalid"])}
        if identifier_kind(c) == "phone":
            out[c]["no_country_code"] = int(row[f"{c}|no_country_code"])
    return out, int(row["|none"])


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stage_file(
    outs: OutputSet,
    folder: Path,
    frame: pl.DataFrame,
    segment: str,
    kind: str,
    plan: _Plan,
    identifiers: Sequence[str],
    out_format: str,
) -> ExportFile:
    unusable, none = _counts(frame, identifiers)
    target = folder / f"{segment}{KINDS[kind]}.{out_format}"
    outs.write_frame(frame.select("customer_id", *plan.columns), target, out_format)
    staged = outs.path(target)
    return ExportFile(
        path=target,
        segment=segment,
        kind=kind,
        rows=frame.height,
        unusable=unusable,
        no_identifier=none,
        sha256=_file_sha256(staged),
        bytes=staged.stat().st_size,
    )


def _notes(
    files: list[ExportFile],
    plan: _Plan,
    identifiers: Sequence[str],
    hash: str | None,
    gone: int,
    customers: Any,
) -> list[str]:
    notes = []
    for col in identifiers:
        if identifier_kind(col) != "phone":
            continue
        n = sum(f.unusable[col].get("no_country_code", 0) for f in files)
        if n:
            notes.append(
                f"{col}: {n:,} rows have a number without a country code (no leading + or 00), "
                "counted invalid; give --default-country with the ISO region they belong to "
                "(e.g. --default-country US) to read them"
            )
    plain = [c for c in plan.columns if c not in identifiers]
    if hash and plain:
        notes.append(
            f"written as they are, not hashed: {', '.join(plain)} (only email and phone "
            "columns are hashed)"
        )
    if gone and plan.columns and customers is None:
        notes.append(
            f"{gone:,} customers who left a segment are no longer in the run: their columns are "
            "empty in the .removed files; give --customers PROFILES to fill them"
        )
    return notes


def _who(
    run: RunFolder,
    ids: pl.Series,
    words: NDArray[np.uint64],
    wanted: list[str],
    changes_path: Path | None,
) -> tuple[pl.Series, pl.DataFrame | None]:
    """Every customer some file needs (members of any wanted segment, and who left one), and
    the wanted segments' rows of ``changes.parquet`` (None without ``changes``)."""
    from fastseg.kernels import bitset as bs

    union = np.ascontiguousarray(np.bitwise_or.reduce(words, axis=0), dtype=np.uint64)
    need = ids.gather(pl.Series(bs.members(union))).rename("customer_id")
    if changes_path is None:
        return need, None
    moved = (
        run.scan("changes", ["customer_id", "segment", "change"])
        .with_columns(pl.col("segment").cast(pl.String), pl.col("change").cast(pl.String))
        .filter(pl.col("segment").is_in(wanted))
    )
    odd = moved.filter(~pl.col("change").is_in(["joined", "left"]))["change"]
    if len(odd):
        msg = (
            f"--changes: {changes_path} has change {odd[0]!r} (expected joined or left); the "
            "folder was changed by hand: run fastseg run again"
        )
        raise InputError(msg)
    return pl.concat([need, moved["customer_id"]]).unique(maintain_order=True), moved


def _parts(members: pl.Series, moved: pl.DataFrame | None, name: str) -> dict[str, pl.Series]:
    """The customer ids of each file of segment ``name``, by kind."""
    parts = {"members": members.rename("customer_id")}
    if moved is not None:
        mine = moved.filter(pl.col("segment") == name)
        parts["added"] = mine.filter(pl.col("change") == "joined")["customer_id"]
        parts["removed"] = mine.filter(pl.col("change") == "left")["customer_id"]
    return parts


# -------------------------------------------------------------------------------- entry point


def export_run(
    run_dir: str | Path,
    segments: str | Sequence[str],
    *,
    out: str | Path,
    customers: Any = None,
    customer_columns: Mapping[str, str] | Sequence[str] | None = None,
    columns: str | Sequence[str] | None = None,
    hash: str | None = None,
    changes: bool = False,
    out_format: str = "csv",
    default_country: str | None = None,
    phone_country: str | None = None,
    progress: Reporter | None = None,
) -> ExportResult:
    """Write the members of ``segments`` of the run folder ``run_dir`` into the folder ``out``
    (see the module docstring; :func:`fastseg.export` documents the arguments). Stages timed
    (and, but for ``check``, told to ``progress``): ``check``, ``read``, ``normalize``,
    ``write``."""
    from fastseg import schema
    from fastseg.io import input_paths, input_patterns
    from fastseg.kernels import bitset as bs
    from fastseg.outputs import OutputSet
    from fastseg.runs import open_run

    watch = Stopwatch(progress)
    with watch.stage("check", show=False):  # the options and the run folder: not a long stage
        wanted, cols, hash, out_format, region = _check_options(
            segments, columns, hash, out_format, default_country
        )
        if customer_columns and customers is None:
            msg = "--customers-col maps the columns of --customers: give the profiles file too"
            raise ParameterError(msg)
        mapping = schema.parse_column_map(
            customer_columns, known=schema.CUSTOMER_COLUMNS, what="customers"
        )
        run = open_run(run_dir, "run folder")
        names, words = run.membership()
        rows = _pick_segments(run, names, wanted)
        changes_path = _check_changes(run, wanted) if changes else None
        plan = _plan_columns(run, customers, mapping, cols)
        identifiers = [c for c in plan.columns if identifier_kind(c)]
        read = plan  # the columns read: the written ones and, when asked, each row's phone region
        if phone_country is not None:
            phone_country = str(phone_country).strip()
            if identifier_kind(phone_country) or not phone_country:
                msg = f"--phone-country: expected the column of each customer's country, got {phone_country!r}"
                raise ParameterError(msg)
            if phone_country not in plan.columns:
                try:
                    read = _plan_columns(run, customers, mapping, [*plan.columns, phone_country])
                except SchemaError as exc:
                    raise SchemaError(
                        str(exc).replace("--columns:", "--phone-country:", 1)
                    ) from None
        inputs, patterns = [run.path, *input_paths(customers)], input_patterns(customers)

    with OutputSet(inputs, patterns) as outs:
        folder = outs.add_folder(out, "--out", reserved=(MANIFEST,), marker=MANIFEST)
        with watch.stage("read", unit="customers") as st:
            ids = run.customer_ids()
            need, moved = _who(run, ids, words[rows], wanted, changes_path)
            prof = None
            if customers is not None and (read.from_profiles or moved is not None):
                prof, prof_report = _load_profiles(customers, mapping, ids)
            pool, gone = _pool(run, read, need, prof)
            st.advance(len(ids))
        with watch.stage("normalize", unit="customers") as st:
            pool = normalize_identifiers(
                pool, identifiers, hash=hash, default_country=region, phone_country=phone_country
            )
            st.advance(pool.height)
        with watch.stage("write"):
            files = []
            for name, row in zip(wanted, rows, strict=True):
                members = ids.gather(pl.Series(bs.members(words[row])))
                for kind, who in _parts(members, moved, name).items():
                    frame = who.to_frame().join(
                        pool, on="customer_id", how="left", maintain_order="left"
                    )
                    files.append(
                        _stage_file(outs, folder, frame, name, kind, plan, identifiers, out_format)
                    )
            notes = _notes(
                files, plan, identifiers, hash, gone if moved is not None else 0, customers
            )
            if prof is not None:
                for reason, n in prof_report.left_out.items():
                    if n:
                        notes.append(
                            f"--customers: {n:,} profile rows left out ({reason.replace('_', ' ')}: "
                            "a customer id given twice keeps its first row)"
                            if reason == "duplicate_customer_id"
                            else f"--customers: {n:,} profile rows left out ({reason.replace('_', ' ')})"
                        )
            result = ExportResult(
                out=folder,
                run=run.path,
                run_id=run.run_id,
                as_of=run.as_of,
                segments=wanted,
                columns=plan.columns,
                identifiers={c: str(identifier_kind(c)) for c in identifiers},
                hash=hash,
                files=files,
                notes=notes,
                manifest=folder / MANIFEST,
            )
            outs.write_text(
                folder / MANIFEST, _manifest(result, plan, region, out_format, phone_country)
            )
            outs.commit()
    result.timings = watch.seconds
    return result


def _manifest(
    result: ExportResult,
    plan: _Plan,
    region: str | None,
    out_format: str,
    phone_country: str | None = None,
) -> str:
    from fastseg import __version__

    phones = any(k == "phone" for k in result.identifiers.values())
    if phones:
        import phonenumbers

    doc = {
        "format": EXPORT_FORMAT,
        "fastseg": __version__,
        "run": str(result.run),
        "run_id": result.run_id,
        "as_of": result.as_of,
        "segments": result.segments,
        "columns": ["customer_id", *result.columns],
        "identifiers": result.identifiers,
        "hash": result.hash,
        "normalization": {
            "email": "trimmed, lower-cased; usable when it matches " + EMAIL_PATTERN,
            "phone": "E.164 by phonenumbers (libphonenumber), valid numbers only",
            "unusable_rows": "written with a null identifier, counted under unusable",
        },
        "default_country": region,
        "phone_country_column": phone_country,
        "phonenumbers": phonenumbers.__version__ if phones else None,
        "table_format": out_format,
        "notes": result.notes,
        "files": {f.path.name: f.to_dict() for f in result.files},
    }
    return json.dumps(doc, indent=2) + "\n"
