"""Audience exports (fastseg.export, ``fastseg export``): identifiers normalized and hashed as
the ad platforms document it, files equal to a plain Polars reference, changes, the manifest,
the folder committed as one set, and every error as one line."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

import fastseg
from fastseg.cli import app
from fastseg.errors import FastsegError, InputError, OutputError, ParameterError, SchemaError
from fastseg.exporting import (
    EMAIL_PATTERN,
    email_status,
    normalize_email,
    normalize_phone,
    normalize_phones,
    sha256_hex,
)
from tests.reference import email_ref, phone_ref, sha256_ref

RULES = """
[[segment]]
name = "big"
description = "spent 300 or more"
rule = "monetary >= 300"

[[segment]]
name = "frequent"
description = "three orders or more"
rule = "frequency >= 3"

[[segment]]
name = "nobody"
description = "an empty segment"
rule = "false"
"""

EMAILS = [
    " Foo.Bar@Example.COM ",
    "Zoë@example.com",  # unicode: not in the pattern
    "Anna.Smith+news@Gmail.com",  # plus-addressing and Gmail dots are kept
    "no-at-sign.example.com",
    "",
    None,
    "\tJohn.Doe@googlemail.com\n",
    "a@b",  # no top-level domain
    "UPPER@EXAMPLE.CO.UK",
    "x@@y.com",
    "   ",
    "émile@exemple.fr",
]
PHONES = [
    "(415) 555-2671",
    "+44 20 7946 0958",
    "0044 20 7946 0958",
    "020 7946 0958",
    "call me",
    "555-12",
    None,
    " +1 212 555 0100 ",
    "011 44 20 7946 0958",
    "",
    "+49 30 12345678",
    "4155552671",
]
D1, D2 = dt.date(2026, 5, 31), dt.date(2026, 6, 30)


def _profiles(ids: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": ids,
            "email": [EMAILS[i % len(EMAILS)] for i in ids],
            "phone": [PHONES[(i * 5) % len(PHONES)] for i in ids],
            "first_name": [f"Name{i}" for i in ids],
            "country": [["US", "GB", "DE"][i % 3] for i in ids],
        },
        schema_overrides={"email": pl.String, "phone": pl.String},
    )


def _orders(ids: list[int], end: dt.date) -> pl.DataFrame:
    rows = []
    for c in ids:
        for k in range(c % 4 + 1):
            rows.append(
                (
                    c,
                    dt.datetime.combine(end, dt.time(12)) - dt.timedelta(days=3 + 17 * k),
                    40.0 + 9 * c,
                )
            )
    return pl.DataFrame(rows, schema=["customer_id", "order_ts", "amount"], orient="row")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two days of a small store: customers 51..60 are gone on day two, 61..70 are new."""
    folder = tmp_path_factory.mktemp("export")
    day1, day2 = list(range(1, 61)), [*range(1, 51), *range(61, 71)]
    paths = {
        "profiles1": folder / "profiles1.parquet",
        "profiles2": folder / "profiles2.parquet",
        "rules": folder / "rules.toml",
    }
    _profiles(day1).write_parquet(paths["profiles1"])
    p2 = _profiles(day2).with_columns(  # some profiles change between the days
        pl.when(pl.col("customer_id") % 7 == 0)
        .then(pl.lit("changed@example.com"))
        .otherwise("email")
        .alias("email")
    )
    p2.write_parquet(paths["profiles2"])
    paths["rules"].write_text(RULES)
    o1, o2 = _orders(day1, D1), _orders(day2, D2)
    paths["run1"], paths["run2"], paths["plain"] = (
        folder / "run1",
        folder / "run2",
        folder / "plain",
    )
    opts = {"rules": paths["rules"], "builtin": False}
    fastseg.run(o1, customers=paths["profiles1"], out=paths["run1"], as_of=D1, **opts)
    fastseg.run(
        o2,
        customers=paths["profiles2"],
        out=paths["run2"],
        as_of=D2,
        previous=paths["run1"],
        **opts,
    )
    fastseg.run(o2, out=paths["plain"], as_of=D2, **opts)  # no profiles, no previous run
    return paths


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -------------------------------------------------------------------------------- identifiers


@pytest.mark.parametrize("value", EMAILS)
def test_email_normalization_and_hash_equal_the_documented_rule(value: str | None) -> None:
    want, status = email_ref(value)
    got = normalize_email(pl.Series([value], dtype=pl.String))
    assert email_status(got).item() == status
    if status == "ok":
        assert got.item() == want
        assert sha256_hex(got).item() == hashlib.sha256(want.encode()).hexdigest()


