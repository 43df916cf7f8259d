"""`fastseg segments check` and the checks `run` makes before reading any row; every rule the docs
show compiles."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fastseg import api
from fastseg.cli import app
from fastseg.errors import RuleError
from fastseg.rules import builtin_catalog, load_catalog, parse_rule, scores_schema
from fastseg.rules.ast import Field, IsTrue, SegmentRef, walk, walk_terms
from fastseg.rules.catalog import Catalog, SegmentDef
from fastseg.rules.compile import catalog_problems

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def toml(*segments: tuple[str, str]) -> str:
    out = []
    for name, rule in segments:
        out.append(f'[[segment]]\nname = "{name}"\nrule = """{rule}"""\n')
    return "\n".join(out)


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    orders = tmp_path / "orders.parquet"
    pl.DataFrame(
        {
            "customer_id": [1, 2],
            "order_ts": ["2026-01-01", "2026-01-02"],
            "amount": [10.0, 20.0],
            "channel": ["app", "web"],
        }
    ).with_columns(pl.col("order_ts").str.to_date()).write_parquet(orders)
    customers = write(tmp_path, "customers.csv", "customer_id,country,loyalty_tier\n1,US,gold\n")
    events = tmp_path / "events.parquet"
    pl.DataFrame(
        {"customer_id": [1], "event_ts": ["2026-01-01"], "event": ["email_open"], "campaign": ["x"]}
    ).with_columns(pl.col("event_ts").str.to_date()).write_parquet(events)
    return {"orders": orders, "customers": customers, "events": events}


# ------------------------------------------------------------------ segments check: fields


def test_unknown_fields_are_reported_with_their_place(tmp_path: Path) -> None:
    rules = write(
        tmp_path,
        "r.toml",
        toml(("a", "frequncy >= 3"), ("b", "frequency > 1 AND\n  customer_tags CONTAINS 'x'"))
        + toml(("c", "Last_Order_Date > -30d")),
    )
    r = invoke("segments", "check", rules)
    assert r.exit_code == 1
    out = r.stdout
    assert "r.toml:3: segment 'a' at line 1, column 1: unknown field 'frequncy'" in out
    assert "did you mean 'frequency'?" in out
    assert "segment 'b' at line 2, column 3: unknown field 'customer_tags'" in out
    assert "r.toml:8: segment 'b'" in out  # the rule's second line, in the file
    assert "did you mean 'last_order_date'" in out
    assert "or give --customers FILE" in out
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "3 problems" in err[0]


def test_unknown_fields_inside_arithmetic_comparisons_and_anniversary(tmp_path: Path) -> None:
    rule = (
        "monetary + 2 * frequncy > 3 AND recency_days < tenure_dayz"
        " AND anniversary(birht_date) <= +7d AND monetary + country > 1"
    )
    res = api.check_rules(write(tmp_path, "n.toml", toml(("n", rule))))
    got = [(p.field, p.column) for p in res.problems]
    assert got == [("frequncy", 16), ("tenure_dayz", 48), ("birht_date", 76), (None, 110)], got
    assert "'country' is a string" in res.problems[-1].text


def test_ok_counts_segments_and_groups(tmp_path: Path) -> None:
    rules = write(
        tmp_path,
        "ok.toml",
        toml(("big", "monetary > 1000 AND segment(one_timers)"), ("c", "country = 'US'"))
        + '[[group]]\nname = "g"\nsegments = ["big", "c"]\n',
    )
    r = invoke("segments", "check", rules)
    assert r.exit_code == 0, r.output
    assert "ok: 2 segments, 1 groups" in r.stdout


def test_every_problem_is_listed_not_the_first(tmp_path: Path) -> None:
    rules = write(
        tmp_path,
        "many.toml",
        toml(("Bad Name", "frequency > 1"), ("s", "frequency >= AND 3"), ("u", "zzz > 1"))
        + toml(("r", "segment(nosuch)"), ("ok", "frequency > 1")),
    )
    res = api.check_rules(rules)
    texts = [p.text for p in res.problems]
    assert len(texts) == 4, texts
    assert any("'Bad Name' is not valid" in t for t in texts)
    assert any("segment 's': syntax error at line 1, column 14" in t for t in texts)
    assert any("unknown field 'zzz'" in t for t in texts)
    assert any("unknown segment 'nosuch'" in t for t in texts)
    r = invoke("segments", "check", rules)
    assert r.exit_code == 1 and "4 problems" in r.stderr


def test_json_format(tmp_path: Path) -> None:
    import json

    rules = write(tmp_path, "j.toml", toml(("a", "frequncy >= 3"), ("b", "zzz > 1")))
    r = invoke("segments", "check", rules, "--format", "json")
    assert r.exit_code == 1 and "2 problems" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["segments"] == 2
    first = doc["problems"][0]
    assert (first["segment"], first["file_line"], first["line"], first["column"]) == ("a", 3, 1, 1)
    assert first["field"] == "frequncy" and first["kind"] == "field"
    ok = write(tmp_path, "ok.toml", toml(("a", "frequency >= 3")))
    r = invoke("segments", "check", ok, "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["problems"] == []


def test_predicted_fields_need_predict(tmp_path: Path) -> None:
    rules = write(tmp_path, "p.toml", toml(("p", "p_alive < 0.3 AND clv > 100")))
    res = api.check_rules(rules)
    assert [p.field for p in res.problems] == ["p_alive", "clv"]
    assert "--predict" in res.problems[0].text
    assert api.check_rules(rules, predict=True).ok


def test_event_features(tmp_path: Path, inputs: dict[str, Path]) -> None:
    rules = write(
        tmp_path, "e.toml", toml(("e", "email_open_30d > 0 AND days_since_webinar_join < 30"))
    )
    res = api.check_rules(rules)  # documented event types only, without an events file
    assert [p.field for p in res.problems] == ["days_since_webinar_join"]
    assert "--events" in res.problems[0].text
    assert api.check_rules(rules, events=inputs["events"]).ok  # any event type in the data


def test_windows_and_profile_columns_of_the_inputs(tmp_path: Path, inputs) -> None:
    rules = write(
        tmp_path,
        "w.toml",
        toml(("w", "orders_60d > 1 AND loyalty_tier = 'gold' AND country = 'US'")),
    )
    res = api.check_rules(rules)
    assert [p.field for p in res.problems] == ["orders_60d", "loyalty_tier"]
    assert api.check_rules(rules, windows=(60,), customers=inputs["customers"]).ok
    res = api.check_rules(rules, windows=(60,), orders=inputs["orders"], customers=None)
    assert [p.field for p in res.problems] == ["loyalty_tier"]


# ------------------------------------------------------------------ segments check: aggregates


def test_aggregate_filters_against_the_inputs(tmp_path: Path, inputs) -> None:
    rules = write(
        tmp_path,
        "a.toml",
        toml(
            ("t", "orders(channel: 3) > 0"),
            ("c", "orders(chanel: 'app') > 0"),
            ("e", "events('email_open', campaign: 'y') > 0"),
        ),
    )
    res = api.check_rules(rules)  # documented columns: channel is text, campaign unknown
    texts = [p.text for p in res.problems]
    assert len(texts) == 3, texts
    assert "orders column 'channel' is a string" in texts[0] and "not the number 3" in texts[0]
    assert "unknown orders column 'chanel'" in texts[1] and "did you mean 'channel'" in texts[1]
    assert "unknown events column 'campaign'" in texts[2] and "--events FILE" in texts[2]
    res = api.check_rules(rules, orders=inputs["orders"], events=inputs["events"])
    texts = [p.text for p in res.problems]
    assert len(texts) == 2 and "is a string" in texts[0] and "'chanel'" in texts[1]
    r = invoke(
        "segments", "check", rules, "--orders", inputs["orders"], "--events", inputs["events"]
    )
    assert r.exit_code == 1 and "2 problems" in r.stderr


def test_column_mappings(tmp_path: Path, inputs) -> None:
    orders = tmp_path / "mine.csv"
    orders.write_text("cid,when,total,src\n1,2026-01-01,5,app\n")
    rules = write(tmp_path, "m.toml", toml(("m", "orders(src: 'app') > 0 AND frequency > 0")))
    args = ["segments", "check", rules, "--orders", orders]
    maps = ["--col", "customer_id=cid", "--col", "order_ts=when", "--col", "amount=total"]
    r = invoke(*args, *maps)
    assert r.exit_code == 0, r.output
    r = invoke(*args)  # unmapped: the orders' schema itself is the problem
    assert r.exit_code == 1 and "customer_id" in r.stderr


# ------------------------------------------------------------------ run: before any row is read


def test_run_names_every_unknown_field_before_reading(tmp_path: Path, inputs) -> None:
    rules = write(
        tmp_path,
        "u.toml",
        toml(("a", "frequncy >= 3"), ("b", "recncy_days < 5 AND orders(channel: 3) > 0")),
    )
    with pytest.raises(RuleError) as info:
        api.run_job(inputs["orders"], rules=rules, builtin=False)
    message = str(info.value)
    assert "\n" not in message
    assert "'frequncy'" in message and "'recncy_days'" in message
    assert "orders column 'channel' is a string" in message
    assert "more" not in message
    r = invoke("run", inputs["orders"], "--rules", rules, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "'recncy_days'" in r.stderr
    assert not (tmp_path / "o").exists()


def test_run_with_frames_checks_before_reading(inputs) -> None:
    orders = pl.read_parquet(inputs["orders"])
    rules = toml(("f", "orders(chanel: 'app') > 0 AND frequncy > 1"))
    with pytest.raises(RuleError, match="'chanel'.*'frequncy'"):
        api.run_job(orders, rules=rules, builtin=False)


def test_run_checks_event_filter_columns_before_reading(tmp_path: Path, inputs) -> None:
    rules = write(tmp_path, "ev.toml", toml(("e", "events('email_open', campain: 'x') > 0")))
    with pytest.raises(RuleError, match="unknown events column 'campain'.*did you mean 'campaign'"):
        api.run_job(inputs["orders"], rules=rules, builtin=False, events=inputs["events"])
    with pytest.raises(RuleError, match="needs events data"):
        api.run_job(inputs["orders"], rules=rules, builtin=False)


# ------------------------------------------------------------------ hostile text


def test_control_characters_and_markup_are_shown_escaped(tmp_path: Path) -> None:
    rules = write(
        tmp_path,
        "h.toml",
        toml(("h", "[red]x[/red] = 1"), ("k", "frequency > 1 AND \x1b[31mcolour\x1b[0m = 2")),
    )
    r = invoke("segments", "check", rules)
    assert r.exit_code == 1
    assert "\x1b" not in r.stdout + r.stderr
    r2 = write(tmp_path, "h2.toml", toml(("h", "`[red]x` = 1 AND `a\tb` > 2")))
    r = invoke("segments", "check", r2)
    assert r.exit_code == 1
    assert "'[red]x'" in r.stdout  # printed as text, not read as markup
    assert "\\t" in r.stdout and "\t" not in r.stdout


def test_problem_located_and_kinds() -> None:
    cat = Catalog((SegmentDef("a", "", "frequency > 1 AND\n zzz = 2"),))
    (p,) = catalog_problems(cat, scores_schema())
    assert (p.segment, p.line, p.column, p.field, p.kind) == ("a", 2, 2, "zzz", "field")
    assert p.located().startswith("segment 'a' at line 2, column 2: unknown field 'zzz'")


# ------------------------------------------------------------------ every rule of the docs

_BLOCK = re.compile(r"^(?:<!--\s*rules:\s*(\w+)[^>]*-->\s*\n)?```(\w*)\n(.*?)^```$", re.S | re.M)
_PLACEHOLDERS = {"a", "b", "c", "x", "v", "as_of", "name"}
DOC_FILES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def _full_schema() -> dict[str, pl.DataType]:
    schema = scores_schema()
    schema.update({"cluster": pl.Int64(), "cluster_label": pl.String()})
    return schema


def _check(catalog: Catalog, where: str) -> None:
    merged = builtin_catalog().merge(catalog)
    problems = catalog_problems(merged, _full_schema(), segments=catalog.names)
    assert not problems, f"{where}: {[p.text for p in problems]}"


def _rules_of_block(body: str) -> list[str]:
    """A plain block is one rule, or one rule per line."""
    try:
        parse_rule(body)
        return [body]
    except RuleError:
        return [ln for ln in body.splitlines() if ln.split("#")[0].strip()]


def _doc_cases() -> list[pytest.param]:
    cases = []
    for doc in DOC_FILES:
        text = doc.read_text(encoding="utf-8")
        for marker, kind, body in _BLOCK.findall(text):
            if marker in ("error", "skip"):
                continue
            if kind == "toml" or (kind == "" and doc.name == "rules.md"):
                line = text[: text.index(body)].count("\n") + 1
                cases.append(pytest.param(kind or "rules", body, id=f"{doc.name}:{line}"))
    return cases


@pytest.mark.parametrize(("kind", "body"), _doc_cases())
def test_doc_blocks_compile(kind: str, body: str) -> None:
    if kind == "toml":
        _check(load_catalog(body), "toml block")
        return
    rules = _rules_of_block(body)
    segs = tuple(SegmentDef(f"doc_{i}", "", r) for i, r in enumerate(rules))
    _check(Catalog(segs), "rule block")


def _inline_rules() -> list[str]:
    """Inline code in docs/rules.md and README.md that is a rule over real fields (not `x = v`
    templates)."""
    text = "\n".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "rules.md", ROOT / "README.md")
    )
    out = []
    for m in re.finditer(r"`([^`\n]+)`(\s*→)?", text):
        span = m.group(1)
        if " " not in span.strip() or "..." in span or m.group(2):  # `rule` → its error
            continue
        try:
            tree = parse_rule(span)
        except RuleError:
            continue
        if isinstance(tree, IsTrue) and not isinstance(tree.operand, Field):
            continue  # a term (`inf - inf`, `distinct(category)`), not a condition
        names = {t.name for t in walk_terms(tree) if isinstance(t, Field)}
        if names & _PLACEHOLDERS or any(isinstance(n, SegmentRef) for n in walk(tree)):
            continue
        out.append(span)
    return list(dict.fromkeys(out))


def test_inline_rules_of_rules_md_compile() -> None:
    rules = _inline_rules()
    assert "p_alive < 0.3 AND monetary > 500" in rules
    assert "anniversary(birth_date) BETWEEN today AND +30d" in rules  # README's
    segs = tuple(SegmentDef(f"inline_{i}", "", r) for i, r in enumerate(rules))
    _check(Catalog(segs), "inline rules of docs/rules.md and README.md")


def test_doc_blocks_are_found() -> None:
    ids = [c.id for c in _doc_cases()]
    assert any(i.startswith("rules.md") for i in ids) and any(
        i.startswith("predict.md") for i in ids
    )


def test_builtin_catalog_compiles() -> None:
    problems = catalog_problems(builtin_catalog(), scores_schema())
    assert not problems, [p.text for p in problems]
