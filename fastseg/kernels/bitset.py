"""Packed bitsets: one bit per customer, 64 customers per ``uint64`` word.

Layout
------
A bitset over ``n`` customers is a C-contiguous ``uint64`` array of ``n_words = ceil(n / 64)``
words; bit ``i`` of word ``w`` is customer ``64 * w + i`` (the row order of the scores frame).
Bits past ``n`` in the last word (the *tail*) are always zero. On a little-endian machine this is
byte-for-byte the Arrow / Polars validity-and-boolean bitmap layout, so a Polars Boolean column
packs with a memory copy (see :func:`fastseg.segmenting.pack_frame`). Matrices of bitsets are
``uint64[rows, n_words]``.

Programs
--------
A segment rule compiles to a postfix program, ``int32[L, 2]`` rows ``(opcode, arg)``; all programs
of a catalog are concatenated in CSR form (``ops``, ``args``, ``offsets``) so that one compiled
kernel serves every rule set. :func:`run_programs` evaluates every program over a block of
:data:`BLOCK_WORDS` words before moving to the next block, so the atom words of a block stay in
cache while all segments read them.

Public functions validate and allocate; the private ``@njit`` kernels never check input.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic
from numpy.typing import NDArray

from fastseg.errors import ParameterError
from fastseg.kernels import CACHE

__all__ = [
    "BLOCK_WORDS",
    "OP_AND",
    "OP_ATOM",
    "OP_FALSE",
    "OP_NOT",
    "OP_OR",
    "OP_SEGMENT",
    "OP_TRUE",
    "and_words",
    "andnot_words",
    "assign_groups",
    "changes",
    "concat_programs",
    "members",
    "members_all",
    "n_words_for",
    "not_words",
    "or_words",
    "overlaps",
    "pack_bool",
    "popcount",
    "popcount_and",
    "run_programs",
    "run_programs_with_sizes",
    "masked_sums",
    "tail_mask",
    "unpack",
]

OP_ATOM, OP_SEGMENT, OP_AND, OP_OR, OP_NOT, OP_TRUE, OP_FALSE = 0, 1, 2, 3, 4, 5, 6
_N_OPCODES = 7
_OPCODE_NAMES = ("ATOM", "SEGMENT", "AND", "OR", "NOT", "TRUE", "FALSE")

#: Words per block in :func:`run_programs` (8 KiB per bitset row: the stack and the atoms of one
#: block stay in L1/L2 while every program runs over it).
BLOCK_WORDS = 1024

_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_TOP = np.uint64(1 << 63)


# --------------------------------------------------------------------------------------------
# LLVM intrinsics (numba has no np.bitwise_count; llvm.ctpop vectorises with AVX2, measured as
# fast as a SWAR popcount here, ~0.33 ns/word).
# --------------------------------------------------------------------------------------------


@intrinsic
def _ctpop(typingctx, x):  # noqa: ARG001
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # noqa: ARG001
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def _cttz(typingctx, x):  # noqa: ARG001
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # noqa: ARG001
        # is_zero_poison = true: callers only pass non-zero words.
        return builder.cttz(args[0], context.get_constant(types.boolean, True))

    return sig, codegen


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=CACHE)
def _pack_row(src, dst, n):
    n_full = n // 64
    for w in range(n_full):
        row = src[w * 64 : w * 64 + 64]
        acc = _ZERO
        for j in range(64):
            acc |= np.uint64(row[j] != 0) << np.uint64(j)
        dst[w] = acc
    rem = n - n_full * 64
    if rem > 0:
        row = src[n_full * 64 : n]
        acc = _ZERO
        for j in range(rem):
            acc |= np.uint64(row[j] != 0) << np.uint64(j)
        dst[n_full] = acc


@numba.njit(cache=CACHE, parallel=True)
def _pack_kernel(src, out, n):
    for r in prange(src.shape[0]):
        _pack_row(src[r], out[r], n)


@numba.njit(cache=CACHE)
def _popcount_row(row):
    c = _ZERO
    for j in range(row.size):
        c += _ctpop(row[j])
    return c


@numba.njit(cache=CACHE, parallel=True)
def _popcount_kernel(words, out):
    for r in prange(words.shape[0]):
        out[r] = np.int64(_popcount_row(words[r]))


@numba.njit(cache=CACHE)
def _popcount_and_row(a, b):
    c = _ZERO
    for j in range(a.size):
        c += _ctpop(a[j] & b[j])
    return c


@numba.njit(cache=CACHE, parallel=True)
def _popcount_and_kernel(words, mask, out):
    for r in prange(words.shape[0]):
        out[r] = np.int64(_popcount_and_row(words[r], mask))


@numba.njit(cache=CACHE)
def _run_range(atoms, ops, args, offsets, b0, b1, n_words, tail, out, counts, stack):
    """Evaluate every program over blocks ``b0 .. b1 - 1``; ``stack`` is ``[depth, BLOCK]``."""
    n_seg = offsets.size - 1
    block = stack.shape[1]
    last_word = n_words - 1
    for b in range(b0, b1):
        w0 = b * block
        nw = min(block, n_words - w0)
        for s in range(n_seg):
            sp = 0
            for k in range(offsets[s], offsets[s + 1]):
                op = ops[k]
                if op == 0 or op == 1:  # ATOM / SEGMENT: push a copy of a row
                    src = atoms[args[k], w0 : w0 + nw] if op == 0 else out[args[k], w0 : w0 + nw]
                    dst = stack[sp]
                    for j in range(nw):
                        dst[j] = src[j]
                    sp += 1
                elif op == 2:  # AND
                    sp -= 1
                    x = stack[sp - 1]
                    y = stack[sp]
                    for j in range(nw):
                        x[j] &= y[j]
                elif op == 3:  # OR
                    sp -= 1
                    x = stack[sp - 1]
                    y = stack[sp]
                    for j in range(nw):
                        x[j] |= y[j]
                elif op == 4:  # NOT (tail bits are cleared when the result is stored)
                    x = stack[sp - 1]
                    for j in range(nw):
                        x[j] = ~x[j]
                elif op == 5:  # TRUE
                    dst = stack[sp]
                    for j in range(nw):
                        dst[j] = _ALL
                    sp += 1
                elif op == 6:  # FALSE
                    dst = stack[sp]
                    for j in range(nw):
                        dst[j] = _ZERO
                    sp += 1
                else:  # fused: top (op) row, row from atoms (7..9) or earlier segments (10..12)
                    src = atoms[args[k], w0 : w0 + nw] if op < 10 else out[args[k], w0 : w0 + nw]
                    x = stack[sp - 1]
                    f = op if op < 10 else op - 3
                    if f == 7:
                        for j in range(nw):
                            x[j] &= src[j]
                    elif f == 8:
                        for j in range(nw):
                            x[j] |= src[j]
                    else:
                        for j in range(nw):
                            x[j] &= ~src[j]
            res = stack[0]
            if w0 + nw - 1 == last_word:
                res[nw - 1] &= tail
            dst = out[s, w0 : w0 + nw]
            c = _ZERO
            for j in range(nw):
                v = res[j]
                dst[j] = v
                c += _ctpop(v)
            counts[s] += np.int64(c)


@numba.njit(cache=CACHE, parallel=True)
def _run_kernel(atoms, ops, args, offsets, n_words, tail, out, counts, stack):
    n_chunks = stack.shape[0]
    block = stack.shape[2]
    n_blocks = (n_words + block - 1) // block
    for t in prange(n_chunks):
        b0 = t * n_blocks // n_chunks
        b1 = (t + 1) * n_blocks // n_chunks
        _run_range(atoms, ops, args, offsets, b0, b1, n_words, tail, out, counts[t], stack[t])


@numba.njit(cache=CACHE)
def _overlap_range(words, w_start, w_stop, block, acc):
    n_seg = words.shape[0]
    for w0 in range(w_start, w_stop, block):
        nw = min(block, w_stop - w0)
        for i in range(n_seg):
            a = words[i, w0 : w0 + nw]
            for j in range(i, n_seg):
                b = words[j, w0 : w0 + nw]
                c = _ZERO
                for k in range(nw):
                    c += _ctpop(a[k] & b[k])
                acc[i, j] += np.int64(c)


@numba.njit(cache=CACHE, parallel=True)
def _overlap_kernel(words, block, acc):
    n_chunks = acc.shape[0]
    n_words = words.shape[1]
    n_blocks = (n_words + block - 1) // block
    for t in prange(n_chunks):
        w_start = min(n_words, (t * n_blocks // n_chunks) * block)
        w_stop = min(n_words, ((t + 1) * n_blocks // n_chunks) * block)
        _overlap_range(words, w_start, w_stop, block, acc[t])


@numba.njit(cache=CACHE)
def _members_row(row, out, pos, stop):
    """Write the indices of the set bits of ``row`` to ``out[pos:stop]``; return the new ``pos``.

    Words are decoded eight bits at a time without a data-dependent branch per bit (Lemire's
    bitmap decoding): eight indices are written unconditionally, the position advances by the
    true count. Writes past the row's last index would land in the next row's range, so the
    words whose rounded-up count would pass ``stop`` use the exact loop.
    """
    for w in range(row.size):
        v = row[w]
        if v == _ZERO:
            continue
        base = np.int64(w) * 64
        cnt = np.int64(_ctpop(v))
        if pos + ((cnt + 7) // 8) * 8 <= stop:
            p = pos
            while v != _ZERO:
                for _ in range(8):
                    out[p] = base + np.int64(_cttz(v | _TOP))  # 63 once v is exhausted
                    p += 1
                    v &= v - _ONE
            pos += cnt
        else:
            while v != _ZERO:
                out[pos] = base + np.int64(_cttz(v))
                pos += 1
                v &= v - _ONE
    return pos


@numba.njit(cache=CACHE, parallel=True)
def _members_all_kernel(words, starts, rows_out, segs_out):
    for s in prange(words.shape[0]):
        p0 = starts[s]
        p1 = _members_row(words[s], rows_out, p0, starts[s + 1])
        for p in range(p0, p1):
            segs_out[p] = s


@numba.njit(cache=CACHE)
def _members_kernel(row, out):
    _members_row(row, out, 0, out.size)


@numba.njit(cache=CACHE)
def _groups_range(words, seg_ids, seg_codes, fallback_code, w_start, w_stop, n, out):
    k = seg_ids.size
    last_word = (n + 63) // 64 - 1
    for w in range(w_start, w_stop):
        remaining = _ALL
        if w == last_word and n % 64 != 0:
            remaining = (_ONE << np.uint64(n % 64)) - _ONE
        base = np.int64(w) * 64
        for g in range(k):
            hit = words[seg_ids[g], w] & remaining
            remaining &= ~hit
            code = seg_codes[g]
            while hit != _ZERO:
                out[base + np.int64(_cttz(hit))] = code
                hit &= hit - _ONE
        while remaining != _ZERO:
            out[base + np.int64(_cttz(remaining))] = fallback_code
            remaining &= remaining - _ONE


@numba.njit(cache=CACHE, parallel=True)
def _groups_kernel(words, seg_ids, seg_codes, fallback_code, n, n_chunks, out):
    n_words = (n + 63) // 64
    for t in prange(n_chunks):
        w_start = t * n_words // n_chunks
        w_stop = (t + 1) * n_words // n_chunks
        _groups_range(words, seg_ids, seg_codes, fallback_code, w_start, w_stop, n, out)


@numba.njit(cache=CACHE)
def _masked_sums_range(words, values, w_start, w_stop, acc):
    """``acc[s, c, j] += values[c, 64 * w + j]`` for every set bit ``j`` of ``words[s, w]``.

    One accumulator lane per bit position keeps the inner loop free of a serial reduction, so it
    vectorises (a select, not a multiply: non-members never contribute, even if NaN); the 64
    values of a word stay in L1 while every segment reads them. Lanes are summed by the wrapper.
    """
    n_seg = words.shape[0]
    n_cols = values.shape[0]
    n = values.shape[1]
    for w in range(w_start, w_stop):
        i0 = w * 64
        m = min(64, n - i0)
        for s in range(n_seg):
            v = words[s, w]
            if v == _ZERO:
                continue
            for c in range(n_cols):
                x = values[c, i0 : i0 + m]
                a = acc[s, c]
                for j in range(m):
                    a[j] += x[j] if (v >> np.uint64(j)) & _ONE else 0.0


@numba.njit(cache=CACHE, parallel=True)
def _masked_sums_kernel(words, values, acc):
    n_chunks = acc.shape[0]
    n_words = words.shape[1]
    for t in prange(n_chunks):
        w_start = t * n_words // n_chunks
        w_stop = (t + 1) * n_words // n_chunks
        _masked_sums_range(words, values, w_start, w_stop, acc[t])


# --------------------------------------------------------------------------------------------
# Wrappers

# -- changes between two bitset matrices over different customer sets ------------------------

#: words per work block of :func:`changes` (64k customers: the block's slice of the mapping,
#: 512 KiB, stays in L2 while every segment row reads it)
CHANGE_BLOCK_WORDS = 1024


@numba.njit(cache=CACHE)
def _remapped_word(x, src_row, mapping, base):
    """The src bits of the dst customers of word ``base // 64`` whose dst bit is set in ``x``
    (the only ones the caller keeps): work in proportion to the members, not the customers."""
    r = _ZERO
    while x:
        b = _cttz(x)
        j = mapping[base + np.int64(b)]
        if j >= 0 and (src_row[j >> 6] >> np.uint64(j & 63)) & _ONE:
            r |= _ONE << b
        x &= x - _ONE
    return r


@numba.njit(cache=CACHE, parallel=True)
def _changes_kernel(dst, dst_rows, src, src_rows, mapping, block, out, both):
    n_words = dst.shape[1]
    n_blocks = (n_words + block - 1) // block
    for c in prange(n_blocks):
        w0 = c * block
        w1 = min(n_words, w0 + block)
        for k in range(dst_rows.shape[0]):
            d = dst[dst_rows[k]]
            s = src[src_rows[k]]
            o = out[k]
            cnt = _ZERO
            for w in range(w0, w1):
                x = d[w]
                if x:
                    r = _remapped_word(x, s, mapping, w * 64)
                    o[w] = x & ~r
                    cnt += _ctpop(r)
            both[c, k] = np.int64(cnt)


# --------------------------------------------------------------------------------------------


def n_words_for(n: int) -> int:
    """Number of ``uint64`` words holding ``n`` bits."""
    if n < 0:
        msg = f"n must be >= 0, got {n}"
        raise ParameterError(msg)
    return (int(n) + 63) // 64


def tail_mask(n: int) -> np.uint64:
    """Mask of the valid bits of the last word of an ``n``-bit bitset (all ones if ``n % 64 == 0``)."""
    r = int(n) % 64
    return _ALL if r == 0 else np.uint64((1 << r) - 1)


def _n_chunks(n_items: int) -> int:
    """Work chunks for a parallel kernel: one per Numba thread, at least 1, at most ``n_items``."""
    return max(1, min(numba.get_num_threads(), n_items))


def _check_words(words: NDArray[np.uint64], name: str, ndim: int) -> NDArray[np.uint64]:
    if not isinstance(words, np.ndarray) or words.dtype != np.uint64 or words.ndim != ndim:
        got = f"{words.dtype}[{words.ndim}-D]" if isinstance(words, np.ndarray) else type(words)
        msg = f"{name} must be a {ndim}-D uint64 array of bitset words, got {got}"
        raise ParameterError(msg)
    return np.ascontiguousarray(words)


def pack_bool(matrix: NDArray[np.bool_] | list[NDArray[np.bool_]]) -> NDArray[np.uint64]:
    """Pack boolean rows into bitsets.

    Parameters
    ----------
    matrix
        ``bool`` (or ``uint8``, non-zero is true) array of shape ``(rows, n)``, a 1-D array (one
        row), or a list of equal-length 1-D boolean arrays.

    Returns
    -------
    numpy.ndarray
        ``uint64[rows, ceil(n / 64)]``, tail bits zero.

    Examples
    --------
    >>> pack_bool(np.array([[True, False, True]]))
    array([[5]], dtype=uint64)
    """
    if isinstance(matrix, list | tuple):
        if len(matrix) == 0:
            return np.zeros((0, 0), dtype=np.uint64)
        matrix = np.stack([np.asarray(r) for r in matrix])
    m = np.asarray(matrix)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.dtype not in (np.bool_, np.uint8):
        msg = f"pack_bool expects a 2-D bool or uint8 array, got {m.dtype}[{m.ndim}-D]"
        raise ParameterError(msg)
    m = np.ascontiguousarray(m).view(np.uint8)
    rows, n = m.shape
    out = np.empty((rows, n_words_for(n)), dtype=np.uint64)
    if out.size:
        _pack_kernel(m, out, n)
    return out


def unpack(words: NDArray[np.uint64], n: int) -> NDArray[np.bool_]:
    """Inverse of :func:`pack_bool`: ``bool[..., n]`` from ``uint64[..., n_words]``."""
    w = np.asarray(words)
    if w.dtype != np.uint64 or w.ndim not in (1, 2):
        msg = f"unpack expects 1-D or 2-D uint64 words, got {w.dtype}[{w.ndim}-D]"
        raise ParameterError(msg)
    if w.shape[-1] != n_words_for(n):
        msg = f"unpack: {w.shape[-1]} words cannot hold exactly n={n} bits (need {n_words_for(n)})"
        raise ParameterError(msg)
    lead = w.shape[:-1]
    rows = int(np.prod(lead))
    if n == 0 or rows == 0:
        return np.zeros((*lead, n), dtype=np.bool_)
    w = np.ascontiguousarray(w).astype("<u8", copy=False)
    flat = w.reshape(rows, w.shape[-1]).view(np.uint8)
    bits = np.unpackbits(flat, axis=1, bitorder="little")[:, :n].view(np.bool_)
    return bits.reshape(*lead, n)


def popcount(words: NDArray[np.uint64]) -> NDArray[np.int64] | int:
    """Number of set bits per row (``int64[rows]``) of a 2-D array, or an ``int`` for a 1-D row."""
    w = np.asarray(words)
    if w.ndim == 1:
        w = _check_words(w, "words", 1)
        return int(_popcount_row(w)) if w.size else 0
    w = _check_words(w, "words", 2)
    out = np.zeros(w.shape[0], dtype=np.int64)
    if w.size:
        _popcount_kernel(w, out)
    return out


def popcount_and(words: NDArray[np.uint64], mask: NDArray[np.uint64]) -> NDArray[np.int64]:
    """``popcount(words[r] & mask)`` for every row ``r`` of a 2-D array (``int64[rows]``)."""
    w = _check_words(words, "words", 2)
    m = _check_words(mask, "mask", 1)
    if m.size != w.shape[1]:
        msg = f"mask has {m.size} words, rows have {w.shape[1]}"
        raise ParameterError(msg)
    out = np.zeros(w.shape[0], dtype=np.int64)
    if w.size:
        _popcount_and_kernel(w, m, out)
    return out


def and_words(a: NDArray[np.uint64], b: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Intersection of bitsets (``a & b``)."""
    return np.bitwise_and(a, b)


