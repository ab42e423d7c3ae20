"""Icebergs: a touch price that keeps refilling while trades consume far more than it shows.

Per symbol and side, an *episode* lasts while the side's best price (from LIVE book records)
stays the same. During it the kernel keeps the largest size shown there and counts *refills*:
book records where the shown size went up at that same price. Trades at that price by the
aggressor that consumes the side (sells hit bids, buys lift asks) with exchange times inside
the episode add to *traded*. When the touch moves, the episode closes; its verdict waits until
the trades ring has passed the closing time (or book time is ``grace_s`` past it, if trades
are quiet), and it is an ``ICEBERG`` event when ``traded ≥ traded_ratio × largest shown`` and
``refills ≥ min_refills`` and the traded notional is at least ``min_usd``. The trigger is the
book record that closed the episode. Records are expected in exchange-time order per stream.
"""

from __future__ import annotations

import numba as nb

from shm.layout import DEPTH, BookState, Priority

from .checks import usable_trade
from .events import EventKind, emit, keep_trigger
from .two_streams import TwoStreamDetector

__all__ = ["IcebergState", "iceberg_books", "iceberg_trades"]

_LIVE = int(BookState.LIVE)
_ICEBERG = int(EventKind.ICEBERG)
_HIGH = int(Priority.HIGH)
# per (symbol, side, episode: 0 open, 1 closed awaiting its verdict) float columns
E_PX, E_SHOWN, E_LAST, E_TRADED = range(4)
# int columns: active, refills, start (ns), end (ns)
E_ON, E_REFILLS, E_T0, E_T1 = range(4)


class IcebergState(TwoStreamDetector):
    """Episodes of ``symbols`` symbol ids (see the module docstring)."""

    def __init__(self, symbols: int, min_usd: float = 250_000.0, traded_ratio: float = 5.0,
                 min_refills: int = 3, grace_s: float = 2.0) -> None:
        if symbols < 1 or min_refills < 1 or not traded_ratio > 1 or not grace_s > 0 \
                or not min_usd >= 0:
            raise ValueError("IcebergState: need symbols ≥ 1, min_refills ≥ 1, "
                             "traded_ratio > 1, grace_s > 0, min_usd ≥ 0")
        # per side two episodes (open, closed awaiting its verdict); trigger: the closing record
        self._allocate(symbols, min_usd, [traded_ratio, float(min_refills), grace_s * 1e9],
                       (2, 2, 4), (2, 2, 4), (2,), DEPTH)


@nb.njit(cache=True)
def _verdict(s, side, now_book, min_usd, f, i, trigger, watermark, params, out, out_state,
             ts_detect_ns):  # pragma: no cover - njit
    """Decide the closed episode of (s, side) if its trades have been seen (or must be)."""
    if i[s, side, 1, E_ON] == 0:
        return
    t1 = i[s, side, 1, E_T1]
    if watermark[s] < t1 and now_book < t1 + params[2]:
        return
    e = f[s, side, 1]
    refills = i[s, side, 1, E_REFILLS]
    if e[E_TRADED] >= params[0] * e[E_SHOWN] and refills >= params[1] and \
            e[E_TRADED] * e[E_PX] >= min_usd[s] and min_usd[s] > 0:
        emit(out, out_state, trigger[s, side], _ICEBERG, _HIGH, 1 if side == 0 else -1,
             ts_detect_ns, e[E_PX], e[E_TRADED], e[E_SHOWN], float(refills),
             e[E_TRADED] / e[E_SHOWN], (t1 - i[s, side, 1, E_T0]) / 1e9, e[E_TRADED] * e[E_PX],
             0.0)
    i[s, side, 1, E_ON] = 0


@nb.njit(cache=True)
def iceberg_trades(trades, min_usd, f, i, trigger, watermark, params, out, out_state,
                   ts_detect_ns):  # pragma: no cover - njit
    """Apply a batch of trades (see the module docstring)."""
    for k in range(len(trades)):
        t = trades[k]
        if not usable_trade(t, len(watermark)):
            continue
        s = t.symbol_id
        side = 0 if t.side == -1 else 1  # sells consume bids, buys consume asks
        ts = t.ts_exchange_ns
        for ep in range(2):
            if i[s, side, ep, E_ON] and f[s, side, ep, E_PX] == t.price and \
                    ts >= i[s, side, ep, E_T0] and (ep == 0 or ts <= i[s, side, ep, E_T1]):
                f[s, side, ep, E_TRADED] += t.qty
        if ts > watermark[s]:
            watermark[s] = ts
            for sd in range(2):
                _verdict(s, sd, -1, min_usd, f, i, trigger, watermark, params, out, out_state,
                         ts_detect_ns)


@nb.njit(cache=True)
def iceberg_books(books, min_usd, f, i, trigger, watermark, params, out, out_state,
                  ts_detect_ns):  # pragma: no cover - njit
    """Apply a batch of book records (see the module docstring)."""
    for k in range(len(books)):
        b = books[k]
        s = b.symbol_id
        if s >= len(watermark) or b.state != _LIVE or b.n_bids == 0 or b.n_asks == 0:
            continue
        ts = b.ts_exchange_ns
        for side in range(2):
            px = b.bid_px[0] if side == 0 else b.ask_px[0]
            size = b.bid_qty[0] if side == 0 else b.ask_qty[0]
            e = f[s, side, 0]
            if i[s, side, 0, E_ON] and e[E_PX] == px:
                if size > e[E_LAST]:
                    i[s, side, 0, E_REFILLS] += 1
                e[E_SHOWN] = max(e[E_SHOWN], size)
                e[E_LAST] = size
                continue
            if i[s, side, 0, E_ON]:  # the touch moved: the episode closes
                if i[s, side, 1, E_ON]:  # the previous verdict cannot wait any longer
                    _verdict(s, side, 1 << 62, min_usd, f, i, trigger, watermark, params,
                             out, out_state, ts_detect_ns)
                f[s, side, 1] = f[s, side, 0]
                i[s, side, 1] = i[s, side, 0]
                i[s, side, 1, E_T1] = ts
                keep_trigger(trigger[s, side], b)
            e[E_PX], e[E_SHOWN], e[E_LAST], e[E_TRADED] = px, size, size, 0.0
            i[s, side, 0, E_ON], i[s, side, 0, E_REFILLS], i[s, side, 0, E_T0] = 1, 0, ts
        for side in range(2):
            _verdict(s, side, ts, min_usd, f, i, trigger, watermark, params, out, out_state,
                     ts_detect_ns)


IcebergState.trades_kernel = iceberg_trades
IcebergState.books_kernel = iceberg_books
