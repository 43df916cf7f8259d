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