def or_words(a: NDArray[np.uint64], b: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Union of bitsets (``a | b``)."""
    return np.bitwise_or(a, b)


def andnot_words(a: NDArray[np.uint64], b: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Difference of bitsets (``a & ~b``); tail bits stay zero."""
    return np.bitwise_and(a, np.invert(b))


def not_words(a: NDArray[np.uint64], n: int) -> NDArray[np.uint64]:
    """Complement of bitsets over ``n`` customers (tail bits cleared)."""
    out = np.invert(a)
    if out.shape[-1]:
        out[..., -1] &= tail_mask(n)
    return out


def concat_programs(
    programs: list[NDArray[np.int32]] | tuple[NDArray[np.int32], ...],
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int64]]:
    """Concatenate ``int32[L, 2]`` ``(opcode, arg)`` programs into CSR ``(ops, args, offsets)``."""
    progs = [np.asarray(p, dtype=np.int32).reshape(-1, 2) for p in programs]
    lengths = np.array([p.shape[0] for p in progs], dtype=np.int64)
    offsets = np.zeros(len(progs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(progs) if progs else np.zeros((0, 2), dtype=np.int32)
    return (
        np.ascontiguousarray(flat[:, 0], dtype=np.int32),
        np.ascontiguousarray(flat[:, 1], dtype=np.int32),
        offsets,
    )


def _check_programs(
    ops: NDArray[np.int32], args: NDArray[np.int32], offsets: NDArray[np.int64], n_atoms: int
) -> int:
    """Validate CSR programs; return the largest stack depth any program reaches."""
    if ops.shape != args.shape or offsets.ndim != 1 or offsets.size < 1:
        msg = "programs: ops and args must have one entry per instruction and offsets n_seg + 1"
        raise ParameterError(msg)
    if offsets[0] != 0 or offsets[-1] != ops.size or np.any(np.diff(offsets) < 1):
        msg = "programs: offsets must start at 0, end at len(ops) and give every program >= 1 op"
        raise ParameterError(msg)
    bad = (ops < 0) | (ops >= _N_OPCODES)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        msg = f"programs: unknown opcode {int(ops[k])} at instruction {k} (valid: 0..6)"
        raise ParameterError(msg)
    seg_of = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    bad_atom = (ops == OP_ATOM) & ((args < 0) | (args >= n_atoms))
    if bad_atom.any():
        k = int(np.flatnonzero(bad_atom)[0])
        msg = f"program {int(seg_of[k])}: atom index {int(args[k])} out of range (have {n_atoms} atoms)"
        raise ParameterError(msg)
    bad_seg = (ops == OP_SEGMENT) & ((args < 0) | (args >= seg_of))
    if bad_seg.any():
        k = int(np.flatnonzero(bad_seg)[0])
        msg = (
            f"program {int(seg_of[k])}: segment reference {int(args[k])} must point to an earlier "
            "segment (programs are evaluated in dependency order)"
        )
        raise ParameterError(msg)
    # Stack effect per opcode: push +1, binary -1, NOT 0. Depth must stay >= 1 after each op and
    # end at exactly 1 for every program.
    effect = np.array([1, 1, -1, -1, 0, 1, 1], dtype=np.int64)[ops]
    need = np.array([0, 0, 2, 2, 1, 0, 0], dtype=np.int64)[ops]
    depth_after = np.cumsum(effect)
    start = np.concatenate(([0], depth_after[offsets[1:-1] - 1])) if ops.size else np.zeros(0)
    depth_after = depth_after - np.repeat(start, np.diff(offsets))
    depth_before = depth_after - effect
    under = depth_before < need
    if under.any():
        k = int(np.flatnonzero(under)[0])
        name = _OPCODE_NAMES[int(ops[k])]
        msg = f"program {int(seg_of[k])}: {name} at instruction {k} pops an empty stack"
        raise ParameterError(msg)
    ends = depth_after[offsets[1:] - 1]
    if np.any(ends != 1):
        s = int(np.flatnonzero(ends != 1)[0])
        msg = f"program {s} leaves {int(ends[s])} values on the stack (must leave exactly 1)"
        raise ParameterError(msg)
    return int(depth_after.max()) if ops.size else 1


# Internal fused opcodes (never in a public program): "push row; AND" and friends operate on the
# stack top in place instead of copying the row onto the stack first.
_F_AND_ATOM, _F_OR_ATOM, _F_ANDNOT_ATOM = 7, 8, 9
_F_AND_SEG, _F_OR_SEG, _F_ANDNOT_SEG = 10, 11, 12


def _fuse(
    ops: NDArray[np.int32], args: NDArray[np.int32], offsets: NDArray[np.int64]
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int64]]:
    """Peephole pass over validated programs: ``X AND`` -> AND_X, ``X OR`` -> OR_X and
    ``X NOT AND`` -> ANDNOT_X, where X is an ATOM or SEGMENT push. Loops over instructions (a
    few per segment), never over customers."""
    o = ops.tolist()
    a = args.tolist()
    new_ops: list[int] = []
    new_args: list[int] = []
    new_offsets = [0]
    for s in range(offsets.size - 1):
        k, stop = int(offsets[s]), int(offsets[s + 1])
        while k < stop:
            op = o[k]
            is_push = op in (OP_ATOM, OP_SEGMENT) and k > int(offsets[s])
            shift = 0 if op == OP_ATOM else 3
            if is_push and k + 1 < stop and o[k + 1] in (OP_AND, OP_OR):
                fused = _F_AND_ATOM if o[k + 1] == OP_AND else _F_OR_ATOM
                new_ops.append(fused + shift)
                new_args.append(a[k])
                k += 2
            elif is_push and k + 2 < stop and o[k + 1] == OP_NOT and o[k + 2] == OP_AND:
                new_ops.append(_F_ANDNOT_ATOM + shift)
                new_args.append(a[k])
                k += 3
            else:
                new_ops.append(op)
                new_args.append(a[k])
                k += 1
        new_offsets.append(len(new_ops))
    return (
        np.array(new_ops, dtype=np.int32),
        np.array(new_args, dtype=np.int32),
        np.array(new_offsets, dtype=np.int64),
    )


def run_programs_with_sizes(
    atom_words: NDArray[np.uint64],
    ops: NDArray[np.int32],
    args: NDArray[np.int32],
    offsets: NDArray[np.int64],
    n: int,
) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """Evaluate postfix programs over atom bitsets; return segment bitsets and their sizes.

    Parameters
    ----------
    atom_words
        ``uint64[n_atoms, n_words]`` atom bitsets (tail bits zero).
    ops, args, offsets
        Concatenated programs (see :func:`concat_programs`): program ``s`` is
        ``ops[offsets[s]:offsets[s+1]]``. ``OP_SEGMENT`` arguments must name an earlier program.
    n
        Number of customers (bits).

    Returns
    -------
    words, sizes
        ``uint64[n_seg, n_words]`` and ``int64[n_seg]`` (popcounts, computed in the same pass).

    Examples
    --------
    >>> atoms = pack_bool(np.array([[1, 1, 0], [0, 1, 1]], dtype=bool))
    >>> ops, args, offs = concat_programs([np.array([[OP_ATOM, 0], [OP_ATOM, 1], [OP_AND, 0]])])
    >>> w, sizes = run_programs_with_sizes(atoms, ops, args, offs, 3)
    >>> int(w[0, 0]), int(sizes[0])
    (2, 1)
    """
    atoms = _check_words(atom_words, "atom_words", 2)
    nw = n_words_for(n)
    if atoms.shape[1] != nw:
        msg = f"atom_words has {atoms.shape[1]} words per row; n={n} customers need {nw}"
        raise ParameterError(msg)
    ops = np.ascontiguousarray(ops, dtype=np.int32)
    args = np.ascontiguousarray(args, dtype=np.int32)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    depth = _check_programs(ops, args, offsets, atoms.shape[0])
    n_seg = offsets.size - 1
    ops, args, offsets = _fuse(ops, args, offsets)
    out = np.empty((n_seg, nw), dtype=np.uint64)
    if n_seg == 0 or nw == 0:
        return out, np.zeros(n_seg, dtype=np.int64)
    block = min(BLOCK_WORDS, nw)
    n_chunks = _n_chunks((nw + block - 1) // block)
    counts = np.zeros((n_chunks, n_seg), dtype=np.int64)
    stack = np.empty((n_chunks, depth, block), dtype=np.uint64)
    _run_kernel(atoms, ops, args, offsets, nw, tail_mask(n), out, counts, stack)
    return out, counts.sum(axis=0)


def run_programs(
    atom_words: NDArray[np.uint64],
    ops: NDArray[np.int32],
    args: NDArray[np.int32],
    offsets: NDArray[np.int64],
    n: int,
) -> NDArray[np.uint64]:
    """Segment bitsets ``uint64[n_seg, n_words]``; see :func:`run_programs_with_sizes`."""
    return run_programs_with_sizes(atom_words, ops, args, offsets, n)[0]


def overlaps(seg_words: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Pairwise intersection sizes ``int64[n_seg, n_seg]`` (diagonal = sizes; symmetric).

    Blocked over words so that all rows of a block fit in L2 while every pair reads them.
    """
    w = _check_words(seg_words, "seg_words", 2)
    n_seg, nw = w.shape
    if n_seg == 0 or nw == 0:
        return np.zeros((n_seg, n_seg), dtype=np.int64)
    block = int(max(64, min(4096, (256 * 1024) // (8 * n_seg))))
    n_chunks = _n_chunks((nw + block - 1) // block)
    acc = np.zeros((n_chunks, n_seg, n_seg), dtype=np.int64)
    _overlap_kernel(w, block, acc)
    upper = acc.sum(axis=0)
    return np.triu(upper) + np.triu(upper, 1).T


def members(words_row: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Indices (ascending ``int64``) of the set bits of one bitset row."""
    row = _check_words(words_row, "words_row", 1)
    out = np.empty(popcount(row), dtype=np.int64)
    if out.size:
        _members_kernel(row, out)
    return out


def members_all(
    seg_words: NDArray[np.uint64],
    sizes: NDArray[np.int64] | None = None,
    *,
    index_dtype: type[np.int64] | type[np.uint32] = np.int64,
) -> tuple[NDArray[np.int64] | NDArray[np.uint32], NDArray[np.int32]]:
    """All (customer index, segment index) pairs, segment-major, customers ascending within.

    Parameters
    ----------
    seg_words
        ``uint64[n_seg, n_words]``.
    sizes
        Popcounts of the rows if already known (saves a pass).
    index_dtype
        ``np.int64`` (default) or ``np.uint32`` (Polars' index type: gathers without a cast;
        needs fewer than 2**32 customers).

    Returns
    -------
    rows, segs
        ``index_dtype[total]`` customer indices and ``int32[total]`` segment indices.
    """
    w = _check_words(seg_words, "seg_words", 2)
    sizes = popcount(w) if sizes is None else np.asarray(sizes, dtype=np.int64)
    if sizes.shape != (w.shape[0],):
        msg = f"sizes must have one entry per row ({w.shape[0]}), got shape {sizes.shape}"
        raise ParameterError(msg)
    starts = np.zeros(w.shape[0] + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    total = int(starts[-1])
    dt = np.dtype(index_dtype)
    if dt not in (np.dtype(np.int64), np.dtype(np.uint32)):
        msg = f"index_dtype must be int64 or uint32, got {dt}"
        raise ParameterError(msg)
    if dt == np.uint32 and w.shape[1] * 64 > 2**32:
        msg = "index_dtype uint32 holds at most 2**32 customers; use int64"
        raise ParameterError(msg)
    rows = np.empty(total, dtype=dt)
    segs = np.empty(total, dtype=np.int32)
    if total:
        _members_all_kernel(w, starts, rows, segs)
    return rows, segs


def assign_groups(
    seg_words: NDArray[np.uint64],
    seg_ids: NDArray[np.int64],
    seg_codes: NDArray[np.uint32],
    fallback_code: int,
    n: int,
) -> NDArray[np.uint32]:
    """Exclusive assignment, first match wins: a code per customer (``uint32[n]``).

    Customer ``i`` gets ``seg_codes[g]`` for the first ``g`` with bit ``i`` set in
    ``seg_words[seg_ids[g]]`` and ``fallback_code`` when no listed segment holds it.
    """
    w = _check_words(seg_words, "seg_words", 2)
    if w.shape[1] != n_words_for(n):
        msg = f"seg_words has {w.shape[1]} words per row; n={n} customers need {n_words_for(n)}"
        raise ParameterError(msg)
    ids = np.ascontiguousarray(seg_ids, dtype=np.int64)
    codes = np.ascontiguousarray(seg_codes, dtype=np.uint32)
    if ids.shape != codes.shape or ids.ndim != 1:
        msg = "assign_groups: seg_ids and seg_codes must be 1-D of equal length"
        raise ParameterError(msg)
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        msg = f"assign_groups: segment ids must lie in 0..{w.shape[0] - 1}"
        raise ParameterError(msg)
    out = np.empty(n, dtype=np.uint32)
    if n:
        n_chunks = _n_chunks(w.shape[1])
        _groups_kernel(w, ids, codes, np.uint32(fallback_code), n, n_chunks, out)
    return out


def masked_sums(seg_words: NDArray[np.uint64], values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-segment sums of value columns over members: ``float64[n_seg, n_cols]``.

    Parameters
    ----------
    seg_words
        ``uint64[n_seg, n_words]``.
    values
        ``float64[n_cols, n]`` (finite; fill nulls with 0 beforehand and count valid members with
        :func:`popcount` of ``seg & valid``).
    """
    w = _check_words(seg_words, "seg_words", 2)
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.ndim != 2 or w.shape[1] != n_words_for(v.shape[1]):
        msg = f"masked_sums: values must be float64[n_cols, n] with n matching {w.shape[1]} words"
        raise ParameterError(msg)
    n_seg, nw = w.shape
    if n_seg == 0 or nw == 0 or v.shape[0] == 0:
        return np.zeros((n_seg, v.shape[0]), dtype=np.float64)
    n_chunks = _n_chunks(nw)
    acc = np.zeros((n_chunks, n_seg, v.shape[0], 64), dtype=np.float64)
    _masked_sums_kernel(w, v, acc)
    return acc.sum(axis=(0, 3))


def changes(
    dst_words: NDArray[np.uint64],
    dst_rows: NDArray[np.int64],
    src_words: NDArray[np.uint64],
    src_rows: NDArray[np.int64],
    mapping: NDArray[np.int64],
) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """Members of one side that the other side did not have, across two customer sets.

    ``dst_words[dst_rows[k]]`` and ``src_words[src_rows[k]]`` are the bitsets of one segment over
    two customer sets; ``mapping[i]`` is the bit of dst customer ``i`` in the src set (-1: not
    there). Returns ``only[k]`` (``uint64[K, n_dst_words]``): dst members whose src bit is unset
    (or who have none), and ``both[k]``: members on both sides.
    """
    d = _check_words(dst_words, "dst_words", 2)
    s = _check_words(src_words, "src_words", 2)
    m = np.ascontiguousarray(mapping, dtype=np.int64)
    dr = np.ascontiguousarray(dst_rows, dtype=np.int64)
    sr = np.ascontiguousarray(src_rows, dtype=np.int64)
    n = m.shape[0]
    if d.shape[1] != n_words_for(n) or dr.shape != sr.shape or dr.ndim != 1:
        msg = "changes: dst_words must cover mapping's customers; dst_rows and src_rows 1-D, equal"
        raise ParameterError(msg)
    for rows, w, name in ((dr, d, "dst_rows"), (sr, s, "src_rows")):
        if rows.size and (rows.min() < 0 or rows.max() >= w.shape[0]):
            msg = f"changes: {name} must lie in 0..{w.shape[0] - 1}"
            raise ParameterError(msg)
    if n and (m.max() >= s.shape[1] * 64 or m.min() < -1):
        msg = f"changes: mapping must hold -1 or bits of the src set (< {s.shape[1] * 64})"
        raise ParameterError(msg)
    out = np.zeros((dr.size, d.shape[1]), dtype=np.uint64)
    block = CHANGE_BLOCK_WORDS
    both = np.zeros((max(1, (d.shape[1] + block - 1) // block), dr.size), dtype=np.int64)
    if dr.size and n:
        _changes_kernel(d, dr, s, sr, m, block, out, both)
    return out, both.sum(axis=0)
