"""Memory-ordering primitives and the bus's two kernels: commit (writer) and read (reader).

CPython and numpy give no fences, and numba exposes no atomics (numba #2988), so these are
LLVM atomic instructions emitted through ``numba.extending.intrinsic`` on raw addresses.
Kernels take plain integers (addresses, sizes), not arrays: numba dispatch costs ~250 ns for a
handful of ints versus ~600 ns for three array arguments (measured on this machine).

Ordering contract (see DESIGN.md section 4), written here because the code relies on it:

* Writer: ``tail_intent = n + k`` -> release fence -> slot stores -> ``store-release tail``
  -> seq_cst fence -> load the doorbell's parked-readers bitmap. The seq_cst fence is the
  StoreLoad barrier that makes "store tail, then look for parked readers" race-free against a
  reader that does "set my parked bit (seq_cst RMW), then re-check tail".
* Reader (:func:`read_kernel`): load-acquire tail -> copy slots -> acquire fence -> load
  ``tail_intent``. Every copied record with ``seq < tail_intent - capacity`` may have been
  overwritten mid-copy and is dropped; the acquire fence keeps the copy's loads before the
  ``tail_intent`` load (x86-64 keeps loads in order; the fence also binds the compiler).

The bus is declared x86-64 only (TSO); the fences also make the compiler keep program order.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .layout import LATEST_ROW_HEADER, H

__all__ = [
    "ST_DELIVERED",
    "ST_DISCONTINUITIES",
    "ST_GENERATION",
    "ST_INVALID",
    "ST_LAPPED",
    "ST_LOST",
    "ST_NEXT",
    "ST_TAIL",
    "address_of",
    "commit_kernel",
    "compare_exchange_u32",
    "fetch_and",
    "fetch_or",
    "futex_wake",
    "latest_store_kernel",
    "pending_kernel",
    "read_kernel",
    "typed_pointer",
]

_SYS_FUTEX = 202  # x86-64
_FUTEX_WAKE = 1   # shared (no FUTEX_PRIVATE_FLAG): the word lives in a MAP_SHARED file
_TAIL_INTENT = H.TAIL_INTENT
_TAIL = H.TAIL
_WAKE_SEQ = H.WAKE_SEQ
_WAKES = H.WAKES
_ROW_HEADER = LATEST_ROW_HEADER.itemsize


def _ptr(builder: ir.IRBuilder, addr: ir.Value, bits: int) -> ir.Value:
    return builder.inttoptr(addr, ir.PointerType(ir.IntType(bits)))


@intrinsic
def _load_u64(typingctx, addr):
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_ptr(builder, args[0], 64), "acquire", 8)
    return types.int64(types.int64), codegen


@intrinsic
def _load_u32(typingctx, addr):
    def codegen(context, builder, sig, args):
        value = builder.load_atomic(_ptr(builder, args[0], 32), "acquire", 4)
        return builder.zext(value, ir.IntType(64))
    return types.int64(types.int64), codegen


@intrinsic
def _store_u64(typingctx, addr, value):
    def codegen(context, builder, sig, args):
        builder.store_atomic(args[1], _ptr(builder, args[0], 64), "release", 8)
        return context.get_dummy_value()
    return types.void(types.int64, types.int64), codegen


@intrinsic
def _store_u32(typingctx, addr, value):
    def codegen(context, builder, sig, args):
        low = builder.trunc(args[1], ir.IntType(32))
        builder.store_atomic(low, _ptr(builder, args[0], 32), "release", 4)
        return context.get_dummy_value()
    return types.void(types.int64, types.int64), codegen


def _rmw_u64(op: str):  # returns a numba intrinsic
    @intrinsic
    def _rmw(typingctx, addr, value):
        def codegen(context, builder, sig, args):
            return builder.atomic_rmw(op, _ptr(builder, args[0], 64), args[1], "seq_cst")
        return types.int64(types.int64, types.int64), codegen
    return _rmw


_fetch_or_u64 = _rmw_u64("or")
_fetch_and_u64 = _rmw_u64("and")


@intrinsic
def _cas_u32(typingctx, addr, expected, new):
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        pair = builder.cmpxchg(_ptr(builder, args[0], 32), builder.trunc(args[1], i32),
                               builder.trunc(args[2], i32), "seq_cst", "seq_cst")
        return builder.zext(builder.extract_value(pair, 0), ir.IntType(64))
    return types.int64(types.int64, types.int64, types.int64), codegen


def _fence_intrinsic(ordering: str):
    @intrinsic
    def _fence(typingctx):
        def codegen(context, builder, sig, args):
            builder.fence(ordering)
            return context.get_dummy_value()
        return types.void(), codegen
    return _fence


_fence_seq_cst = _fence_intrinsic("seq_cst")
_fence_release = _fence_intrinsic("release")
_fence_acquire = _fence_intrinsic("acquire")


@intrinsic
def _monotonic_ns(typingctx):
    """CLOCK_MONOTONIC in ns, the clock of ``time.perf_counter_ns()`` (vDSO call, ~27 ns).

    Declared as an external symbol, not a ctypes pointer, so the kernels stay cacheable.
    """
    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        ts_type = ir.LiteralStructType([i64, i64])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i32, [i32, ts_type.as_pointer()]), "clock_gettime")
        ts = cgutils.alloca_once(builder, ts_type)
        builder.call(fn, [ir.Constant(i32, 1), ts])  # 1 = CLOCK_MONOTONIC
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)
    return types.int64(), codegen


@intrinsic
def _futex_wake_all(typingctx, addr):
    """``syscall(SYS_futex, addr, FUTEX_WAKE, INT_MAX)`` (shared futex): ~0.45 µs against
    ~1.5 µs through ctypes. ``syscall`` is an external symbol, so kernels stay cacheable."""
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64], var_arg=True), "syscall")
        const = [ir.Constant(i64, v) for v in (_SYS_FUTEX, _FUTEX_WAKE, 0x7FFFFFFF, 0)]
        return builder.call(fn, [const[0], args[0], const[1], const[2], const[3], const[3],
                                 const[3]])
    return types.int64(types.int64), codegen


@intrinsic
def _i64_ptr(typingctx, addr):
    def codegen(context, builder, sig, args):
        return _ptr(builder, args[0], 64)
    return types.CPointer(types.int64)(types.int64), codegen


@intrinsic
def _u64_ptr(typingctx, addr):
    def codegen(context, builder, sig, args):
        return _ptr(builder, args[0], 64)
    return types.CPointer(types.uint64)(types.int64), codegen


def typed_pointer(nbtype: types.Type) -> Any:
    """An intrinsic turning an int64 address into a ``CPointer(nbtype)``, so njit code can view
    raw memory with ``nb.carray(ptr(addr), shape)`` (``nbtype`` may be a record type)."""
    @intrinsic
    def ptr(typingctx, addr):
        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], context.get_data_type(nbtype).as_pointer())
        return types.CPointer(nbtype)(types.int64), codegen
    return ptr


# Not cached on disk: numba's cache numbers each new specialization of a function by what
# its index file holds when it saves, so processes compiling *different* specializations at
# once (a fresh install: feeds, detectors and publisher starting together, each with its own
# dtypes) can write one file number for two signatures, and a process then loads another
# dtype's code ("can't unbox array", seen in CI as a publisher crash loop). Compiling here
# costs ~50 ms per dtype once per process.
@nb.njit(cache=False)
def address_of(array: np.ndarray) -> int:
    """Data address of an array: ~0.5 µs against ~1.5 µs for ``array.ctypes.data``."""
    return array.ctypes.data


@nb.njit(nb.int64(nb.int64), cache=True)
def futex_wake(addr: int) -> int:
    """Wake every process sleeping on the futex word at ``addr``; returns how many woke."""
    return _futex_wake_all(addr)


@nb.njit(nb.int64(nb.int64, nb.int64), cache=True)
def fetch_or(addr: int, bits: int) -> int:
    """Atomically OR ``bits`` into the u64 at ``addr`` (seq_cst: a full fence); returns the old."""
    return _fetch_or_u64(addr, bits)


@nb.njit(nb.int64(nb.int64, nb.int64), cache=True)
def fetch_and(addr: int, bits: int) -> int:
    """Atomically AND ``bits`` into the u64 at ``addr`` (seq_cst); returns the old value."""
    return _fetch_and_u64(addr, bits)


@nb.njit(nb.int64(nb.int64, nb.int64, nb.int64), cache=True)
def compare_exchange_u32(addr: int, expected: int, new: int) -> int:
    """Store ``new`` into the u32 at ``addr`` if it holds ``expected``; returns the old value."""
    return _cas_u32(addr, expected, new)


@nb.njit(nb.int64(nb.int64, nb.int64, nb.int64, nb.int64, nb.int64, nb.int64, nb.int64,
                  nb.int64), cache=True)
def commit_kernel(hdr: int, ring: int, mask: int, words: int, src: int, count: int,
                  stamp_word: int, waiters: int) -> int:
    """Publish ``count`` records of ``words`` u64 words from ``src`` into the ring at ``ring``.

    Writes each record's ``seq`` (word 0) and, if ``stamp_word >= 0``, the commit stamp
    (CLOCK_MONOTONIC read just before the records become visible). ``waiters`` is the address of
    the doorbell's parked bitmap (u64); if a reader is parked the kernel bumps ``wake_seq`` and
    issues FUTEX_WAKE. Returns ``new_tail << 1 | woke``.
    The caller guarantees ``count <= capacity`` and that only one writer exists.
    """
    slots = nb.carray(_u64_ptr(ring), (mask + 1, words))
    rows = nb.carray(_u64_ptr(src), (count, words))
    start = _load_u64(hdr + _TAIL)
    # tail_intent never goes down: after a takeover it may still cover slots the dead writer
    # was overwriting, which readers must keep treating as lost.
    _store_u64(hdr + _TAIL_INTENT, max(_load_u64(hdr + _TAIL_INTENT), start + count))
    _fence_release()  # tail_intent is visible before any slot is overwritten
    stamp = _monotonic_ns()
    for i in range(count):
        seq = start + i
        slot = slots[seq & mask]
        slot[:] = rows[i]
        slot[0] = seq
        if stamp_word >= 0:
            slot[stamp_word] = stamp
    _store_u64(hdr + _TAIL, start + count)
    _fence_seq_cst()  # StoreLoad: tail before reading the waiter count (see module doc)
    if waiters != 0 and _load_u64(waiters) != 0:
        _store_u32(hdr + _WAKE_SEQ, _load_u32(hdr + _WAKE_SEQ) + 1)
        _futex_wake_all(hdr + _WAKE_SEQ)
        _store_u64(hdr + _WAKES, _load_u64(hdr + _WAKES) + 1)  # the header's wake counter
        return (start + count) << 1 | 1
    return (start + count) << 1


@nb.njit(nb.void(nb.int64, nb.int64, nb.int64), cache=True)
def latest_store_kernel(row: int, src: int, words: int) -> None:
    """Seqlock store of one latest-table row (see ``shm.latest``) from njit code: ``version``
    odd -> release fence -> ``words`` u64 words from ``src`` into the record area -> ``updates``
    + 1 -> store-release ``version`` even. The release fence keeps the odd version before the
    record's stores (LLVM may not sink them above it); the store-release keeps them before the
    even one. ``row`` is :meth:`shm.LatestWriter.row_address`; one writer per table.
    """
    version: int = _load_u64(row)
    _store_u64(row, version + 1)
    _fence_release()
    dst = nb.carray(_u64_ptr(row + _ROW_HEADER), (words,))
    data = nb.carray(_u64_ptr(src), (words,))
    for i in range(words):
        dst[i] = data[i]
    _store_u64(row + 8, _load_u64(row + 8) + 1)
    _store_u64(row, version + 2)


_I64 = nb.int64


# Reader state: an int64 array owned by one Reader, updated only by read_kernel (and by the
# reader's control path when it re-opens a segment). Indices:
ST_NEXT, ST_TAIL, ST_DELIVERED, ST_LAPPED, ST_LOST, ST_INVALID, ST_GENERATION, \
    ST_DISCONTINUITIES = range(8)
_GENERATION = H.GENERATION


@nb.njit(_I64(_I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64), cache=True)
def read_kernel(hdr: int, ring: int, mask: int, words: int, limit: int, dst: int,
                until_ns: int, margin: int, state: int) -> int:
    """Wait for, copy and validate the records after the reader's next seq (copy-then-validate).

    Spins (atomic acquire loads: LLVM cannot hoist them, unlike plain loads, numba #1351) while
    the ring's tail equals ``state[ST_NEXT]`` and CLOCK_MONOTONIC < ``until_ns`` (0: no spin).
    A reader more than a capacity behind jumps to ``tail - capacity + margin``. Copies at most
    ``limit`` records to ``dst``, reloads ``tail_intent`` and drops rows that may have been
    overwritten during the copy, checks each row's ``seq`` (a failing row is dropped, never
    delivered), moves the intact rows to the front of ``dst`` and updates the counters in
    ``state``. Returns the number of rows delivered, or -1 if nothing new arrived.
    """
    st = nb.carray(_i64_ptr(state), (8,))
    start = st[ST_NEXT]
    tail: int = _load_u64(hdr + _TAIL)
    # Reading the clock on every turn (~27 ns, vDSO) paces the loads so that the spinning
    # reader does not keep stealing the tail's cache line from the writer. No x86 `pause`:
    # under KVM it causes pause-loop exits (measured here: +0.4 µs p50).
    while tail <= start and until_ns != 0 and _monotonic_ns() < until_ns:
        tail = _load_u64(hdr + _TAIL)
    if tail <= start:  # nothing new (start may lie in the future: Reader(start=seq))
        return -1
    generation = _load_u64(hdr + _GENERATION)
    if generation != st[ST_GENERATION]:
        st[ST_GENERATION] = generation
        st[ST_DISCONTINUITIES] += 1
    capacity = mask + 1
    if tail - start > capacity:  # lapped before the copy
        jump = tail - capacity + min(margin, capacity - 1)
        st[ST_LAPPED] += 1
        st[ST_LOST] += jump - start
        start = jump
    count = min(tail - start, limit)
    slots = nb.carray(_u64_ptr(ring), (capacity, words))
    out = nb.carray(_u64_ptr(dst), (count, words))
    first = start & mask
    n1 = min(count, capacity - first)
    out[:n1] = slots[first:first + n1]
    if count > n1:
        out[n1:] = slots[:count - n1]
    _fence_acquire()  # the copy's loads complete before tail_intent is read
    skip = max(0, min(count, _load_u64(hdr + _TAIL_INTENT) - capacity - start))
    good = skip
    while good < count and out[good, 0] == start + good:
        good += 1
    if skip:  # lapped during the copy
        st[ST_LAPPED] += 1
        st[ST_LOST] += skip
        out[:good - skip] = out[skip:good].copy()
    if good < count:
        st[ST_INVALID] += 1
        st[ST_NEXT] = start + good + 1
    else:
        st[ST_NEXT] = start + count
    st[ST_TAIL] = tail
    st[ST_DELIVERED] += good - skip
    return good - skip


@nb.njit(nb.int64(nb.int64, nb.int64, nb.int64, nb.int64), cache=True)
def pending_kernel(tails: int, nexts: int, count: int, out: int) -> int:
    """For ``count`` rings, whose tail-word and reader next-seq-word addresses are the int64s
    at ``tails`` and ``nexts``, write the indices of those with records to read to the int64s
    at ``out``; returns how many. One call instead of a poll per ring (≈ 2 µs each from
    Python). The tail is an acquire load, as in :func:`read_kernel`: what it shows is
    committed; a commit landing just after it is seen by the next call."""
    t = nb.carray(_i64_ptr(tails), (count,))
    nx = nb.carray(_i64_ptr(nexts), (count,))
    hits = nb.carray(_i64_ptr(out), (count,))
    m = 0
    for k in range(count):
        if _load_u64(t[k]) > nb.carray(_i64_ptr(nx[k]), (1,))[0]:
            hits[m] = k
            m += 1
    return m
