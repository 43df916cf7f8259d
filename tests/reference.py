"""Reference implementations: slow, obviously correct; kernels and pipelines are tested equal to them.

Several helpers add sections here; each section is clearly headed. Append only.
"""

from __future__ import annotations

# =============================================================================================
# quantile scoring (RFM scores, thresholds, groups) — owner: quantile/scoring helper
# =============================================================================================
import numpy as _q_np  # noqa: E402
import polars as _q_pl  # noqa: E402


def quantile_scores_ref(values, k: int):
    """``1 + (k * (rank_min - 1)) // n`` with Polars' ``rank("min")``: the spec formula."""
    s = _q_pl.Series("x", list(values))
    n = s.len()
    rank_min = s.rank("min").cast(_q_pl.Int64).to_list()
    return _q_np.array([1 + (k * (r - 1)) // n for r in rank_min], dtype=_q_np.uint8)


def quantile_scores_count_ref(values, k: int):
    """The same formula written as counts: ``1 + floor(k * #{v < x} / n)`` (O(n^2), tiny inputs)."""
    vals = list(values)
    n = len(vals)
    return _q_np.array([1 + (k * sum(v < x for v in vals)) // n for x in vals], dtype=_q_np.uint8)


def quantile_edges_ref(values, k: int):
    """The ``ceil(s * n / k)``-th smallest value for ``s = 1 .. k - 1``, via a full sort."""
    srt = sorted(values)
    n = len(srt)
    return [float(srt[-(-s * n // k) - 1]) for s in range(1, k)]


def threshold_score_ref(x, cuts, *, lower_is_better: bool) -> int:
    """Thresholds, one value: F/M ``1 + #{t : x >= t}``; R ``1 + #{t : x <= t}``."""
    if lower_is_better:
        return 1 + sum(1 for t in cuts if x <= t)
    return 1 + sum(1 for t in cuts if x >= t)


RFM_GROUP_CELLS_REF = {
    # group: set of (R, F) cells on the 5x5 grid, written out cell by cell
    "champions": {(5, 4), (5, 5)},
    "loyal_customers": {(3, 4), (3, 5), (4, 4), (4, 5)},
    "potential_loyalists": {(4, 2), (4, 3), (5, 2), (5, 3)},
    "new_customers": {(5, 1)},
    "promising": {(4, 1)},
    "need_attention": {(3, 3)},
    "about_to_sleep": {(3, 1), (3, 2)},
    "cant_lose_them": {(1, 5), (2, 5)},
    "at_risk": {(1, 3), (1, 4), (2, 3), (2, 4)},
    "hibernating": {(1, 1), (1, 2), (2, 1), (2, 2)},
}


def rfm_group_ref(r, f, k: int) -> str:
    """Group of one customer (``r``/``f`` None for prospects); scores scaled by ceil(5 s / k)."""
    if r is None or f is None:
        return "prospects"
    r5, f5 = -(-5 * r // k), -(-5 * f // k)
    (name,) = [g for g, cells in RFM_GROUP_CELLS_REF.items() if (r5, f5) in cells]
    return name


def rfm_transform_ref(features: _q_pl.DataFrame, k: int) -> _q_pl.DataFrame:
    """Quantile RFM scores of a features frame, row by row in Python (fitted on itself)."""
    rows = features.select("recency_days", "frequency", "monetary").rows()
    scored = [(rec, fr, mon) for rec, fr, mon in rows if fr is not None and fr >= 1]
    neg_rec = [-rec for rec, _, _ in scored]
    freqs = [fr for _, fr, _ in scored]
    mons = [mon for _, _, mon in scored]
    n = len(scored)
    out = {
        "r_score": [],
        "f_score": [],
        "m_score": [],
        "rfm_cell": [],
        "rfm_score": [],
        "rfm_group": [],
    }
    for rec, fr, mon in rows:
        if fr is None or fr < 1:
            for c in ("r_score", "f_score", "m_score", "rfm_cell", "rfm_score"):
                out[c].append(None)
            out["rfm_group"].append("prospects")
            continue
        r = 1 + (k * sum(v < -rec for v in neg_rec)) // n
        f = 1 + (k * sum(v < fr for v in freqs)) // n
        m = 1 + (k * sum(v < mon for v in mons)) // n
        out["r_score"].append(r)
        out["f_score"].append(f)
        out["m_score"].append(m)
        out["rfm_cell"].append(("-" if k >= 10 else "").join(str(s) for s in (r, f, m)))
        out["rfm_score"].append(r + f + m)
        out["rfm_group"].append(rfm_group_ref(r, f, k))
    return _q_pl.DataFrame(
        out,
        schema={
            "r_score": _q_pl.UInt8,
            "f_score": _q_pl.UInt8,
            "m_score": _q_pl.UInt8,
            "rfm_cell": _q_pl.String,
            "rfm_score": _q_pl.UInt8,
            "rfm_group": _q_pl.String,
        },
    )


# =============================================================================================
# segment rules (row-by-row rule evaluation, RPN programs) — owner: rules helper
# =============================================================================================
import datetime as _r_dt  # noqa: E402
import math as _r_math  # noqa: E402

import numpy as _r_np  # noqa: E402


def _r_shift(as_of: _r_dt.date, amount: int, unit: str) -> _r_dt.date:
    """as_of + amount units; months/years clamp the day to the month's end (tried day by day)."""
    if unit == "d":
        return as_of + _r_dt.timedelta(days=amount)
    if unit == "w":
        return as_of + _r_dt.timedelta(days=7 * amount)
    months = amount if unit == "m" else 12 * amount
    total = as_of.year * 12 + as_of.month - 1 + months
    year, month = total // 12, total % 12 + 1
    day = as_of.day
    while True:
        try:
            return _r_dt.date(year, month, day)
        except ValueError:
            day -= 1


def _r_value(value, as_of):
    from fastseg.rules import ast as A

    if isinstance(value, A.DateLit):
        return value.value
    if isinstance(value, A.Today):
        return as_of
    if isinstance(value, A.RelDate):
        return _r_shift(as_of, value.amount, value.unit)
    return value.value


def _r_missing(x) -> bool:
    return x is None or (isinstance(x, float) and _r_math.isnan(x))


def _r_cmp(x, v):
    """Make a row value comparable with a literal: datetimes compare with the date's midnight."""
    if isinstance(x, _r_dt.datetime) and not isinstance(v, _r_dt.datetime):
        v = _r_dt.datetime(v.year, v.month, v.day, tzinfo=x.tzinfo)
    return x, v


def _r_op(op: str, a, b) -> bool:
    return {"=": a == b, "!=": a != b, ">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def _r_anniversary(day, as_of: _r_dt.date):
    """The first date on or after as_of with day's month and day (29 Feb: 28 Feb when the year
    has none), tried year by year."""
    if isinstance(day, _r_dt.datetime):
        day = day.date()
    for year in (as_of.year, as_of.year + 1):
        try:
            candidate = _r_dt.date(year, day.month, day.day)
        except ValueError:  # 29 February in a common year
            candidate = _r_dt.date(year, 2, 28)
        if candidate >= as_of:
            return candidate
    raise AssertionError((day, as_of))


def _r_term(term, row: dict, as_of: _r_dt.date):
    """A term's value on one row: fields as they are (NaN as missing), arithmetic in Python
    floats with None for a missing operand or a division by zero."""
    from fastseg.rules import ast as A
    from fastseg.rules.compile import aggregate_spec

    if isinstance(term, A.Field):
        x = row[term.name]
        return None if _r_missing(x) else x
    if isinstance(term, A.Aggregate):
        return row[aggregate_spec(term).name]
    if isinstance(term, A.Number):
        return term.value
    if isinstance(term, A.Anniversary):
        x = _r_term(term.field, row, as_of)
        return None if x is None else _r_anniversary(x, as_of)
    if isinstance(term, A.Neg):
        x = _r_term(term.operand, row, as_of)
        return None if x is None else -float(x)
    a, b = _r_term(term.left, row, as_of), _r_term(term.right, row, as_of)
    if a is None or b is None:
        return None
    a, b = float(a), float(b)
    if term.op == "/":
        if b == 0:
            return None
        out = a / b
    else:
        out = {"+": a + b, "-": a - b, "*": a * b}[term.op]
    return None if _r_math.isnan(out) else out


def rule_row_ref(tree, row: dict, as_of: _r_dt.date, segments: dict | None = None) -> bool:
    """Evaluate a parsed rule on one row (a dict), with the two-valued null semantics."""
    from fastseg.rules import ast as A

    def ev(node) -> bool:
        if isinstance(node, A.And):
            return ev(node.left) and ev(node.right)
        if isinstance(node, A.Or):
            return ev(node.left) or ev(node.right)
        if isinstance(node, A.Not):
            return not ev(node.operand)
        if isinstance(node, A.Const):
            return node.value
        if isinstance(node, A.SegmentRef):
            return rule_row_ref(segments[node.name], row, as_of, segments)
        x = _r_term(node.operand, row, as_of)
        if isinstance(node, A.IsNull):
            return _r_missing(x) == (not node.negated)
        if _r_missing(x):
            return False
        if isinstance(node, A.IsTrue):
            return x is True
        if isinstance(node, A.Compare) and isinstance(
            node.value, A.Field | A.Aggregate | A.Anniversary | A.Arith | A.Neg
        ):
            y = _r_term(node.value, row, as_of)
            if _r_missing(y):
                return False
            if isinstance(y, _r_dt.datetime) and not isinstance(x, _r_dt.datetime):
                a, b = _r_dt.datetime(x.year, x.month, x.day, tzinfo=y.tzinfo), y
            else:
                a, b = _r_cmp(x, y)
            return _r_op(node.op, a, b)
        if isinstance(node, A.Compare):
            a, b = _r_cmp(x, _r_value(node.value, as_of))
            return _r_op(node.op, a, b)
        if isinstance(node, A.Between):
            a, lo = _r_cmp(x, _r_value(node.low, as_of))
            _, hi = _r_cmp(x, _r_value(node.high, as_of))
            return (lo <= a <= hi) != node.negated
        if isinstance(node, A.In):
            found = any(
                _r_cmp(x, _r_value(v, as_of))[0] == _r_cmp(x, _r_value(v, as_of))[1]
                for v in node.values
            )
            return found != node.negated
        if isinstance(node, A.Contains):
            return (_r_value(node.value, as_of) in x) != node.negated
        raise AssertionError(node)

    return ev(tree)


def rule_mask_ref(tree, frame, as_of: _r_dt.date, segments: dict | None = None) -> _r_np.ndarray:
    """Boolean mask of a rule over a Polars frame, row by row in pure Python."""
    return _r_np.array(
        [rule_row_ref(tree, row, as_of, segments) for row in frame.iter_rows(named=True)],
        dtype=bool,
    )


def rpn_eval_ref(program, atom_masks: list, segment_masks: list, n: int) -> _r_np.ndarray:
    """Run one compiled (opcode, arg) postfix program over boolean arrays of length n."""
    ops = {"atom": 0, "segment": 1, "and": 2, "or": 3, "not": 4, "true": 5, "false": 6}
    stack: list = []
    for op, arg in program.tolist():
        if op == ops["atom"]:
            stack.append(atom_masks[arg])
        elif op == ops["segment"]:
            stack.append(segment_masks[arg])
        elif op == ops["and"]:
            b, a = stack.pop(), stack.pop()
            stack.append(a & b)
        elif op == ops["or"]:
            b, a = stack.pop(), stack.pop()
            stack.append(a | b)
        elif op == ops["not"]:
            stack.append(~stack.pop())
        elif op == ops["true"]:
            stack.append(_r_np.ones(n, dtype=bool))
        elif op == ops["false"]:
            stack.append(_r_np.zeros(n, dtype=bool))
        else:
            raise AssertionError(op)
    assert len(stack) == 1
    return stack[0]


# =============================================================================================
# bitsets / segments — owner: segment-engine helper (fastseg.kernels.bitset, fastseg.segmenting)
# Python sets and plain Polars filters; bit i of word w is customer 64 * w + i.
# =============================================================================================
import polars as _bs_pl  # noqa: E402


def bitset_sets_ref(words, n: int) -> list[set[int]]:
    """Member set of each bitset row, bit by bit with Python ints; asserts tail bits are zero."""
    out = []
    for row in words:
        members = set()
        for w, word in enumerate(int(x) for x in row):
            for i in range(64):
                if (word >> i) & 1:
                    assert 64 * w + i < n, "bit set past the last customer"
                    members.add(64 * w + i)
        out.append(members)
    return out


def run_programs_sets_ref(atom_sets: list[set[int]], programs, n: int) -> list[set[int]]:
    """Postfix programs (``(opcode, arg)`` rows; 0 ATOM 1 SEGMENT 2 AND 3 OR 4 NOT 5 TRUE 6 FALSE)
    interpreted over Python sets; NOT is the complement within ``range(n)``."""
    universe = set(range(n))
    results: list[set[int]] = []
    for prog in programs:
        stack: list[set[int]] = []
        for op, arg in [(int(a), int(b)) for a, b in prog]:
            if op == 0:
                stack.append(set(atom_sets[arg]))
            elif op == 1:
                stack.append(set(results[arg]))
            elif op == 2:
                b = stack.pop()
                stack.append(stack.pop() & b)
            elif op == 3:
                b = stack.pop()
                stack.append(stack.pop() | b)
            elif op == 4:
                stack.append(universe - stack.pop())
            elif op == 5:
                stack.append(set(universe))
            elif op == 6:
                stack.append(set())
            else:
                raise AssertionError(f"unknown opcode {op}")
        assert len(stack) == 1
        results.append(stack.pop())
    return results


def segment_filters_ref(scores, compiled) -> list[set[int]]:
    """Each segment as ONE Polars filter over the scores frame (its program folded back into a
    boolean expression; atoms via ``Atom.expr()``); returns the matching row indices."""
    atom_exprs = [a.expr() for a in compiled.atoms]
    seg_exprs = []
    for seg in compiled.segments:
        stack = []
        for op, arg in [(int(a), int(b)) for a, b in seg.program]:
            if op == 0:
                stack.append(atom_exprs[arg])
            elif op == 1:
                stack.append(seg_exprs[arg])
            elif op in (2, 3):
                b, a = stack.pop(), stack.pop()
                stack.append(a & b if op == 2 else a | b)
            elif op == 4:
                stack.append(~stack.pop())
            else:
                stack.append(_bs_pl.lit(op == 5))
        seg_exprs.append(stack.pop())
    indexed = scores.with_row_index("__row")
    return [set(indexed.filter(e.fill_null(False))["__row"].to_list()) for e in seg_exprs]


def groups_ref(member_sets: list[set[int]], group_segments, names, fallback: str, n: int):
    """First listed segment holding the customer wins, else ``fallback``: a label per customer."""
    labels = []
    for i in range(n):
        label = fallback
        for s in group_segments:
            if i in member_sets[s]:
                label = names[s]
                break
        labels.append(label)
    return labels


def segment_summary_ref(scores, member_sets: list[set[int]]) -> list[dict]:
    """Per segment, with plain Polars filters: customers, revenue (sum monetary), aov
    (sum monetary / sum frequency, None when 0), means of recency_days and frequency ignoring
    nulls (None when no value), share of customers and of total net revenue (None when 0)."""
    indexed = scores.with_row_index("__row")
    n = scores.height
    total = scores["monetary"].sum() if n else 0.0
    rows = []
    for members in member_sets:
        sub = indexed.filter(_bs_pl.col("__row").is_in(sorted(members)))
        revenue = float(sub["monetary"].sum()) if sub.height else 0.0
        orders = int(sub["frequency"].sum()) if sub.height else 0
        rows.append(
            {
                "customers": sub.height,
                "share_customers": sub.height / n if n else None,
                "revenue": revenue,
                "share_revenue": revenue / total if total else None,
                "aov": revenue / orders if orders else None,
                "mean_recency_days": sub["recency_days"].mean(),
                "mean_frequency": sub["frequency"].mean(),
            }
        )
    return rows


# =============================================================================================
# per-customer features (fastseg.features.customer_features) — owner: lead
# Plain Python over rows: obviously correct, slow, for small inputs only.
# =============================================================================================
import datetime as _f_dt  # noqa: E402


def features_ref(rows: list[dict], as_of: _f_dt.date, windows=(30, 90, 365)) -> dict:
    """Per customer id -> dict of features, from clean rows (customer_id, order_date, amount and
    optionally order_id, category, discount). An order is a row with amount >= 0; with order_id,
    the distinct (customer, order_id) among those rows, dated by the first such row."""
    out: dict = {}
    seen_orders: set = set()
    for r in rows:
        c = r["customer_id"]
        f = out.setdefault(
            c,
            {
                "frequency": 0,
                "monetary": 0.0,
                "gross": 0.0,
                "first": None,
                "last": None,
                "refund_count": 0,
                "refund_amount": 0.0,
                "cats": set(),
                "cat_gross": {},
                "disc": 0,
                **{f"orders_{w}d": 0 for w in windows},
                **{f"revenue_{w}d": 0.0 for w in windows},
            },
        )
        a, d = r["amount"], r["order_date"]
        f["monetary"] += a
        for w in windows:
            if d >= as_of - _f_dt.timedelta(days=w):
                f[f"revenue_{w}d"] += a
        if a < 0:
            f["refund_count"] += 1
            f["refund_amount"] += -a
            continue
        f["gross"] += a
        f["first"] = d if f["first"] is None else min(f["first"], d)
        f["last"] = d if f["last"] is None else max(f["last"], d)
        if r.get("category") is not None:
            f["cats"].add(r["category"])
            f["cat_gross"][r["category"]] = f["cat_gross"].get(r["category"], 0.0) + a
        key = (c, r["order_id"]) if "order_id" in r else None
        if key is not None and key in seen_orders:
            continue
        if key is not None:
            seen_orders.add(key)
        f["frequency"] += 1
        if (r.get("discount") or 0) > 0:
            f["disc"] += 1
        for w in windows:
            if d >= as_of - _f_dt.timedelta(days=w):
                f[f"orders_{w}d"] += 1
    result = {}
    for c, f in out.items():
        n = f["frequency"]
        has = n > 0
        result[c] = {
            "recency_days": (as_of - f["last"]).days if has else None,
            "frequency": n,
            "monetary": f["monetary"],
            "aov": f["gross"] / n if has else None,
            "first_order_date": f["first"] if has else None,
            "last_order_date": f["last"] if has else None,
            "tenure_days": (as_of - f["first"]).days if has else None,
            "avg_days_between_orders": (f["last"] - f["first"]).days / (n - 1) if n > 1 else None,
            **{f"orders_{w}d": f[f"orders_{w}d"] for w in windows},
            **{f"revenue_{w}d": f[f"revenue_{w}d"] for w in windows},
            "refund_count": f["refund_count"],
            "refund_amount": f["refund_amount"],
            "distinct_categories": len(f["cats"]),
            # the category of the largest gross revenue, ties to the smallest text
            "top_category": min(f["cat_gross"], key=lambda k: (-f["cat_gross"][k], k))
            if f["cat_gross"]
            else None,
            "discount_share": f["disc"] / n if has else None,
        }
    return result


import numpy as _s_np  # noqa: E402
import polars as _s_pl  # noqa: E402


def same_order_features(a, b) -> None:  # noqa: ANN001
    """Two :class:`fastseg.pipeline.OrderFeatures` agree: report exactly, features to 1e-9."""
    assert a.as_of == b.as_of
    assert a.report.left_out == b.report.left_out
    assert (a.report.rows_read, a.report.rows_used, a.report.duplicates) == (
        b.report.rows_read,
        b.report.rows_used,
        b.report.duplicates,
    )
    fa, fb = a.frame, b.frame
    assert fa.columns == fb.columns
    floats = [c for c, t in fa.schema.items() if t == _s_pl.Float64]
    assert fa.drop(floats).equals(fb.drop(floats))
    for c in floats:
        _s_np.testing.assert_allclose(
            fa[c].fill_null(-1).to_numpy(), fb[c].fill_null(-1).to_numpy(), rtol=1e-9
        )


# =============================================================================================
# the row path (fastseg.pipeline.order_features) — plain Polars and Python, one frame in memory
# =============================================================================================
import dataclasses as _o_dc  # noqa: E402

_O_REASONS = ("missing_customer_id", "missing_timestamp", "missing_amount", "after_as_of")


@_o_dc.dataclass
class RowsRef:
    """What :func:`order_features_ref` finds: the report's figures and the features frame."""

    as_of: _f_dt.date
    left_out: dict
    rows_read: int
    rows_used: int
    duplicates: int
    frame: _s_pl.DataFrame


#: Unicode White_Space, what Polars' strip_chars() and Arrow's utf8_trim_whitespace remove
_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000")
)


def order_features_ref(df: _s_pl.DataFrame, as_of=None, windows=(30, 90, 365)) -> RowsRef:  # noqa: ANN001
    """The documented row semantics, row by row, on a frame with canonical column names and
    types (``customer_id``, ``order_ts`` as Date or naive Datetime, ``amount``; optional
    ``order_id``, ``category``, ``discount``; any other column only tells rows apart).

    Each row gets the first reason that applies (no customer, no timestamp, a null/NaN/inf
    amount, dated after ``as_of``); ``as_of`` defaults to the latest date of a usable row; exact
    duplicates (every column equal, timestamps as read) are counted when there is no order id;
    features come from :func:`features_ref` over the used rows in their order.
    """
    import math

    raw_rows = df.to_dicts()  # duplicates are rows equal as read
    rows = [dict(r) for r in raw_rows]
    for r in rows:  # text ids: surrounding Unicode whitespace trimmed, an empty id missing
        if isinstance(r["customer_id"], str):
            r["customer_id"] = r["customer_id"].strip(_WHITE_SPACE) or None
    if as_of is None:  # the latest usable row's date (a row that only lacks nothing else)
        usable = [
            r["order_ts"]
            for r in rows
            if r["order_ts"] is not None
            and r["customer_id"] is not None
            and r["amount"] is not None
            and math.isfinite(r["amount"])
        ]
        dates = usable or [r["order_ts"] for r in rows if r["order_ts"] is not None]
        as_of = max(d.date() if isinstance(d, _f_dt.datetime) else d for d in dates)
    left = dict.fromkeys(_O_REASONS, 0)
    clean = []
    for r in rows:
        d = r["order_ts"]
        d = d.date() if isinstance(d, _f_dt.datetime) else d
        a = r["amount"]
        if r["customer_id"] is None:
            left["missing_customer_id"] += 1
        elif d is None:
            left["missing_timestamp"] += 1
        elif a is None or not math.isfinite(a):
            left["missing_amount"] += 1
        elif d > as_of:
            left["after_as_of"] += 1
        else:
            c = {k: v for k, v in r.items() if k in ("customer_id", "category", "discount")}
            c |= {"order_date": d, "amount": float(a)}
            if "order_id" in r:
                c["order_id"] = r["order_id"]
            if isinstance(c.get("discount"), float) and math.isnan(c["discount"]):
                c["discount"] = None
            clean.append(c)
    dups = 0
    if "order_id" not in df.columns:
        seen: set = set()
        for r in raw_rows:
            key = tuple(
                ("nan",) if isinstance(v, float) and math.isnan(v) else (0.0 if v == 0 else v)
                for v in r.values()
            )
            dups += key in seen
            seen.add(key)
    feats = features_ref(clean, as_of, windows)
    cols = df.columns
    recs = []
    for cid in sorted(feats):
        f = dict(feats[cid])
        del f["top_category"]  # only when asked for (tests/test_rule_aggregates.py)
        if "category" not in cols:
            del f["distinct_categories"]
        if "discount" not in cols:
            del f["discount_share"]
        recs.append({"customer_id": cid, **f})
    frame = _s_pl.DataFrame(recs, infer_schema_length=None)
    return RowsRef(as_of, left, len(rows), len(clean), dups, frame)


def same_as_ref(got, ref: RowsRef) -> None:  # noqa: ANN001
    """An :class:`fastseg.pipeline.OrderFeatures` agrees with :func:`order_features_ref`."""
    assert got.as_of == ref.as_of
    assert got.report.left_out == ref.left_out
    assert (got.report.rows_read, got.report.rows_used) == (ref.rows_read, ref.rows_used)
    assert got.report.duplicates == ref.duplicates
    fa = got.frame
    if ref.frame.height == 0:
        assert fa.height == 0
        return
    fb = ref.frame.select(fa.columns)
    assert fa["customer_id"].to_list() == fb["customer_id"].to_list()
    for c in fa.columns[1:]:
        a, b = fa[c].to_list(), fb[c].to_list()
        if fa.schema[c] == _s_pl.Float64:
            assert [x is None for x in a] == [y is None for y in b], c
            _s_np.testing.assert_allclose(
                [x for x in a if x is not None],
                [y for y in b if y is not None],
                rtol=1e-9,
                atol=1e-9,
                err_msg=c,
            )
        else:
            assert a == b, c


# =============================================================================================
# audience exports: identifiers as the ad platforms document them — owner: export helper
# =============================================================================================
import hashlib as _x_hashlib  # noqa: E402
import re as _x_re  # noqa: E402

#: Meta business SDK's email pattern, on the trimmed, lower-cased value
_X_EMAIL = _x_re.compile(r"[a-z0-9_.+-]+@[a-z0-9-]+\.[a-z0-9-.]+")


def email_ref(value: str | None) -> tuple[str | None, str]:
    """``(normalized, "ok")`` or ``(None, "missing" | "invalid")``: trimmed, lower-cased, and
    usable when it matches the pattern."""
    if value is None or not value.strip():
        return None, "missing"
    s = value.strip().lower()
    return (s, "ok") if _X_EMAIL.fullmatch(s) else (None, "invalid")


def phone_ref(value: str | None, region: str | None) -> tuple[str | None, str]:
    """``(e164, "ok")`` or ``(None, reason)``: ``+`` and ``00`` numbers carry their country code,
    others are read in ``region`` (none: ``no_country_code``); only valid numbers count."""
    import phonenumbers

    if value is None or not value.strip():
        return None, "missing"
    s = value.strip()
    if s.startswith("+"):
        readings = [(s, None)]
    elif s.startswith("00"):
        readings = [(s, region)] if region else []
        readings.append(("+" + s[2:], None))
    elif region:
        readings = [(s, region)]
    else:
        return None, "no_country_code"
    for text, where in readings:
        try:
            number = phonenumbers.parse(text, where)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), "ok"
    return None, "invalid"


def sha256_ref(value: str | None) -> str | None:
    return None if value is None else _x_hashlib.sha256(value.encode("utf-8")).hexdigest()
