"""The shape shared by detectors that join trades and books (spoofing, icebergs).

Both keep per-(symbol, side) float and int state, a kept trigger record per slot, and the
newest trade time seen per symbol (the *watermark*: a verdict about time ``t`` waits until
trades up to ``t`` have been seen). Their kernels take the same arguments, so this base holds
the arrays and calls them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .events import EventBuffer

__all__ = ["TwoStreamDetector"]


class TwoStreamDetector:
    """Arrays and kernel calls of a trades + books detector (see the module docstring).

    Subclasses set :attr:`trades_kernel` / :attr:`books_kernel` (njit functions taking
    ``(records, min_usd, f, i, trigger, watermark, params, out, out_state, ts_detect_ns)``)
    and call :meth:`_allocate`."""

    trades_kernel: Any
    books_kernel: Any

    def _allocate(self, symbols: int, min_usd: float, params: list[float],
                  f_shape: tuple[int, ...], i_shape: tuple[int, ...],
                  trigger_shape: tuple[int, ...], trigger_dtype: np.dtype) -> None:
        self.min_usd = np.full(symbols, float(min_usd))
        self.params = np.array(params, np.float64)
        self.f = np.zeros((symbols, *f_shape))
        self.i = np.zeros((symbols, *i_shape), np.int64)
        self.trigger = np.zeros((symbols, *trigger_shape), trigger_dtype)
        self.watermark = np.full(symbols, -1, np.int64)   # newest trade time seen

    def trades(self, trades: np.ndarray, events: EventBuffer, ts_detect_ns: int) -> None:
        """A batch of trade records."""
        type(self).trades_kernel(trades, *(*self.kernel_args(events), ts_detect_ns))

    def books(self, books: np.ndarray, events: EventBuffer, ts_detect_ns: int) -> None:
        """A batch of book records."""
        type(self).books_kernel(books, *(*self.kernel_args(events), ts_detect_ns))

    def kernel_args(self, events: EventBuffer) -> tuple[Any, ...]:
        """The arguments of both kernels between the records and the time."""
        return (self.min_usd, self.f, self.i, self.trigger, self.watermark, self.params,
                events.records, events.state)

    def reset(self, symbol_id: int) -> None:
        """Drop a symbol's state (a ring discontinuity)."""
        self.i[symbol_id] = 0
        self.watermark[symbol_id] = -1
