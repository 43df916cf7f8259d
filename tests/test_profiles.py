"""Profiles and events under their own names (--customers-col, --events-col), and profile text
columns typed by their values: flags to Boolean, ISO dates to Date, timestamps to Datetime.

The typing is checked against a plain Python reference (:func:`ref_column`) on random columns;
the CLI end to end on a profiles CSV as a new user exports it (``CustID, Email, OptIn (Y/N),
SignupDate``); and every error line names the option of the input it is about.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fastseg import api
from fastseg.cli import app
from fastseg.errors import ParameterError, SchemaError
from fastseg.orders import load_customers, load_events
from fastseg.schema import FLAG_TOKENS, PROFILE_KINDS, type_text_columns

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
AS_OF = dt.date(2026, 6, 30)


# ------------------------------------------------------------------------------------ reference

TRUE = {t for t, _ in FLAG_TOKENS}
TOKENS = {tok for pair in FLAG_TOKENS for tok in pair}


def _ref_date(v: str) -> dt.date | None:
    shape = len(v) == 10 and v[4] == v[7] == "-" and v.replace("-", "").isascii()
    if not shape or not v.replace("-", "").isdigit():
        return None
    try:
        return dt.datetime.strptime(v, "%Y-%m-%d").date()
    except ValueError:
        return None


def _ref_time(t: str) -> dt.time | None:
    """``HH:MM``, ``HH:MM:SS`` or ``HH:MM:SS.f`` (1 to 9 digits, truncated to microseconds)."""
    hms, _, frac = t.partition(".")
    if "." in t and not (1 <= len(frac) <= 9 and frac.isascii() and frac.isdigit()):
        return None
    parts = hms.split(":")
    if len(parts) not in (2, 3) or (frac and len(parts) != 3):
        return None
    if not all(len(p) == 2 and p.isascii() and p.isdigit() for p in parts):
        return None
    h, m, s = (int(p) for p in [*parts, "00"][:3])
    if h > 23 or m > 59 or s > 59:
        return None
    return dt.time(h, m, s, int(frac[:6].ljust(6, "0")) if frac else 0)


def _strip_offset(t: str) -> str | None:
    """The time without its ``Z`` or ``+HH[[:]MM]`` offset (dropped, not applied)."""
    if t[-1:] in ("Z", "z"):
        return t[:-1]
    for i, ch in enumerate(t):
        if ch in "+-":
            off = t[i + 1 :].replace(":", "", 1) if t[i + 3 : i + 4] == ":" else t[i + 1 :]
            ok = len(off) in (2, 4) and off.isascii() and off.isdigit()
            if not ok or int(off[:2]) > 23 or (len(off) == 4 and int(off[2:]) > 59):
                return None
            return t[:i]
    return t


def _ref_datetime(v: str) -> dt.datetime | None:
    day = _ref_date(v[:10])
    if day is None:
        return None
    rest = v[10:]
    if not rest:
        return dt.datetime(day.year, day.month, day.day)
    if rest[0] not in "Tt ":
        return None
    time_text = _strip_offset(rest[1:])
    when = _ref_time(time_text) if time_text else None
    return None if when is None else dt.datetime.combine(day, when)


def ref_column(name: str, values: list[str | None]) -> tuple[str, list[Any]]:
    """What the column becomes, in plain Python: ``(kind, values)``."""
    trimmed = [None if v is None or not v.strip(" \t") else v.strip(" \t") for v in values]
    present = [v for v in trimmed if v is not None]
    known = PROFILE_KINDS.get(name)
    text = ("text", values)
    if known == "text":
        return text
    if known == "flag":
        if all(v.lower() in TOKENS for v in present):
            return "flag", [None if v is None else v.lower() in TRUE for v in trimmed]
        return text
    if not present:
        return (known, [None] * len(values)) if known else text
    if all(_ref_date(v) for v in present):
        return "date", [None if v is None else _ref_date(v) for v in trimmed]
    if all(_ref_datetime(v) for v in present):
        return "datetime", [None if v is None else _ref_datetime(v) for v in trimmed]
    if known is None:
        for yes, no in FLAG_TOKENS:
            if yes != "1" and all(v.lower() in (yes, no) for v in present):
                return "flag", [None if v is None else v.lower() == yes for v in trimmed]
    return text


DTYPES = {"flag": pl.Boolean, "date": pl.Date, "datetime": pl.Datetime("us"), "text": pl.String}


def check_against_reference(name: str, values: list[str | None]) -> str:
    typed = type_text_columns(pl.DataFrame({name: values}, schema={name: pl.String}))
    kind, want = ref_column(name, values)
    assert typed.schema[name] == DTYPES[kind], (name, values, typed.schema[name], kind)
    assert typed[name].to_list() == want, (name, values)
    return kind


# ------------------------------------------------------------------------------------ strategies

pads = st.sampled_from(["", " ", "  ", "\t", " \t"])


@st.composite
def cased(draw: st.DrawFn, token: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(token), max_size=len(token)))
    word = "".join(c.upper() if f else c for c, f in zip(token, flips, strict=True))
    return draw(pads) + word + draw(pads)


blank = st.sampled_from([None, "", " ", "\t "])
dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31))


@st.composite
def iso_timestamp(draw: st.DrawFn) -> str:
    when = draw(st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1)))
    sep = draw(st.sampled_from(["T", " ", "t"]))
    style = draw(st.sampled_from(["hm", "hms", "frac"]))
    text = when.strftime(f"%Y-%m-%d{sep}%H:%M")
    if style != "hm":
        text += when.strftime(":%S")
    if style == "frac":
        digits = draw(st.integers(1, 9))
        text += "." + f"{when.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    suffix = draw(st.sampled_from(["", "", "Z", "z", "+02:00", "-0530", "+01", "-23:59"]))
    return draw(pads) + text + suffix + draw(pads)


junk = st.sampled_from(
    ["maybe", "12", "2024-3-5", "2024-02-30", "2024-03-05 24:00", "2024-03-05T10", "N/A", "-"]
)


@st.composite
def column(draw: st.DrawFn) -> tuple[str, list[str | None]]:
    """A column name and values drawn mostly from one family, sometimes with strays."""
    name = draw(st.sampled_from(["email_opt_in", "Flag", "signup_ts", "birth_date", "country"]))
    family = draw(st.sampled_from(["pair", "tokens", "dates", "timestamps", "both"]))
    pair = draw(st.sampled_from(FLAG_TOKENS))
    if family == "pair":
        value = st.sampled_from(pair).flatmap(cased)
    elif family == "tokens":
        value = st.sampled_from(sorted(TOKENS)).flatmap(cased)
    elif family == "dates":
        value = st.builds(lambda d, a, b: a + d.isoformat() + b, dates, pads, pads)
    elif family == "timestamps":
        value = iso_timestamp()
    else:
        value = st.one_of(dates.map(dt.date.isoformat), iso_timestamp())
    stray = st.one_of(junk, st.sampled_from(sorted(TOKENS))) if draw(st.booleans()) else value
    values = draw(st.lists(st.one_of(value, value, value, blank, stray), max_size=12))
    return name, values


# ------------------------------------------------------------------------------------ properties


@settings(max_examples=300)
@given(
    pair=st.sampled_from(FLAG_TOKENS),
    data=st.data(),
    name=st.sampled_from(["email_opt_in", "sms_opt_in", "OptIn (Y/N)"]),
)
def test_flag_columns_equal_the_reference(pair: tuple[str, str], data: Any, name: str) -> None:
    values = data.draw(st.lists(st.one_of(st.sampled_from(pair).flatmap(cased), blank)))
    kind = check_against_reference(name, values)
    has_value = any(v is not None and v.strip() for v in values)
    if name in PROFILE_KINDS or (has_value and pair[0] != "1"):
        assert kind == "flag"


@settings(max_examples=200)
@given(values=st.lists(st.one_of(dates.map(dt.date.isoformat), blank), min_size=1))
def test_date_columns_equal_the_reference(values: list[str | None]) -> None:
    kind = check_against_reference("Joined", values)
    assert kind == ("date" if any(v and v.strip() for v in values) else "text")


@settings(max_examples=200)
@given(values=st.lists(st.one_of(iso_timestamp(), dates.map(dt.date.isoformat), blank)))
def test_timestamp_columns_equal_the_reference(values: list[str | None]) -> None:
    check_against_reference("signup_ts", values)


@settings(max_examples=500)
@given(col=column())
def test_any_text_column_equals_the_reference(col: tuple[str, list[str | None]]) -> None:
    check_against_reference(*col)


@given(col=column(), bad=junk)
def test_one_bad_value_keeps_the_column_text(col: tuple[str, list[str | None]], bad: str) -> None:
    name, values = col
    values = [*values, bad]
    frame = pl.DataFrame({name: values}, schema={name: pl.String})
    assert ref_column(name, values)[0] == "text"
    assert type_text_columns(frame).equals(frame)  # never a value turned into a null


# ------------------------------------------------------------------------------------ examples


def test_mixed_columns_stay_text() -> None:
    frame = pl.DataFrame(
        {
            "Subscribed": ["Y", "N", "maybe"],
            "email_opt_in": ["Y", "N", "maybe"],
            "SignupDate": ["2024-03-05", "2024-03-06", "05/03/2024"],
            "birth_date": ["1990-01-01", "1990-02-30", None],
            "LastSeen": ["2024-03-05T10:00:00", "2024-03-05 10:61:00", None],
            "country": ["NO", "NO", "no"],  # Norway, not a flag
            "Children": ["1", "0", "1"],  # integer text, not a flag
            "YesNoMix": ["yes", "N", None],  # two pairs: not one flag
        }
    )
    assert type_text_columns(frame).equals(frame)


def test_flags_dates_and_timestamps_typed() -> None:
    frame = pl.DataFrame(
        {
            "OptIn (Y/N)": ["Y", " n", "", None],
            "email_opt_in": ["Yes", "0", "TRUE", "f"],  # a known flag column: any token
            "Active": ["true", "FALSE", " ", "True"],
            "BirthDate": ["1990-05-01", " 2001-07-02 ", "", None],
            "Signup": ["2024-03-05T10:00:00Z", "2024-03-05 23:30:00.25+02:00", "2024-03-06", None],
            "sms_opt_in": ["", None, " ", ""],  # known, no value: Boolean nulls
        }
    )
    typed = type_text_columns(frame)
    assert typed.schema == pl.Schema(
        {
            "OptIn (Y/N)": pl.Boolean,
            "email_opt_in": pl.Boolean,
            "Active": pl.Boolean,
            "BirthDate": pl.Date,
            "Signup": pl.Datetime("us"),
            "sms_opt_in": pl.Boolean,
        }
    )
    assert typed["OptIn (Y/N)"].to_list() == [True, False, None, None]
    assert typed["email_opt_in"].to_list() == [True, False, True, False]
    assert typed["Active"].to_list() == [True, False, None, True]
    assert typed["BirthDate"].to_list() == [dt.date(1990, 5, 1), dt.date(2001, 7, 2), None, None]
    assert typed["Signup"].to_list() == [  # the time as written: offsets dropped, not applied
        dt.datetime(2024, 3, 5, 10),
        dt.datetime(2024, 3, 5, 23, 30, 0, 250000),
        dt.datetime(2024, 3, 6),
        None,
    ]


def test_parquet_profiles_with_text_dates_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "profiles.parquet"
    pl.DataFrame(
        {
            "customer_id": [1, 2],
            "signup_ts": ["2026-06-01 08:00:00", "2026-01-01T00:00:00"],
            "birth_date": ["1990-01-01", None],
            "email_opt_in": ["yes", "no"],
            "already": [True, False],
        }
    ).write_parquet(path)
    df, _ = load_customers(path)
    assert df.schema == pl.Schema(
        {
            "customer_id": pl.Int64,
            "signup_ts": pl.Datetime("us"),
            "birth_date": pl.Date,
            "email_opt_in": pl.Boolean,
            "already": pl.Boolean,
        }
    )


def test_mapping_renames_and_the_mapped_column_wins() -> None:
    prof = pl.DataFrame(
        {
            "CustID": [1, 2],
            "email_opt_in": ["old", "old"],  # the mapping names another column: not read
            "OptIn": ["Y", "N"],
            "Email": ["a@x", "b@x"],
        }
    )
    df, _ = load_customers(prof, columns=["customer_id=CustID", "email_opt_in=OptIn"])
    assert df.columns == ["customer_id", "email_opt_in", "Email"]
    assert df["email_opt_in"].to_list() == [True, False]


def test_events_mapped() -> None:
    ev = pl.DataFrame(
        {
            "UserId": [1, 2],
            "OccurredAt": ["2026-06-01T10:00:00", "2026-06-02"],
            "Action": ["a", "b"],
        }
    )
    cols = {"customer_id": "UserId", "event_ts": "OccurredAt", "event": "Action"}
    df, rep = load_events(ev, as_of=AS_OF, columns=cols)
    assert df.columns == ["customer_id", "event_date", "event"] and rep.rows_used == 2


def test_api_mapping_without_its_input() -> None:
    orders = pl.DataFrame({"customer_id": [1], "order_ts": [AS_OF], "amount": [1.0]})
    with pytest.raises(ParameterError, match="customer_columns: give customers too"):
        api.score(orders, customer_columns={"customer_id": "CustID"})
    with pytest.raises(ParameterError, match="event_columns: give events too"):
        api.score(orders, event_columns={"event": "Action"})


def test_api_errors_name_the_input_option() -> None:
    with pytest.raises(SchemaError, match=r"map yours with --customers-col customer_id=CustID$"):
        load_customers(pl.DataFrame({"ContactEmail": ["a"], "CustID": [1], "CustomerName": ["A"]}))
    with pytest.raises(ParameterError, match="--events-col: unknown canonical column 'ts'"):
        load_events(pl.DataFrame({"a": [1]}), as_of=AS_OF, columns=["ts=When"])


# ------------------------------------------------------------------------------------ CLI


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Orders, profiles and events as a new user exports them, none under fastseg's names."""
    _write(
        tmp_path / "orders.csv",
        "Cust,OrderDate,Total\n"
        "1,2026-06-20,50\n1,2026-05-01,20\n3,2026-06-29,10\n4,2025-01-01,99\n",
    )
    _write(
        tmp_path / "profiles.csv",
        "CustID,Email,OptIn (Y/N),SignupDate,BirthDate\n"
        "1,a@x.com,Y,2026-06-20,2000-01-15\n"  # 26 on the scoring date
        "2,b@x.com, n ,2026-06-25T09:30:00Z,1960-05-01\n"  # no order, signed up 5 days ago
        "3,c@x.com,,2020-01-01 08:00:00,2005-03-03\n"  # 21
        "4,d@x.com,y,2024-02-29,\n"
        "5,e@x.com,N,2026-01-01,1980-06-30\n",  # exactly 46; signed up long ago, no order
    )
    _write(
        tmp_path / "events.csv",
        "UserId,OccurredAt,Action\n1,2026-06-28T10:00:00,email_open\n2,2026-06-29,email_open\n"
        "2,2026-06-10,email_click\n",
    )
    return tmp_path