def test_email_examples() -> None:
    s = pl.Series(EMAILS, dtype=pl.String)
    norm = normalize_email(s)
    ok = email_status(norm) == "ok"
    assert norm[0] == "foo.bar@example.com" and ok[0]
    assert norm[2] == "anna.smith+news@gmail.com" and ok[2]  # dots and the +tag kept
    assert norm[6] == "john.doe@googlemail.com" and ok[6]
    assert email_status(norm).to_list() == [
        "ok",
        "invalid",
        "ok",
        "invalid",
        "missing",
        "missing",
        "ok",
        "invalid",
        "ok",
        "invalid",
        "missing",
        "invalid",
    ]
    hashed = sha256_hex(norm.filter(ok))
    assert hashed[0] == hashlib.sha256(b"foo.bar@example.com").hexdigest()
    assert hashed.str.contains("^[0-9a-f]{64}$").all()


@given(st.text(max_size=40) | st.emails().map(lambda e: f"  {e.upper()} "))
def test_email_normalization_is_idempotent(text: str) -> None:
    once = normalize_email(pl.Series([text], dtype=pl.String))
    twice = normalize_email(once)
    assert twice.item() == once.item()
    assert email_status(twice).item() == email_status(once).item()


@pytest.mark.parametrize(
    ("value", "region", "want"),
    [
        ("(415) 555-2671", "US", ("+14155552671", "ok")),
        ("+44 20 7946 0958", None, ("+442079460958", "ok")),
        ("0044 20 7946 0958", None, ("+442079460958", "ok")),
        ("0044 20 7946 0958", "US", ("+442079460958", "ok")),  # 00 read as + from anywhere
        ("011 44 20 7946 0958", "US", ("+442079460958", "ok")),  # the US's own prefix
        ("020 7946 0958", "GB", ("+442079460958", "ok")),
        ("020 7946 0958", None, (None, "no_country_code")),
        ("020 7946 0958", "US", (None, "invalid")),
        ("4155552671", None, (None, "no_country_code")),
        ("call me", "US", (None, "invalid")),
        ("555-12", "US", (None, "invalid")),  # too short
        ("+1 555", None, (None, "invalid")),
        (None, "US", (None, "missing")),
        ("   ", "US", (None, "missing")),
        (" +1 212 555 0100 ", None, ("+12125550100", "ok")),
    ],
)
def test_phone_normalization(value: str | None, region: str | None, want: tuple) -> None:
    assert normalize_phone(value, region) == want
    assert phone_ref(value, region) == want
    e164, status = normalize_phones(pl.Series([value], dtype=pl.String), region)
    assert (e164.item(), status.cast(pl.String).item()) == want
    if want[0] is not None:
        assert sha256_hex(e164).item() == hashlib.sha256(want[0].encode()).hexdigest()


