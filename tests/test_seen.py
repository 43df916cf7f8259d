"""Persistent key and pair sets (fastseg.kernels.seen) against Python sets."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseg.errors import ParameterError
from fastseg.kernels.seen import KeySet, PairSet, remove_unlisted

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U64_MAX = 2**64 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
A_MAX = 2**31 - 1

U64_EDGE = [0, 1, 2**63 - 1, 2**63, U64_MAX - 1, U64_MAX]
I64_EDGE = [I64_MIN, I64_MIN + 1, -1, 0, 1, I64_MAX - 1, I64_MAX]


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


# --------------------------------------------------------------------------------------------
# strategies: small key spaces (collisions, duplicates) mixed with extremes and wide ranges
# --------------------------------------------------------------------------------------------

u64 = st.integers(0, 20) | st.sampled_from(U64_EDGE) | st.integers(0, U64_MAX)
i64 = st.integers(-5, 5) | st.sampled_from(I64_EDGE) | st.integers(I64_MIN, I64_MAX)
code = st.integers(0, 6) | st.sampled_from([0, A_MAX]) | st.integers(0, A_MAX)

key_batch = st.lists(u64, max_size=40)
pair_batch = st.lists(st.tuples(code, i64), max_size=40)


def _ops(batch):
    op = st.one_of(
        st.tuples(st.just("add"), batch),
        st.tuples(st.just("contains"), batch),
        st.tuples(st.just("compact"), st.integers(1, 3)),
        st.tuples(st.just("reopen"), st.none()),
    )
    return st.lists(op, min_size=1, max_size=12)


def _key_args(batch):
    return (np.array(batch, dtype=np.uint64),)


def _pair_args(batch):
    return (
        np.array([p[0] for p in batch], dtype=np.int64),
        np.array([p[1] for p in batch], dtype=np.int64),
    )


def _run_ops(cls, ops, to_args, as_keys):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        s = cls.open(folder)
        ref: set = set()
        for op, arg in ops:
            if op == "add":
                before = set(os.listdir(folder))
                got = s.add(*to_args(arg)).tolist()
                want = []
                for k in arg:
                    want.append(k not in ref)
                    ref.add(k)
                assert got == want
                added = set(os.listdir(folder)) - before
                assert len(added) == (1 if any(want) else 0)
                assert added <= set(s.runs)
            elif op == "contains":
                assert s.contains(*to_args(arg)).tolist() == [k in ref for k in arg]
            elif op == "compact":
                old = _files(folder)
                runs = s.runs
                s.compact(max_runs=arg)
                assert s.runs == runs or (len(s.runs) == 1 and s.runs[0] not in old)
                if len(runs) > arg:
                    assert len(s.runs) == 1
                now = _files(folder)
                assert {k: now[k] for k in old} == old  # nothing modified or deleted
            else:
                s = cls.open(folder, s.runs)
            assert len(s) == len(ref)
            assert s.nbytes == sum((folder / r).stat().st_size for r in s.runs)
        everything = sorted(ref)
        fresh = cls.open(folder, s.runs)
        assert fresh.contains(*to_args(everything)).all()
        assert not fresh.add(*to_args(everything)).any()
        assert as_keys(fresh) == ref


def _key_contents(s: KeySet) -> set:
    return {int(k) for r in s._runs for k in r.values.tolist()}


def _pair_contents(s: PairSet) -> set:
    out = set()
    for r in s._runs:
        starts = r.starts
        codes = r.ua if r.ua.shape[0] else int(r.base) + np.arange(starts.shape[0] - 1)
        for k, c in enumerate(np.asarray(codes).tolist()):
            for b in r.values[starts[k] : starts[k + 1]].tolist():
                out.add((c, b))
    return out


@SETTINGS
@given(_ops(key_batch))
def test_keyset_matches_python_set(ops):
    _run_ops(KeySet, ops, _key_args, _key_contents)


@SETTINGS
@given(_ops(pair_batch))
def test_pairset_matches_python_set(ops):
    _run_ops(PairSet, ops, _pair_args, _pair_contents)


# --------------------------------------------------------------------------------------------
# the sort's paths: big buckets (merge sort), wide sparse codes, many buckets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_codes,n,span", [(1, 500, 50), (3, 5000, 10**18), (10**4, 30000, 100)])
def test_pairs_sort_paths(tmp_path, n_codes, n, span):
    rng = np.random.default_rng(n)
    a = rng.integers(0, n_codes, n)
    b = rng.integers(-span, span, n)
    s = PairSet.open(tmp_path)
    got = s.add(a, b)
    seen: set = set()
    want = []
    for x in zip(a.tolist(), b.tolist(), strict=True):
        want.append(x not in seen)
        seen.add(x)
    assert got.tolist() == want
    assert _pair_contents(PairSet.open(tmp_path, s.runs)) == seen
    q = rng.integers(0, n_codes, 2000), rng.integers(-span, span, 2000)
    assert s.contains(*q).tolist() == [
        x in seen for x in zip(*(v.tolist() for v in q), strict=False)
    ]


def test_pairs_wide_codes(tmp_path):
    # many pairs over a sparse code range: neither dense run nor np.lexsort path
    rng = np.random.default_rng(5)
    n = 70000
    a = rng.integers(0, A_MAX, n, endpoint=True)
    a[:5000] = a[5000:10000]  # shared codes
    b = rng.integers(-3, 3, n)
    s = PairSet.open(tmp_path)
    got = s.add(a, b)
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    first = {}
    for i, x in enumerate(pairs):
        first.setdefault(x, i)
    assert got.tolist() == [first[x] == i for i, x in enumerate(pairs)]
    t = PairSet.open(tmp_path, s.runs)
    assert len(t) == len(first)
    assert t.contains(a, b).all()
    assert not t.contains(a, b + 7).any()
    # a dense second run merged with the sparse first one
    t.add(np.arange(100), np.zeros(100, np.int64))
    t.compact(max_runs=1)
    assert len(t.runs) == 1
    assert _pair_contents(t) == set(pairs) | {(i, 0) for i in range(100)}


def test_keys_clustered_and_uniform(tmp_path):
    rng = np.random.default_rng(9)
    k = np.concatenate(
        [
            rng.integers(0, U64_MAX, 20000, dtype=np.uint64, endpoint=True),
            np.arange(5000, dtype=np.uint64) * np.uint64(3),  # one crowded bucket
        ]
    )
    rng.shuffle(k)
    s = KeySet.open(tmp_path)
    assert s.add(k).all()
    assert len(s) == k.shape[0]
    q = np.concatenate([k[:1000], k[:1000] + np.uint64(1)])
    ref = set(k.tolist())
    want = [x in ref for x in q.tolist()]
    assert KeySet.open(tmp_path, s.runs).contains(q).tolist() == want


# --------------------------------------------------------------------------------------------
# edge cases
# --------------------------------------------------------------------------------------------


def test_empty_and_single(tmp_path):
    s = KeySet.open(tmp_path, [])
    assert len(s) == 0 and s.runs == [] and s.nbytes == 0
    assert s.contains(np.array([], np.uint64)).shape == (0,)
    assert s.add(np.array([], np.uint64)).shape == (0,)
    assert s.contains([U64_MAX]).tolist() == [False]
    s.compact()
    assert os.listdir(tmp_path) == []
    assert s.add(np.array([U64_MAX], np.uint64)).tolist() == [True]
    assert s.add(np.array([U64_MAX, 0], np.uint64)).tolist() == [False, True]
    names = set(os.listdir(tmp_path))
    assert s.add(np.array([0, U64_MAX, 0], np.uint64)).tolist() == [False] * 3
    assert set(os.listdir(tmp_path)) == names  # nothing new, no file
    p = PairSet.open(tmp_path)
    assert p.add([], []).shape == (0,)
    assert p.add([A_MAX], [I64_MIN]).tolist() == [True]
    assert p.add([A_MAX, 0, 0], [I64_MIN, I64_MAX, I64_MAX]).tolist() == [False, True, False]
    assert PairSet.open(tmp_path, p.runs).contains(
        [0, A_MAX, 0], [I64_MAX, I64_MIN, -1]
    ).tolist() == [
        True,
        True,
        False,
    ]
    assert len(p) == 2


def test_compact_policy_and_old_files_kept(tmp_path):
    s = PairSet.open(tmp_path)
    s.add(np.arange(1000), np.zeros(1000, np.int64))
    s.add([5], [1])
    before = _files(tmp_path)
    s.compact(max_runs=8)  # 1 <= 1000 / 4 and 2 runs: nothing to do
    assert sorted(s.runs) == sorted(before)
    for i in range(8):
        s.add([i], [i + 10])
    s.compact(max_runs=8)  # 10 runs
    assert len(s.runs) == 1 and len(s) == 1009
    assert {k: v for k, v in _files(tmp_path).items() if k in before} == before
    s.add(np.arange(300), np.full(300, 2))
    s.compact(max_runs=8)  # 300 > 1009 / 4
    assert len(s.runs) == 1 and len(s) == 1309
    with pytest.raises(ParameterError):
        s.compact(max_runs=0)


def test_remove_unlisted(tmp_path):
    s = KeySet.open(tmp_path)
    s.add(np.array([1], np.uint64))
    s.add(np.array([2], np.uint64))
    old = s.runs
    s.compact(max_runs=1)
    p = PairSet.open(tmp_path)
    p.add([1], [1])
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / ".keys-dead.npy.tmp").write_bytes(b"x")
    (tmp_path / "keysfile.npy").write_bytes(b"x")
    remove_unlisted(tmp_path, s.runs, "keys")
    left = set(os.listdir(tmp_path))
    assert left == {*s.runs, *p.runs, "manifest.json", "keysfile.npy"}
    assert not set(old) & left
    assert KeySet.open(tmp_path, s.runs).contains(np.array([1, 2, 3], np.uint64)).tolist() == [
        True,
        True,
        False,
    ]
    with pytest.raises(ParameterError):
        remove_unlisted(tmp_path, [], "")


def test_bad_inputs(tmp_path):
    k = KeySet.open(tmp_path)
    p = PairSet.open(tmp_path)
    for bad in (
        lambda: k.add(np.array([-1])),
        lambda: k.contains(np.array([1.5])),
        lambda: k.contains(np.zeros((2, 2), np.uint64)),
        lambda: k.add(np.array([1], np.uint64), np.array([1], np.uint64)),
        lambda: p.add([1, 2], [1]),
        lambda: p.add([-1], [1]),
        lambda: p.add([2**31], [1]),
        lambda: p.contains(np.array([1]), np.array([2**63], np.uint64)),
        lambda: p.contains(np.array([1])),
        lambda: KeySet.open(tmp_path / "missing"),
        lambda: KeySet.open(tmp_path, ["nope.npy"]),
        lambda: KeySet.open(tmp_path, "keys-x.npy"),
    ):
        with pytest.raises(ParameterError):
            bad()
    p.add([1], [1])
    with pytest.raises(ParameterError):
        KeySet.open(tmp_path, p.runs)  # a pair run is not a key run
    with pytest.raises(ParameterError):
        PairSet.open(tmp_path, p.runs * 2)
    np.save(tmp_path / "plain.npy", np.arange(3))
    with pytest.raises(ParameterError):
        PairSet.open(tmp_path, ["plain.npy"])
    with open(tmp_path / "four.npy", "wb") as f:  # four arrays, inconsistent lengths
        for arr in ([1, 5, 0, 0], [], [0, 2], [1, 2, 3]):
            np.lib.format.write_array(f, np.array(arr, dtype=np.int64))
    with pytest.raises(ParameterError):
        PairSet.open(tmp_path, ["four.npy"])
    (tmp_path / "junk.npy").write_bytes(b"not an npy file")
    with pytest.raises(ParameterError):
        PairSet.open(tmp_path, ["junk.npy"])