MAP_PROFILES = [
    "--customers-col",
    "customer_id=CustID",
    "--customers-col",
    "email_opt_in=OptIn (Y/N)",
    "--customers-col",
    "signup_ts=SignupDate",
    "--customers-col",
    "birth_date=BirthDate",
]
MAP_ORDERS = ["--col", "customer_id=Cust", "--col", "order_ts=OrderDate", "--col", "amount=Total"]
MAP_EVENTS = [
    "--events-col",
    "customer_id=UserId",
    "--events-col",
    "event_ts=OccurredAt",
    "--events-col",
    "event=Action",
]


def invoke(*args: Any):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def test_run_with_every_input_mapped(store: Path) -> None:
    out = store / "res"
    rules = _write(  # a rule of the user's on a mapped column: checked before any row is read
        store / "mine.toml",
        '[[segment]]\nname = "optin_buyers"\ndescription = "d"\n'
        'rule = "email_opt_in AND frequency > 0"\n',
    )
    r = invoke(
        "run",
        store / "orders.csv",
        *MAP_ORDERS,
        "--customers",
        store / "profiles.csv",
        *MAP_PROFILES,
        "--events",
        store / "events.csv",
        *MAP_EVENTS,
        "--rules",
        rules,
        "--as-of",
        AS_OF.isoformat(),
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    scores = pl.read_parquet(out / "scores.parquet").sort("customer_id")
    assert scores.schema["email_opt_in"] == pl.Boolean
    assert scores.schema["signup_ts"] == pl.Datetime("us")
    assert scores.schema["birth_date"] == pl.Date
    assert scores.schema["Email"] == pl.String
    assert scores["email_opt_in"].to_list() == [True, False, None, True, False]
    assert scores["email_open_30d"].to_list() == [1, 1, 0, 0, 0]
    skipped = {s["segment"] for s in json.loads((out / "run.json").read_text())["skipped_segments"]}
    used = {
        "email_subscribers",
        "engaged_subscribers",
        "unengaged_subscribers",
        "recent_signups",
        "age_18_24",
        "age_25_34",
        "age_35_54",
        "age_55_plus",
        "optin_buyers",
    }
    assert not used & skipped, used & skipped
    seg = pl.read_parquet(out / "segments.parquet")
    members = {
        name: sorted(seg.filter(pl.col("segment") == name)["customer_id"].to_list())
        for name in used
    }
    assert members == {
        "email_subscribers": [1, 4],
        "engaged_subscribers": [1],
        "unengaged_subscribers": [4],
        "recent_signups": [2],
        "age_18_24": [3],
        "age_25_34": [1],
        "age_35_54": [5],
        "age_55_plus": [2],
        "optin_buyers": [1, 4],
    }


def test_score_with_profiles_mapped(store: Path) -> None:
    out = store / "s.parquet"
    r = invoke(
        "score",
        store / "orders.csv",
        *MAP_ORDERS,
        "--customers",
        store / "profiles.csv",
        *MAP_PROFILES,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(out).schema["email_opt_in"] == pl.Boolean


def _error_line(result: Any, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in ANSI.sub("", result.stderr).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("fastseg: ")]  # the stages done before it
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return " ".join(lines[0].split())


@pytest.mark.parametrize(
    ("extra", "fragments", "code"),
    [
        pytest.param(
            [],
            ["profiles.csv", "missing required column 'customer_id'",
             "--customers-col customer_id=CustID"],
            1,
            id="profiles-without-customer-id",
        ),
        pytest.param(
            ["--customers-col", "customer_id=CustID", "--customers-col", "email_opt_in=OptIn"],
            ["--customers-col email_opt_in=OptIn: no column 'OptIn'", "did you mean 'OptIn (Y/N)'"],
            1,
            id="profiles-mapped-column-absent",
        ),
        pytest.param(
            ["--customers-col", "optin=OptIn (Y/N)"],
            ["--customers-col: unknown canonical column 'optin'",
             "allowed for customers: customer_id, signup_ts, birth_date"],
            1,
            id="profiles-unknown-canonical",
        ),
        pytest.param(
            ["--customers-col", "customer_id"],
            ["--customers-col: expected CANONICAL=THEIRS (e.g. customer_id=CustID)"],
            1,
            id="profiles-mapping-without-equals",
        ),
    ],
)  # fmt: skip
def test_profile_errors_name_customers_col(
    store: Path, extra: list[str], fragments: list[str], code: int
) -> None:
    r = invoke(
        "score", store / "orders.csv", *MAP_ORDERS, "--customers", store / "profiles.csv", *extra,
        "--out", store / "s.parquet",
    )  # fmt: skip
    line = _error_line(r, code)
    for frag in fragments:
        assert frag in line, (frag, line)
    assert "--col customer_id=CustID" not in line and "--col email_opt_in" not in line
    assert not (store / "s.parquet").exists()


def test_events_errors_name_events_col(store: Path) -> None:
    r = invoke(
        "score", store / "orders.csv", *MAP_ORDERS, "--events", store / "events.csv",
        "--out", store / "s.parquet",
    )  # fmt: skip
    line = _error_line(r)
    assert "missing required columns 'customer_id', 'event_ts', 'event'" in line
    assert (
        "--events-col customer_id=UserId --events-col event_ts=OccurredAt "
        "--events-col event=Action" in line
    )
    r = invoke(
        "run", store / "orders.csv", *MAP_ORDERS, "--events", store / "events.csv",
        "--events-col", "type=Action", "--out", store / "res",
    )  # fmt: skip
    line = _error_line(r)
    assert "--events-col: unknown canonical column 'type'" in line
    assert "allowed for events: customer_id, event_ts, event" in line


def test_id_type_mismatch_names_customers_col(store: Path) -> None:
    _write(store / "text_ids.csv", "CustID,Email\nC1,a@x.com\n")
    r = invoke(
        "score", store / "orders.csv", *MAP_ORDERS, "--customers", store / "text_ids.csv",
        "--customers-col", "customer_id=CustID", "--out", store / "s.parquet",
    )  # fmt: skip
    line = _error_line(r)
    assert "--customers-col customer_id=COLUMN" in line


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--customers-col", "customer_id=CustID"], "--customers-col"),
        (["--events-col", "event=Action"], "--events-col"),
    ],
)
def test_mapping_without_its_input_is_a_usage_error(
    store: Path, args: list[str], option: str
) -> None:
    for command in ("score", "run"):
        r = invoke(command, store / "orders.csv", *MAP_ORDERS, *args)
        line = _error_line(r, 2)
        assert option in line and option.removesuffix("-col") + " too" in line


def test_help_lists_the_mapping_options() -> None:
    for command in ("score", "run"):
        text = ANSI.sub("", invoke(command, "--help").output)
        assert "--customers-col" in text and "--events-col" in text
