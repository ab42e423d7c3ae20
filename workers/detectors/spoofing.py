"""Spoofing: large resting size placed near the touch and pulled, not traded, within seconds.

From LIVE book records, a level within ``near_bps`` of its side's best price whose notional is
at least ``min_usd`` and whose size is at least ``size_ratio`` × the mean size of the side's
other shown levels becomes a *candidate* (up to ``slots`` per symbol and side). While the level
keeps at least ``1 − pull_frac`` of its largest displayed size it is watched; once it shrinks
below that within ``max_life_s`` of appearing, it was pulled. Trades at its price by the
aggressor that consumes that side (sells for a bid, buys for an ask) between its appearance and
the pull count as *traded*. The verdict waits until trades up to the pull time have been seen
(the trades ring's newest exchange time passed it), or until book time is ``grace_s`` past the
pull when the trades ring is quiet; it is a ``SPOOF`` event when the pulled size less the traded
size is at least ``pull_frac`` of the largest displayed size. A candidate whose price leaves the
book's shown range, or that lives past ``max_life_s``, is dropped. The trigger of an event is
the book record that showed the pull.

Records are expected per symbol in exchange-time order on each stream; the runner processes
trades before books in each step.
"""

from __future__ import annotations

import numba as nb

from shm.layout import DEPTH, BookState, Priority

from .checks import usable_trade
from .events import EventKind, emit, keep_trigger
from .two_streams import TwoStreamDetector

__all__ = ["SpoofState", "spoof_books", "spoof_trades"]

_LIVE = int(BookState.LIVE)
_SPOOF = int(EventKind.SPOOF)
_HIGH = int(Priority.HIGH)
FREE, WATCHING, PULLED = 0, 1, 2
# float columns: price, largest size, traded, pulled size, distance from touch (bps)
F_PX, F_SIZE, F_TRADED, F_PULLED, F_BPS = range(5)
# int columns: state, appeared (ns), pulled (ns)
I_STATE, I_T0, I_T1 = range(3)


class SpoofState(TwoStreamDetector):
    """Candidates of ``symbols`` symbol ids; thresholds in ``params`` (see the module doc)."""

    def __init__(self, symbols: int, min_usd: float = 250_000.0, near_bps: float = 10.0,
                 size_ratio: float = 5.0, pull_frac: float = 0.75, max_life_s: float = 5.0,
                 grace_s: float = 2.0, slots: int = 8) -> None:
        if symbols < 1 or slots < 1:
            raise ValueError(f"SpoofState: symbols and slots must be ≥ 1, got {symbols}, "
                             f"{slots}")
        if not (min_usd >= 0 and near_bps > 0 and size_ratio > 0 and 0 < pull_frac <= 1
                and max_life_s > 0 and grace_s > 0):
            raise ValueError("SpoofState: need min_usd ≥ 0, near_bps > 0, size_ratio > 0, "
                             "0 < pull_frac ≤ 1, max_life_s > 0, grace_s > 0")
        # trigger: per slot, the record that showed the pull
        self._allocate(symbols, min_usd, [near_bps / 1e4, size_ratio, pull_frac,
                                          max_life_s * 1e9, grace_s * 1e9],
                       (2, slots, 5), (2, slots, 3), (2, slots), DEPTH)


@nb.njit(cache=True)
def _verdicts(s, now_book, f, i, trigger, watermark, params, out, out_state,
              ts_detect_ns):  # pragma: no cover - njit
    """Decide the pulled candidates of symbol ``s`` whose trades have been seen."""
    for side in range(2):
        for m in range(f.shape[2]):
            if i[s, side, m, I_STATE] != PULLED:
                continue
            t1 = i[s, side, m, I_T1]
            if watermark[s] < t1 and now_book < t1 + params[4]:
                continue  # trades up to the pull may still come
            c = f[s, side, m]
            if c[F_PULLED] - c[F_TRADED] >= params[2] * c[F_SIZE]:
                emit(out, out_state, trigger[s, side, m], _SPOOF, _HIGH, 1 if side == 0 else -1,
                     ts_detect_ns, c[F_PX], c[F_SIZE], c[F_PULLED], c[F_TRADED],
                     (t1 - i[s, side, m, I_T0]) / 1e9, c[F_PX] * c[F_SIZE], c[F_BPS], 0.0)
            i[s, side, m, I_STATE] = FREE


