"""Kernels bound to their state arrays and called through their compiled entry point.

Calling an ``@njit`` function through numba's dispatcher types every argument on every call
(~70–90 ns per array, more for structured dtypes) before it picks the compiled overload. A
detector batch of one record runs every enabled kernel, each with 8–16 arrays, so the
dispatcher cost dominated a small batch (≈ 0.6 µs of ≈ 1.1 µs per kernel call, measured with
``whale_update``). :func:`bind` resolves the overload once, for exactly the types of the state
arrays and of a C-contiguous batch of the stream's dtype, and returns a step that calls the
overload's entry point directly (≈ 0.5 µs).

The entry point does **not** check its arguments: the batch must be C-contiguous with the
stream's dtype (:func:`conform` makes sure, once per batch) and the state arrays must never
be replaced, only written in place (they are bound here, by reference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba as nb
import numpy as np

__all__ = ["Step", "bind", "conform"]

#: a bound kernel: ``step(records, ts_detect_ns)``
Step = Callable[[np.ndarray, int], None]


def bind(kernel: Any, dtype: np.dtype, state: tuple[Any, ...], *, takes_time: bool) -> Step:
    """``kernel(records, *state[, ts_detect_ns])`` as a :data:`Step` over batches of
    ``dtype`` records; compiles (or loads from numba's cache) the exact overload now."""
    sample = np.zeros(1, dtype)
    args = (sample, *state, 0) if takes_time else (sample, *state)
    signature = tuple(nb.typeof(a) for a in args)
    kernel.compile(signature)
    entry = kernel.overloads[signature].entry_point
    if takes_time:
        def step(records: np.ndarray, ts_detect_ns: int) -> None:
            entry(records, *state, ts_detect_ns)
    else:
        def step(records: np.ndarray, ts_detect_ns: int) -> None:
            entry(records, *state)
    step.__qualname__ = f"bound {kernel.__name__}"
    return step


def conform(records: np.ndarray, dtype: np.dtype, stream: str) -> np.ndarray:
    """``records`` as the bound steps need them: a C-contiguous 1-d array of ``dtype``
    (copied if it is a strided view); any other dtype is a :class:`TypeError`."""
    if records.dtype != dtype or records.ndim != 1:
        raise TypeError(f"detectors: a batch of {stream!r} records must be a 1-d array of "
                        f"the bus dtype, got {records.dtype} with shape {records.shape}")
    return records if records.flags.c_contiguous else np.ascontiguousarray(records)
