"""Segment evaluation benchmarks: bitset engine vs per-segment Polars filters and numpy bools.

Run with ``pytest bench/bench_segments.py -m benchmark`` (add ``--benchmark-only`` to skip
nothing, ``FASTSEG_BENCH_1E7=1`` to include 10 million customers). 100 synthetic segments
(``fastseg.segmenting.synthetic_catalog``: 64 threshold atoms, programs of 2-5 atoms with NOT,
AND/OR and references) over synthetic scores frames.

Groups:

- ``segment-eval``: full :func:`fastseg.segmenting.evaluate` (one Polars select of all atoms +
  bitmap packing + one program kernel) vs one Polars ``select(customer_id.filter(rule))`` per
  segment, vs the programs over numpy bool arrays (from precomputed atom arrays), plus the
  program kernel alone on packed atoms.
- ``overlap``: segment x segment overlap matrix from bitsets vs numpy bool matrix products.

Peak membership memory is recorded in ``extra_info`` (``membership_mb``: 100 segments x 10M
customers = 125 MB as bitsets, vs 1 GB as numpy bools).
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pytest

from fastseg import segmenting as sg
from fastseg.kernels import bitset as bs

pytestmark = pytest.mark.benchmark

SIZES = [pytest.param(100_000, id="1e5"), pytest.param(1_000_000, id="1e6")]
if os.environ.get("FASTSEG_BENCH_1E7"):
    SIZES.append(pytest.param(10_000_000, id="1e7"))
N_SEGMENTS = 100
N_ATOMS = 64

_CACHE: dict[int, tuple] = {}


def _setup(n: int):
    if n not in _CACHE:
        _CACHE.clear()  # keep one size in memory at a time
        scores = sg.synthetic_scores(n, seed=0)
        cat = sg.synthetic_catalog(N_SEGMENTS, N_ATOMS, seed=0)
        frame = scores.select([a.expr().alias(f"_a{i}") for i, a in enumerate(cat.atoms)])
        atom_words = sg.pack_frame(frame)
        np_atoms = np.ascontiguousarray(frame.to_numpy().T)
        programs = bs.concat_programs([s.program for s in cat.segments])
        _CACHE[n] = (scores, cat, frame, atom_words, np_atoms, programs)
        sg.evaluate(scores.head(100), cat)  # JIT / cache load outside the timings
    return _CACHE[n]


def _extra(benchmark, n: int, **kw) -> None:
    info = {
        "n_customers": n,
        "n_segments": N_SEGMENTS,
        "membership_mb": N_SEGMENTS * bs.n_words_for(n) * 8 / 1e6,
    }
    info.update(kw)
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("n", SIZES)
def test_fastseg_evaluate(benchmark, n):
    scores, cat, *_ = _setup(n)
    benchmark.group = f"segment-eval-{n:.0e}"
    res = benchmark(sg.evaluate, scores, cat)
    _extra(benchmark, n, memberships=int(res.sizes.sum()))


@pytest.mark.parametrize("n", SIZES)
def test_fastseg_programs_only(benchmark, n):
    _, _, _, atom_words, _, (ops, args, offs) = _setup(n)
    benchmark.group = f"segment-eval-{n:.0e}"
    benchmark(bs.run_programs_with_sizes, atom_words, ops, args, offs, n)
    _extra(benchmark, n)


@pytest.mark.parametrize("n", SIZES)
def test_fastseg_pack_atoms(benchmark, n):
    _, _, frame, *_ = _setup(n)
    benchmark.group = f"segment-eval-{n:.0e}"
    benchmark(sg.pack_frame, frame)
    _extra(benchmark, n, n_atoms=N_ATOMS)


@pytest.mark.parametrize("n", SIZES)
def test_polars_filter_per_segment(benchmark, n):
    scores, cat, *_ = _setup(n)
    exprs = sg._program_exprs(cat)
    benchmark.group = f"segment-eval-{n:.0e}"

    def run():
        return [scores.select(pl.col("customer_id").filter(e)) for e in exprs]

    out = benchmark.pedantic(run, rounds=3, iterations=1)
    ref = sg.evaluate(scores, cat)
    assert [f.height for f in out] == ref.sizes.tolist()
    _extra(benchmark, n, membership_mb=None)


@pytest.mark.parametrize("n", SIZES)
def test_numpy_bool_programs(benchmark, n):
    scores, cat, _, _, np_atoms, _ = _setup(n)
    benchmark.group = f"segment-eval-{n:.0e}"

    def run():
        masks = sg._numpy_bool_eval(cat, np_atoms)
        return [int(m.sum()) for m in masks]

    sizes = benchmark.pedantic(run, rounds=3, iterations=1)
    assert sizes == sg.evaluate(scores, cat).sizes.tolist()
    _extra(benchmark, n, membership_mb=N_SEGMENTS * n / 1e6)


@pytest.mark.parametrize("n", SIZES)
def test_fastseg_overlaps(benchmark, n):
    scores, cat, *_ = _setup(n)
    res = sg.evaluate(scores, cat)
    benchmark.group = f"overlap-{n:.0e}"
    benchmark(bs.overlaps, res.bitsets)
    _extra(benchmark, n)


@pytest.mark.parametrize("n", SIZES)
def test_numpy_overlaps(benchmark, n):
    scores, cat, *_ = _setup(n)
    res = sg.evaluate(scores, cat)
    masks = bs.unpack(res.bitsets, n).astype(np.float32)  # exact up to 2**24 per count
    benchmark.group = f"overlap-{n:.0e}"
    if n > 2**24:
        pytest.skip("float32 matmul is not exact past 2**24 customers")
    ov = benchmark.pedantic(lambda: masks @ masks.T, rounds=3, iterations=1)
    np.testing.assert_array_equal(ov.astype(np.int64), res.overlap_matrix())
    _extra(benchmark, n, membership_mb=masks.nbytes / 1e6)


@pytest.mark.parametrize("n", SIZES)
def test_fastseg_to_long(benchmark, n):
    scores, cat, *_ = _setup(n)
    res = sg.evaluate(scores, cat)
    benchmark.group = f"segment-output-{n:.0e}"
    benchmark.pedantic(res.to_long, rounds=3, iterations=1)
    _extra(benchmark, n, rows=int(res.sizes.sum()))