@nb.njit(cache=True)
def spoof_trades(trades, min_usd, f, i, trigger, watermark, params, out, out_state,
                 ts_detect_ns):  # pragma: no cover - njit
    """Apply a batch of trades (see the module docstring)."""
    for k in range(len(trades)):
        t = trades[k]
        if not usable_trade(t, len(watermark)):
            continue
        s = t.symbol_id
        ts = t.ts_exchange_ns
        side = 0 if t.side == -1 else 1  # sells consume bids, buys consume asks
        for m in range(f.shape[2]):
            state = i[s, side, m, I_STATE]
            if state == FREE or f[s, side, m, F_PX] != t.price or ts < i[s, side, m, I_T0]:
                continue
            if state == PULLED and ts > i[s, side, m, I_T1]:
                continue
            f[s, side, m, F_TRADED] += t.qty
        if ts > watermark[s]:
            watermark[s] = ts
            _verdicts(s, -1, f, i, trigger, watermark, params, out, out_state, ts_detect_ns)


@nb.njit(cache=True)
def spoof_books(books, min_usd, f, i, trigger, watermark, params, out, out_state,
                ts_detect_ns):  # pragma: no cover - njit
    """Apply a batch of book records (see the module docstring)."""
    slots = f.shape[2]
    for k in range(len(books)):
        b = books[k]
        s = b.symbol_id
        if s >= len(min_usd) or b.state != _LIVE or b.n_bids == 0 or b.n_asks == 0:
            continue
        ts = b.ts_exchange_ns
        for side in range(2):
            n = b.n_bids if side == 0 else b.n_asks
            px = b.bid_px if side == 0 else b.ask_px
            qty = b.bid_qty if side == 0 else b.ask_qty
            worst = px[n - 1]
            # watched candidates: still there, pulled, or out of sight
            for m in range(slots):
                if i[s, side, m, I_STATE] != WATCHING:
                    continue
                c = f[s, side, m]
                if (side == 0 and c[F_PX] < worst) or (side == 1 and c[F_PX] > worst) or \
                        ts - i[s, side, m, I_T0] > params[3]:
                    i[s, side, m, I_STATE] = FREE  # left the shown range, or stayed: no spoof
                    continue
                now = 0.0
                for j in range(n):
                    if px[j] == c[F_PX]:
                        now = qty[j]
                        break
                if now >= (1.0 - params[2]) * c[F_SIZE]:
                    c[F_SIZE] = max(c[F_SIZE], now)
                    continue
                i[s, side, m, I_STATE] = PULLED
                i[s, side, m, I_T1] = ts
                c[F_PULLED] = c[F_SIZE] - now
                keep_trigger(trigger[s, side, m], b)
            # new candidates near the touch
            best = px[0]
            total = 0.0
            for j in range(n):
                total += qty[j]
            for j in range(n):
                dist = (best - px[j]) / best if side == 0 else (px[j] - best) / best
                if dist > params[0]:
                    break
                others = (total - qty[j]) / (n - 1) if n > 1 else 0.0  # the side's mean level
                if min_usd[s] <= 0 or qty[j] * px[j] < min_usd[s] or qty[j] < params[1] * others:
                    continue
                free = -1
                for m in range(slots):
                    state = i[s, side, m, I_STATE]
                    if state != FREE and f[s, side, m, F_PX] == px[j]:
                        free = -2  # already watched (or awaiting its verdict)
                        break
                    if state == FREE and free == -1:
                        free = m
                if free < 0:
                    continue
                c = f[s, side, free]
                c[F_PX], c[F_SIZE], c[F_TRADED], c[F_PULLED] = px[j], qty[j], 0.0, 0.0
                c[F_BPS] = dist * 1e4
                i[s, side, free, I_STATE] = WATCHING
                i[s, side, free, I_T0] = ts
        _verdicts(s, ts, f, i, trigger, watermark, params, out, out_state, ts_detect_ns)


SpoofState.trades_kernel = spoof_trades
SpoofState.books_kernel = spoof_books