def test_phones_are_parsed_once_per_distinct_value(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastseg.exporting as X

    calls: list[str] = []
    real = X.normalize_phone

    def counting(text: str | None, region: str | None = None) -> tuple[str | None, str]:
        calls.append(str(text))
        return real(text, region)

    monkeypatch.setattr(X, "normalize_phone", counting)
    values = pl.Series(["(415) 555-2671", " (415) 555-2671", None, "(415) 555-2671", "x"] * 50)
    e164, status = X.normalize_phones(values, "US")
    assert sorted(calls) == ["(415) 555-2671", "x"]  # trimmed first, nulls never parsed
    assert status.value_counts().sort("count")["count"].to_list() == [50, 50, 150]
    assert e164.null_count() == 100


# -------------------------------------------------------------------------------- files


def _reference(
    run: Path, profiles: Path, segment: str, columns: list[str], *, region: str | None, hashed: bool
) -> tuple[pl.DataFrame, dict[str, dict[str, int]]]:
    """Members from segments.parquet joined with the profiles, identifiers by the reference
    rules; and the unusable counts per column."""
    members = (
        pl.read_parquet(run / "segments.parquet")
        .filter(pl.col("segment").cast(pl.String) == segment)
        .select("customer_id")
    )
    frame = members.join(pl.read_parquet(profiles), on="customer_id", how="left")
    counts: dict[str, dict[str, int]] = {}
    out = {"customer_id": frame["customer_id"]}
    for c in columns:
        values = frame[c].to_list()
        if c in ("email", "phone"):
            pairs = [email_ref(v) if c == "email" else phone_ref(v, region) for v in values]
            counts[c] = {
                "missing": sum(s == "missing" for _, s in pairs),
                "invalid": sum(s in ("invalid", "no_country_code") for _, s in pairs),
            }
            if c == "phone":
                counts[c]["no_country_code"] = sum(s == "no_country_code" for _, s in pairs)
            values = [sha256_ref(v) if hashed else v for v, _ in pairs]
        out[c] = pl.Series(values, dtype=pl.String)
    return pl.DataFrame(out).sort("customer_id"), counts


@pytest.mark.parametrize("hashed", [False, True])
def test_files_equal_a_plain_reference(
    store: dict[str, Path], tmp_path: Path, hashed: bool
) -> None:
    out = tmp_path / "aud"
    cols = ["email", "phone", "first_name"]
    res = fastseg.export(
        store["run2"],
        ["big", "frequent", "nobody"],
        columns=",".join(cols),
        hash="sha256" if hashed else None,
        default_country="US",
        out=out,
    )
    assert sorted(os.listdir(out)) == ["big.csv", "frequent.csv", "manifest.json", "nobody.csv"]
    for f in res.files:
        got = pl.read_csv(f.path, schema_overrides={c: pl.String for c in cols})
        want, counts = _reference(
            store["run2"], store["profiles2"], f.segment, cols, region="US", hashed=hashed
        )
        assert_frame_equal(got.sort("customer_id"), want, check_dtypes=False)
        assert f.rows == want.height == got.height
        assert f.unusable == counts
    sizes = pl.read_csv(store["run2"] / "summary.csv")
    assert {f.segment: f.rows for f in res.files} == {
        s: sizes.filter(pl.col("segment") == s)["customers"].item()
        for s in ("big", "frequent", "nobody")
    }
    assert res.files[2].rows == 0 and pl.read_csv(res.files[2].path).columns == [
        "customer_id",
        *cols,
    ]


def test_members_are_in_run_order_and_parquet_equals_csv(
    store: dict[str, Path], tmp_path: Path
) -> None:
    a = fastseg.export(store["run2"], "big", out=tmp_path / "a", default_country="GB")
    b = fastseg.export(
        store["run2"], "big", out=tmp_path / "b", default_country="GB", out_format="parquet"
    )
    assert a.columns == ["email", "phone"]  # the identifiers there are, by default
    csv = pl.read_csv(a.files[0].path, schema_overrides={"email": pl.String, "phone": pl.String})
    pq = pl.read_parquet(b.files[0].path)
    assert b.files[0].path.name == "big.parquet"
    assert_frame_equal(csv, pq)
    ids = pl.read_parquet(store["run2"] / "scores.parquet")["customer_id"].to_list()
    order = [ids.index(c) for c in csv["customer_id"]]
    assert order == sorted(order)


def test_columns_come_from_the_profiles_when_the_run_lacks_them(
    store: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(SchemaError, match="'email'.*made without profiles.*--customers"):
        fastseg.export(store["plain"], "big", columns="email", out=tmp_path / "x")
    res = fastseg.export(
        store["plain"],
        "big",
        columns="email,country",
        customers=store["profiles2"],
        out=tmp_path / "a",
    )
    want, counts = _reference(
        store["plain"], store["profiles2"], "big", ["email", "country"], region=None, hashed=False
    )
    got = pl.read_csv(res.files[0].path, schema_overrides={"email": pl.String})
    assert_frame_equal(got.sort("customer_id"), want, check_dtypes=False)
    # a profile column of another name, mapped
    renamed = tmp_path / "crm.csv"
    pl.read_parquet(store["profiles2"]).rename({"email": "Mail", "customer_id": "CustID"}).drop(
        "tags", strict=False
    ).write_csv(renamed)
    res2 = fastseg.export(
        store["plain"],
        "big",
        columns="email",
        customers=renamed,
        customer_columns=["email=Mail", "customer_id=CustID"],
        out=tmp_path / "b",
    )
    got2 = pl.read_csv(res2.files[0].path, schema_overrides={"email": pl.String})
    assert_frame_equal(
        got2.sort("customer_id"), want.select("customer_id", "email"), check_dtypes=False
    )
    assert res2.files[0].unusable == {"email": counts["email"]}


def test_changes_files_equal_changes_parquet(store: dict[str, Path], tmp_path: Path) -> None:
    changes = pl.read_parquet(store["run2"] / "changes.parquet").with_columns(
        pl.col("segment").cast(pl.String), pl.col("change").cast(pl.String)
    )
    res = fastseg.export(
        store["run2"],
        ["big", "frequent"],
        columns="email,first_name",
        changes=True,
        out=tmp_path / "a",
    )
    names = sorted(f.path.name for f in res.files)
    assert names == sorted(
        f"{s}{k}.csv" for s in ("big", "frequent") for k in ("", ".added", ".removed")
    )
    gone = set(range(51, 61))
    profiles2 = pl.read_parquet(store["profiles2"])
    for f in res.files:
        got = pl.read_csv(f.path, schema_overrides={"email": pl.String})
        if f.kind == "members":
            continue
        change = {"added": "joined", "removed": "left"}[f.kind]
        want_ids = changes.filter((pl.col("segment") == f.segment) & (pl.col("change") == change))
        assert got["customer_id"].to_list() == want_ids["customer_id"].to_list()
        # customers still in the run take today's values; those gone have none (no --customers)
        here = got.filter(~pl.col("customer_id").is_in(list(gone)))
        ref = here.select("customer_id").join(profiles2, on="customer_id", how="left")
        assert here["first_name"].to_list() == ref["first_name"].to_list()
        assert got.filter(pl.col("customer_id").is_in(list(gone)))[
            "first_name"
        ].null_count() == len(set(got["customer_id"]) & gone)
    assert any(
        f.kind == "removed" and set(pl.read_csv(f.path)["customer_id"]) & gone for f in res.files
    )
    assert any("no longer in the run" in n for n in res.notes)
    # with the profiles that still have them, customers gone take their columns from there
    res2 = fastseg.export(
        store["run2"],
        "big",
        columns="email,first_name",
        changes=True,
        customers=store["profiles1"],
        out=tmp_path / "b",
    )
    removed = pl.read_csv(next(f.path for f in res2.files if f.kind == "removed"))
    old = pl.read_parquet(store["profiles1"])
    gone_rows = removed.filter(pl.col("customer_id").is_in(list(gone)))
    assert not gone_rows.is_empty()
    want = gone_rows.select("customer_id").join(old, on="customer_id", how="left")
    assert gone_rows["first_name"].to_list() == want["first_name"].to_list()
    assert not any("no longer in the run" in n for n in res2.notes)


def test_manifest(store: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "aud"
    res = fastseg.export(
        store["run2"],
        ["big", "frequent"],
        changes=True,
        hash="sha256",
        out=out,
        columns="email,phone",
    )
    doc = json.loads((out / "manifest.json").read_text())
    run_doc = json.loads((store["run2"] / "run.json").read_text())
    assert doc["format"] == "fastseg-export-1"
    assert (doc["run_id"], doc["as_of"]) == (run_doc["run_id"], "2026-06-30")
    assert doc["run"] == str(store["run2"]) and doc["hash"] == "sha256"
    assert doc["columns"] == ["customer_id", "email", "phone"]
    assert doc["identifiers"] == {"email": "email", "phone": "phone"}
    assert EMAIL_PATTERN in doc["normalization"]["email"]
    assert set(doc["files"]) == set(os.listdir(out)) - {"manifest.json"}
    for name, entry in doc["files"].items():
        data = (out / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        assert entry["rows"] == pl.read_csv(out / name).height
        f = next(f for f in res.files if f.path.name == name)
        assert entry["unusable"] == f.unusable and entry["kind"] == f.kind
    # no default country: the numbers without a country code are invalid, and a note says why
    n = sum(e["unusable"]["phone"]["no_country_code"] for e in doc["files"].values())
    assert n > 0 and any("--default-country" in note for note in doc["notes"])


def test_a_new_export_replaces_the_old_one_as_a_whole(
    store: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "aud"
    fastseg.export(store["run2"], ["big", "frequent"], changes=True, out=out)
    assert len(os.listdir(out)) == 7
    fastseg.export(store["run2"], ["big"], out=out)
    assert sorted(os.listdir(out)) == ["big.csv", "manifest.json"]
    (out / "notes.txt").write_text("mine")  # a folder holding someone else's file is refused
    with pytest.raises(OutputError, match="notes.txt"):
        fastseg.export(store["run2"], ["big"], out=out)


def test_a_failed_export_leaves_the_previous_one_whole(
    store: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "aud"
    fastseg.export(store["run2"], ["big", "frequent"], out=out)
    before = _tree(out)
    for kwargs, err in (
        ({"columns": "email,emial"}, SchemaError),
        ({"segments": ["big", "bigg"]}, ParameterError),
        ({"changes": True, "run_dir": store["plain"]}, InputError),
        ({"default_country": "XX"}, ParameterError),
    ):
        args = {"run_dir": store["run2"], "segments": ["big"], **kwargs}
        with pytest.raises(err):
            fastseg.export(args.pop("run_dir"), args.pop("segments"), out=out, **args)
        assert _tree(out) == before
    # a failure while writing (after the first file): nothing changes, nothing is left behind
    calls = {"n": 0}
    real = pl.DataFrame.write_csv

    def failing(self: pl.DataFrame, *a: object, **k: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_csv", failing)
    with pytest.raises(OutputError, match="No space left"):
        fastseg.export(store["run2"], ["frequent", "big"], out=out)
    assert _tree(out) == before
    assert sorted(os.listdir(tmp_path)) == ["aud"]


def test_errors_are_one_clear_line(store: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "aud"
    with pytest.raises(ParameterError, match=r"'bgi'.*did you mean 'big'.*closest first: big"):
        fastseg.export(store["run2"], "bgi", out=out)
    with pytest.raises(SchemaError) as exc:
        fastseg.export(store["run2"], "big", columns="email,emial", out=out)
    text = str(exc.value)
    assert "'emial'" in text and "did you mean 'email'" in text and "available: " in text
    assert "--customers" in text and "\n" not in text
    with pytest.raises(InputError, match="without a previous run.*--previous EARLIER_RUN_DIR"):
        fastseg.export(store["plain"], "big", changes=True, out=out)
    with pytest.raises(ParameterError, match="--hash"):
        fastseg.export(store["run2"], "big", hash="md5", out=out)
    with pytest.raises(ParameterError, match="--format"):
        fastseg.export(store["run2"], "big", out_format="xlsx", out=out)
    with pytest.raises(ParameterError, match="--customers-col.*--customers"):
        fastseg.export(store["run2"], "big", customer_columns=["email=Mail"], out=out)
    with pytest.raises(ParameterError, match="--customers-col: unknown canonical column"):
        fastseg.export(
            store["run2"], "big", customers=store["profiles2"], customer_columns=["mail=x"], out=out
        )
    with pytest.raises(SchemaError, match="--customers-col email=Mail: no column 'Mail'"):
        fastseg.export(
            store["run2"],
            "big",
            customers=store["profiles2"],
            customer_columns=["email=Mail"],
            out=out,
        )
    with pytest.raises(OutputError, match="input"):
        fastseg.export(store["run2"], "big", out=store["run2"])
    with pytest.raises(OutputError, match="input"):
        fastseg.export(store["run2"], "big", out=store["run2"] / "aud")
    with pytest.raises(InputError, match="run folder"):
        fastseg.export(tmp_path / "nowhere", "big", out=out)
    assert not out.exists()


def test_segment_names_that_are_not_safe_file_names_are_refused(
    store: dict[str, Path], tmp_path: Path
) -> None:
    from fastseg.runs import MEMBERSHIP_FILE, open_run, write_membership

    run = tmp_path / "run"
    shutil.copytree(store["run2"], run)
    names, words = open_run(run).membership()
    evil = ("../../etc/evil", "ok", ".hidden")
    write_membership(
        run / MEMBERSHIP_FILE,
        evil,
        np.ascontiguousarray(words[:3]),
        len(open_run(run).customer_ids()),
    )
    for name in ("../../etc/evil", ".hidden"):
        with pytest.raises(ParameterError, match="cannot be used as a file name"):
            fastseg.export(run, name, out=tmp_path / "aud")
    res = fastseg.export(run, "ok", out=tmp_path / "aud")
    assert [f.path.name for f in res.files] == ["ok.csv"]
    assert sorted(os.listdir(tmp_path)) == ["aud", "run"]


def test_segments_only_in_the_current_run_have_no_changes(
    store: dict[str, Path], tmp_path: Path
) -> None:
    rules = tmp_path / "more.toml"
    rules.write_text(
        RULES + '\n[[segment]]\nname = "fresh"\ndescription = "new"\nrule = "frequency = 1"\n'
    )
    run = tmp_path / "run3"
    fastseg.run(
        _orders([*range(1, 51), *range(61, 71)], D2),
        rules=rules,
        builtin=False,
        out=run,
        previous=store["run1"],
    )
    with pytest.raises(InputError, match="'fresh' is not in the previous run.*without --changes"):
        fastseg.export(run, ["big", "fresh"], changes=True, out=tmp_path / "aud")
    assert fastseg.export(run, "fresh", out=tmp_path / "aud").files[0].rows > 0


# -------------------------------------------------------------------------------- CLI

runner = CliRunner()


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_clean_error(result, *fragments: str, code: int = 1) -> None:  # noqa: ANN001
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("fastseg: ")]
    assert len(lines) == 1, text  # one error line (progress lines record the stages done)
    for frag in fragments:
        assert frag in " ".join(text.split()), (frag, text)


def test_cli_export(store: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "aud"
    r = invoke(
        "export",
        store["run2"],
        "--segment",
        "big",
        "-s",
        "frequent",
        "--columns",
        "email,phone,first_name",
        "--hash",
        "sha256",
        "--changes",
        "--default-country",
        "us",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "big.csv" in text and "frequent.removed.csv" in text and "manifest.json" in text
    assert "written as they are, not hashed: first_name" in text
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["default_country"] == "US" and doc["hash"] == "sha256"
    api = fastseg.export(
        store["run2"],
        ["big", "frequent"],
        columns="email,phone,first_name",
        hash="sha256",
        changes=True,
        default_country="US",
        out=tmp_path / "api",
    )
    assert _tree(tmp_path / "api") == _tree(out)  # the CLI is the API, byte for byte
    assert api.rows == sum(e["rows"] for e in doc["files"].values())
    r = invoke("export", store["run2"], "-s", "big", "--format", "parquet", "-o", tmp_path / "pq")
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path / "pq")) == ["big.parquet", "manifest.json"]


def test_cli_errors(store: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "aud"
    run2 = store["run2"]
    assert_clean_error(invoke("export", run2, "-s", "bgi", "-o", out), "did you mean 'big'")
    assert_clean_error(
        invoke("export", run2, "-s", "big", "--columns", "emial", "-o", out),
        "no column 'emial'",
        "available:",
    )
    assert_clean_error(
        invoke("export", store["plain"], "-s", "big", "--changes", "-o", out),
        "without a previous run",
    )
    assert_clean_error(
        invoke("export", run2, "-s", "big", "--default-country", "Narnia", "-o", out),
        "--default-country",
        code=2,  # a usage error, as for run's options
    )
    assert_clean_error(
        invoke("export", run2, "-s", "big", "--customers-col", "email=x", "-o", out),
        "give --customers too",
        code=2,
    )
    assert_clean_error(invoke("export", run2, "-s", " ", "-o", out), "--segment", code=2)
    assert_clean_error(invoke("export", run2, "-s", "big", "-o", run2), "is also an input")
    assert_clean_error(
        invoke("export", tmp_path / "none", "-s", "big", "-o", out), "does not exist"
    )
    assert_clean_error(
        invoke("export", run2, "-s", "big", "--hash", "md5", "-o", out), "--hash", code=2
    )
    assert_clean_error(invoke("export", run2, "-o", out), "--segment", code=2)
    assert not out.exists()


def test_export_is_importable_lazily() -> None:
    assert "export" in fastseg.__all__ and "ExportResult" in fastseg.__all__
    assert callable(fastseg.export)
    importlib.import_module("fastseg.exporting")  # the module does not shadow the function

    assert callable(fastseg.export)
    assert issubclass(ParameterError, FastsegError)


def test_synthetic_store_with_text_ids(tmp_path: Path) -> None:
    """The generator's messy contact details, text customer ids, profiles given apart."""
    frames = fastseg.generate_frames(orders=3_000, seed=4, string_ids=True, with_events=False)
    profiles = tmp_path / "customers.parquet"
    frames["customers"].write_parquet(profiles)
    run = tmp_path / "run"
    fastseg.run(frames["orders"], out=run)  # without profiles: they come from --customers
    res = fastseg.export(
        run,
        ["one_timers", "repeat_buyers"],
        customers=profiles,
        hash="sha256",
        default_country="US",
        out=tmp_path / "aud",
    )
    assert res.columns == ["email", "phone"]
    for f in res.files:
        got = pl.read_csv(f.path, schema_overrides={"customer_id": pl.String})
        assert got["customer_id"].str.starts_with("C").all()
        want, counts = _reference(
            run, profiles, f.segment, ["email", "phone"], region="US", hashed=True
        )
        assert_frame_equal(got.sort("customer_id"), want, check_dtypes=False)
        assert f.unusable == counts
        assert counts["email"]["missing"] + counts["email"]["invalid"] > 0  # the mess is counted
        assert got["email"].drop_nulls().str.contains("^[0-9a-f]{64}$").all()


def test_export_from_a_csv_run_folder_equals_the_parquet_one(tmp_path: Path) -> None:
    """A CSV run folder is read back with the types it was written with: phones and zips of
    digits only stay text (a guessed integer would lose the leading zeros)."""
    import datetime as dt

    ids = list(range(1, 41))
    orders = pl.DataFrame(
        {
            "customer_id": ids * 2,
            "order_ts": [dt.datetime(2026, 5, 1 + i % 28) for i in range(80)],
            "amount": [float(10 + i) for i in range(80)],
        }
    )
    profiles = pl.DataFrame(
        {
            "customer_id": ids,
            "phone": ["00442079460958" if i % 2 else "07700900123" for i in ids],
            "zip": [f"{i:05d}" for i in ids],
            "email": [f" User{i}@Example.com " for i in ids],
        }
    )
    orders.write_parquet(tmp_path / "o.parquet")
    profiles.write_csv(tmp_path / "p.csv")
    got = {}
    for fmt in ("parquet", "csv"):
        run_dir = tmp_path / f"run-{fmt}"
        fastseg.run(
            tmp_path / "o.parquet", customers=tmp_path / "p.csv", out=run_dir, out_format=fmt
        )
        out = tmp_path / f"exp-{fmt}"
        fastseg.export(
            run_dir, ["active"], columns="phone,zip,email", default_country="GB", out=out
        )
        got[fmt] = (out / "active.csv").read_bytes()
    assert got["csv"] == got["parquet"]
    text = pl.read_csv(tmp_path / "exp-csv" / "active.csv", infer_schema=False)
    assert text["zip"].str.len_chars().eq(5).all()
    assert text["phone"].drop_nulls().str.starts_with("+44").all()


def test_phone_country_reads_each_number_in_its_customers_country(tmp_path: Path) -> None:
    """--phone-country: a number without a country code is read in its own row's country, in
    --default-country where that is empty or no region; equal to a per-row reference."""
    import phonenumbers as pn

    from fastseg import synthetic
    from fastseg.exporting import normalize_phone

    ds = synthetic.generate(tmp_path / "shop", orders=4000, customers=500, with_events=False)
    prof = pl.read_parquet(ds.customers)
    # some rows with no or an unknown country: they fall back to --default-country
    prof = prof.with_columns(
        country=pl.when(pl.col("customer_id") % 7 == 0)
        .then(None)
        .when(pl.col("customer_id") % 11 == 0)
        .then(pl.lit("Atlantis"))
        .otherwise(pl.col("country").str.to_lowercase())
    )
    prof.write_parquet(tmp_path / "p.parquet")
    fastseg.run(ds.orders, customers=tmp_path / "p.parquet", out=tmp_path / "run")
    res = runner.invoke(
        app,
        [
            "export",
            str(tmp_path / "run"),
            "--segment",
            "active",
            "--columns",
            "phone",
            "--default-country",
            "US",
            "--phone-country",
            "country",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert res.exit_code == 0, res.output
    got = pl.read_csv(tmp_path / "x" / "active.csv", infer_schema=False)
    assert got.columns == ["customer_id", "phone"]  # the country column is read, not written
    ref = {}
    for cid, phone, country in prof.select("customer_id", "phone", "country").iter_rows():
        region = (country or "").strip().upper()
        ref[str(cid)] = normalize_phone(phone, region if region in pn.SUPPORTED_REGIONS else "US")[
            0
        ]
    assert {r[0]: r[1] for r in got.iter_rows()} == {c: ref[c] for c in got["customer_id"]}
    plain = fastseg.export(
        tmp_path / "run", ["active"], columns="phone", default_country="US", out=tmp_path / "y"
    )
    ours = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert ours["phone_country_column"] == "country"
    invalid = ours["files"]["active.csv"]["unusable"]["phone"]["invalid"]
    assert invalid < plain.files[0].unusable["phone"]["invalid"]
