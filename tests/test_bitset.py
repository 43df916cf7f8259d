"""Packed-bitset kernels (fastseg.kernels.bitset) against Python sets (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg.errors import ParameterError
from fastseg.kernels import bitset as bs
from fastseg.kernels import numba_threads
from tests.reference import bitset_sets_ref, groups_ref, run_programs_sets_ref

SIZES = [0, 1, 2, 63, 64, 65, 127, 128, 129, 200]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _random_bools(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    density = rng.random((rows, 1))
    return rng.random((rows, n)) < density


def _sets(m: np.ndarray) -> list[set[int]]:
    return [set(np.flatnonzero(r).tolist()) for r in m]


@st.composite
def bool_matrix(draw, max_rows: int = 6):
    n = draw(st.sampled_from(SIZES) | st.integers(0, 300))
    rows = draw(st.integers(1, max_rows))
    seed = draw(st.integers(0, 2**32 - 1))
    return _random_bools(np.random.default_rng(seed), rows, n)


@st.composite
def programs(draw, n_atoms: int, n_segments: int):
    """Random valid postfix programs; segment references only point backwards."""
    progs = []
    for s in range(n_segments):
        prog: list[tuple[int, int]] = []
        depth = 0
        for _ in range(draw(st.integers(1, 10))):
            choices = ["push", "push"]
            if depth >= 1:
                choices.append("not")
            if depth >= 2:
                choices += ["and", "or", "and"]
            c = draw(st.sampled_from(choices))
            if c == "push":
                kinds = ["atom", "atom", "atom", "true", "false"] + (["seg", "seg"] if s else [])
                kind = draw(st.sampled_from(kinds))
                if kind == "atom":
                    prog.append((bs.OP_ATOM, draw(st.integers(0, n_atoms - 1))))
                elif kind == "seg":
                    prog.append((bs.OP_SEGMENT, draw(st.integers(0, s - 1))))
                else:
                    prog.append((bs.OP_TRUE if kind == "true" else bs.OP_FALSE, 0))
                depth += 1
            elif c == "not":
                prog.append((bs.OP_NOT, 0))
            else:
                prog.append((bs.OP_AND if c == "and" else bs.OP_OR, 0))
                depth -= 1
        if depth == 0:
            prog.append((bs.OP_ATOM, draw(st.integers(0, n_atoms - 1))))
            depth = 1
        while depth > 1:
            prog.append((draw(st.sampled_from([bs.OP_AND, bs.OP_OR])), 0))
            depth -= 1
        progs.append(np.array(prog, dtype=np.int32))
    return progs


# --------------------------------------------------------------------------- pack / unpack


@SETTINGS
@given(bool_matrix())
def test_pack_matches_sets_and_roundtrips(m):
    n = m.shape[1]
    words = bs.pack_bool(m)
    assert words.dtype == np.uint64
    assert words.shape == (m.shape[0], (n + 63) // 64)
    assert bitset_sets_ref(words, n) == _sets(m)
    np.testing.assert_array_equal(bs.unpack(words, n), m)
    np.testing.assert_array_equal(bs.popcount(words), m.sum(axis=1))


def test_pack_accepts_list_uint8_and_1d():
    a = np.array([True, False, True])
    b = np.array([False, False, True])
    np.testing.assert_array_equal(bs.pack_bool([a, b]), np.array([[5], [4]], dtype=np.uint64))
    np.testing.assert_array_equal(bs.pack_bool(a.astype(np.uint8) * 7), [[5]])
    assert bs.pack_bool([]).shape == (0, 0)
    assert bs.popcount(bs.pack_bool(a)[0]) == 2


def test_pack_noncontiguous_and_bit_positions():
    m = np.zeros((130, 2), dtype=bool)  # transposed view: rows not contiguous
    m[[0, 63, 64, 129], 0] = True
    words = bs.pack_bool(m.T)
    assert words[0].tolist() == [(1 << 63) | 1, 1, 2]
    assert words[1].tolist() == [0, 0, 0]


def test_pack_rejects_bad_input():
    with pytest.raises(ParameterError, match="bool or uint8"):
        bs.pack_bool(np.zeros((2, 3), dtype=np.float64))
    with pytest.raises(ParameterError, match="words"):
        bs.unpack(np.zeros(2, dtype=np.uint64), 200)
    with pytest.raises(ParameterError, match="uint64"):
        bs.popcount(np.zeros((2, 2), dtype=np.int64))


# --------------------------------------------------------------------------- set operations


@SETTINGS
@given(bool_matrix(max_rows=2).filter(lambda m: m.shape[0] == 2))
def test_word_ops_equal_set_ops(m):
    n = m.shape[1]
    a, b = bs.pack_bool(m)
    sa, sb = _sets(m)
    universe = set(range(n))
    assert bitset_sets_ref([bs.and_words(a, b)], n) == [sa & sb]
    assert bitset_sets_ref([bs.or_words(a, b)], n) == [sa | sb]
    assert bitset_sets_ref([bs.andnot_words(a, b)], n) == [sa - sb]
    assert bitset_sets_ref([bs.not_words(a, n)], n) == [universe - sa]
    assert bs.popcount_and(bs.pack_bool(m), b).tolist() == [len(sa & sb), len(sb)]
    assert bs.members(a).tolist() == sorted(sa)


@SETTINGS
@given(bool_matrix())
def test_overlaps_equal_intersection_sizes(m):
    sets = _sets(m)
    ov = bs.overlaps(bs.pack_bool(m))
    expected = [[len(x & y) for y in sets] for x in sets]
    assert ov.tolist() == expected


def test_members_all_segment_major():
    m = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]], dtype=bool)
    w = bs.pack_bool(m)
    for dt in (np.int64, np.uint32):
        rows, segs = bs.members_all(w, index_dtype=dt)
        assert rows.dtype == dt
        assert rows.tolist() == [0, 2, 3, 0, 1, 3]
        assert segs.tolist() == [0, 0, 0, 2, 2, 2]
    rows, segs = bs.members_all(np.zeros((2, 0), dtype=np.uint64))
    assert rows.size == 0 and segs.size == 0
    with pytest.raises(ParameterError, match="sizes"):
        bs.members_all(w, np.array([1, 2]))


# --------------------------------------------------------------------------- programs


@st.composite
def program_case(draw):
    m = draw(bool_matrix(max_rows=5))
    progs = draw(programs(m.shape[0], draw(st.integers(1, 6))))
    return m, progs


@SETTINGS
@given(program_case())
def test_run_programs_equal_set_interpreter(case):
    m, progs = case
    n = m.shape[1]
    atoms = bs.pack_bool(m)
    ops, args, offsets = bs.concat_programs(progs)
    words, sizes = bs.run_programs_with_sizes(atoms, ops, args, offsets, n)
    expected = run_programs_sets_ref(_sets(m), progs, n)
    assert bitset_sets_ref(words, n) == expected  # also checks that tail bits are zero
    assert sizes.tolist() == [len(s) for s in expected]
    np.testing.assert_array_equal(bs.run_programs(atoms, ops, args, offsets, n), words)


@pytest.mark.parametrize("threads", [1, 2])
def test_run_programs_across_blocks_and_chunks(threads):
    # several 1024-word blocks, a partial last block and a partial last word
    n = bs.BLOCK_WORDS * 64 * 3 + 64 * 5 + 17
    rng = np.random.default_rng(5)
    m = _random_bools(rng, 4, n)
    progs = [
        np.array([[0, 0], [0, 1], [4, 0], [2, 0]], dtype=np.int32),  # a0 & ~a1 (fused ANDNOT)
        np.array([[0, 2], [4, 0]], dtype=np.int32),  # ~a2
        np.array([[1, 1], [0, 3], [3, 0], [1, 0], [2, 0]], dtype=np.int32),  # (s1 | a3) & s0
        np.array([[5, 0], [1, 2], [4, 0], [2, 0]], dtype=np.int32),  # TRUE & ~s2
    ]
    with numba_threads(threads):
        words, sizes = bs.run_programs_with_sizes(bs.pack_bool(m), *bs.concat_programs(progs), n)
        ov = bs.overlaps(words)
    s0 = m[0] & ~m[1]
    s1 = ~m[2]
    s2 = (s1 | m[3]) & s0
    s3 = ~s2
    expected = np.stack([s0, s1, s2, s3])
    np.testing.assert_array_equal(bs.unpack(words, n), expected)
    np.testing.assert_array_equal(sizes, expected.sum(axis=1))
    e = expected.astype(np.int64)
    np.testing.assert_array_equal(ov, e @ e.T)
    assert words[:, -1].max() < (1 << 17)  # tail bits zero


@pytest.mark.parametrize(
    ("prog", "match"),
    [
        ([[9, 0]], "unknown opcode 9"),
        ([[2, 0]], "pops an empty stack"),
        ([[0, 0], [4, 0], [0, 0]], "leaves 2 values"),
        ([[0, 5]], "atom index 5 out of range"),
        ([[1, 0]], "earlier segment"),
    ],
)
def test_run_programs_rejects_bad_programs(prog, match):
    atoms = bs.pack_bool(np.ones((2, 10), dtype=bool))
    ops, args, offsets = bs.concat_programs([np.array(prog, dtype=np.int32)])
    with pytest.raises(ParameterError, match=match):
        bs.run_programs(atoms, ops, args, offsets, 10)


def test_run_programs_rejects_bad_shapes():
    atoms = bs.pack_bool(np.ones((2, 10), dtype=bool))
    ops, args, offsets = bs.concat_programs([np.array([[0, 0]], dtype=np.int32)])
    with pytest.raises(ParameterError, match="need 2"):
        bs.run_programs(atoms, ops, args, offsets, 100)
    with pytest.raises(ParameterError, match="uint64"):
        bs.run_programs(atoms.astype(np.int64), ops, args, offsets, 10)
    with pytest.raises(ParameterError, match="offsets"):
        bs.run_programs(atoms, ops, args, np.array([0, 0, 1]), 10)


def test_run_programs_empty():
    atoms = np.zeros((1, 0), dtype=np.uint64)
    ops, args, offsets = bs.concat_programs([np.array([[5, 0], [4, 0]], dtype=np.int32)])
    words, sizes = bs.run_programs_with_sizes(atoms, ops, args, offsets, 0)
    assert words.shape == (1, 0) and sizes.tolist() == [0]
    ops, args, offsets = bs.concat_programs([])
    words, sizes = bs.run_programs_with_sizes(atoms, ops, args, offsets, 0)
    assert words.shape == (0, 0) and sizes.size == 0
    assert bs.overlaps(words).shape == (0, 0)


# --------------------------------------------------------------------------- groups and sums


@SETTINGS
@given(bool_matrix(), st.data())
def test_assign_groups_first_match_wins(m, data):
    n = m.shape[1]
    k = m.shape[0]
    order = data.draw(st.permutations(range(k)))
    chosen = order[: data.draw(st.integers(0, k))]
    names = [f"s{i}" for i in range(k)]
    codes = np.arange(len(chosen), dtype=np.uint32)
    out = bs.assign_groups(bs.pack_bool(m), np.array(chosen, dtype=np.int64), codes, 99, n)
    labels = [*(names[s] for s in chosen), "fallback"]
    got = [labels[c] if c != 99 else "fallback" for c in out.tolist()]
    assert got == groups_ref(_sets(m), chosen, names, "fallback", n)
    # every customer lands in exactly one label
    assert len(got) == n and set(out.tolist()) <= {*codes.tolist(), 99}


@SETTINGS
@given(bool_matrix(), st.integers(0, 2**32 - 1))
def test_masked_sums_equal_member_sums(m, seed):
    n = m.shape[1]
    vals = np.random.default_rng(seed).normal(size=(3, n)) * 100
    vals[1] = np.round(vals[1])
    got = bs.masked_sums(bs.pack_bool(m), vals)
    expected = [[float(sum(vals[c, i] for i in s)) for c in range(3)] for s in _sets(m)]
    np.testing.assert_allclose(got, np.array(expected).reshape(got.shape), rtol=1e-9, atol=1e-9)


def test_masked_sums_ignore_nan_of_non_members():
    m = np.array([[True, False, True]])
    vals = np.array([[1.0, np.nan, 2.0]])
    assert bs.masked_sums(bs.pack_bool(m), vals).tolist() == [[3.0]]


def test_tail_mask_and_words():
    assert bs.n_words_for(0) == 0 and bs.n_words_for(64) == 1 and bs.n_words_for(65) == 2
    assert int(bs.tail_mask(64)) == 2**64 - 1
    assert int(bs.tail_mask(3)) == 7
    with pytest.raises(ParameterError):
        bs.n_words_for(-1)
