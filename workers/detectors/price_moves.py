"""Per-second price signals: momentum, volatility, mean reversion and the market regime.

Trades fill one-second buckets (last price, volume) per symbol, kept for ``long_s`` seconds.
When the first trade of a later second arrives, the second ``h`` that just ended is evaluated
(so the result does not depend on batching), with prices carried forward over empty seconds
and per-second log returns ``rᵢ = ln(pᵢ / pᵢ₋₁)``:

* **Momentum**: ``m = ln(p_h / p_{h−W})`` over ``momentum_s = W``; it fires when
  ``|m| ≥ k · σ · √W`` and the volume of the last ``W`` seconds is at least ``volume_ratio`` ×
  the average volume per ``W`` before them, ``σ`` being the standard deviation of the returns
  of the ``long_s`` window before the last ``W`` seconds.
* **Volatility spike**, on two timeframes: ``σ_w / σ_base ≥ vol_ratio`` for ``w`` = ``short_s``
  or ``medium_s``, ``σ_w`` over the last ``w`` seconds and ``σ_base`` over the rest of the
  ``long_s`` window (the shorter timeframe is checked first; one event per cooldown).

* **Mean reversion**: ``z = (p_h − VWAP) / σ_p`` over ``long_s`` (``σ_p`` the standard
  deviation of the per-second prices); ``|z|`` rising to ``reversion_z`` fires once, and the
  signal re-arms when ``|z|`` falls below ``reversion_exit_z``.

* **Regime**: quiet, ranging, trending or volatile. ``σ`` over ``long_s`` is compared with a
  slow baseline (an exponential average of it, half-life ``regime_baseline_s``); the trend is
  ``t = |ln(p_h / p_{h−long_s})| / (σ · √long_s)``. Volatile if ``σ ≥ regime_volatile ×
  baseline``, else trending if ``t ≥ regime_trend_t``, else quiet if ``σ ≤ regime_quiet ×
  baseline``, else ranging. A new regime must hold for ``regime_confirm_s`` consecutive
  evaluations before it replaces the current one (hysteresis); each change is a ``REGIME``
  event (the first classification too).

Baselines leave out the window they are compared with, so a burst does not raise its own bar.

Each needs ``long_s`` seconds of history (a reset or a new symbol waits that long) and then
keeps quiet for ``cooldown_s`` after firing. The trigger of an event is the trade that ended
second ``h``. Late trades (their second already evaluated) are counted and ignored.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np

from shm.layout import Priority

from .checks import usable_trade
from .events import EventBuffer, EventKind, emit

__all__ = ["PriceMoveConfig", "PriceMoveState", "price_move_update"]

_MOMENTUM = int(EventKind.MOMENTUM)
_VOLATILITY = int(EventKind.VOLATILITY)
_REVERSION = int(EventKind.MEAN_REVERSION)
_REGIME = int(EventKind.REGIME)
_MEDIUM = int(Priority.MEDIUM)
QUIET, RANGING, TRENDING, VOLATILE = 1, 2, 3, 4   # regime codes (0: not classified yet)
_HIGH = int(Priority.HIGH)
_NS = 1_000_000_000
# per-symbol int64 columns: head second, first second seen, momentum and volatility quiet
# until, mean reversion fired (1 until |z| falls below the exit level)
I_HEAD, I_FIRST, I_MOM_UNTIL, I_VOL_UNTIL, I_REV_FIRED = range(5)
# then the regime: current, candidate, consecutive evaluations of the candidate
I_REGIME, I_CANDIDATE, I_CANDIDATE_N = range(5, 8)


class PriceMoveConfig:
    """Windows (s) and thresholds; validated here, read by the kernel as one float array."""

    def __init__(self, momentum_s: int = 10, short_s: int = 60, long_s: int = 900,
                 medium_s: int = 300,
                 k_sigma: float = 4.0, volume_ratio: float = 2.0, vol_ratio: float = 3.0,
                 cooldown_s: int = 30, reversion_z: float = 4.0,
                 reversion_exit_z: float = 1.0, regime_trend_t: float = 2.0,
                 regime_volatile: float = 2.0, regime_quiet: float = 0.5,
                 regime_confirm_s: int = 30, regime_baseline_s: float = 3600.0) -> None:
        if not 2 <= momentum_s < long_s or not 2 <= short_s <= medium_s < long_s:
            raise ValueError(f"PriceMoveConfig: need 2 ≤ momentum_s < long_s and 2 ≤ short_s "
                             f"≤ medium_s < long_s, got {momentum_s}, {short_s}, {medium_s}, "
                             f"{long_s}")
        for name, value in (("k_sigma", k_sigma), ("volume_ratio", volume_ratio),
                            ("vol_ratio", vol_ratio)):
            if not value > 0:
                raise ValueError(f"PriceMoveConfig: {name} must be > 0, got {value}")
        if cooldown_s < 0:
            raise ValueError(f"PriceMoveConfig: cooldown_s must be ≥ 0, got {cooldown_s}")
        if not 0 <= reversion_exit_z < reversion_z:
            raise ValueError(f"PriceMoveConfig: need 0 ≤ reversion_exit_z < reversion_z, got "
                             f"{reversion_exit_z}, {reversion_z}")
        if not (regime_trend_t > 0 and regime_volatile > 1 and 0 < regime_quiet < 1
                and regime_confirm_s >= 1 and regime_baseline_s > 0):
            raise ValueError("PriceMoveConfig: need regime_trend_t > 0, regime_volatile > 1, "
                             "0 < regime_quiet < 1, regime_confirm_s ≥ 1, "
                             "regime_baseline_s > 0")
        # per-evaluation (1 s) weight of the baseline's exponential average
        alpha = 1.0 - 0.5 ** (1.0 / regime_baseline_s)
        self.params = np.array([momentum_s, short_s, long_s, k_sigma, volume_ratio, vol_ratio,
                                cooldown_s, reversion_z, reversion_exit_z, regime_trend_t,
                                regime_volatile, regime_quiet, regime_confirm_s, alpha,
                                medium_s], np.float64)
        self.long_s = long_s


class PriceMoveState:
    """Second buckets and cooldowns of ``symbols`` symbol ids."""

    def __init__(self, symbols: int, config: PriceMoveConfig | None = None) -> None:
        if symbols < 1:
            raise ValueError(f"PriceMoveState: symbols must be ≥ 1, got {symbols}")
        self.config = config or PriceMoveConfig()
        n = self.config.long_s + 1
        self.price = np.zeros((symbols, n))              # last price of each second (0: none)
        self.prev = np.zeros((symbols, n))               # the price in force before it
        self.volume = np.zeros((symbols, n))
        self.quote = np.zeros((symbols, n))              # Σ price × qty of each second
        self.second = np.full((symbols, n), -1, np.int64)
        self.ints = np.full((symbols, 8), -1, np.int64)  # I_HEAD .. I_CANDIDATE_N
        self.ints[:, I_REGIME:] = 0
        self.baseline = np.zeros(symbols)                # slow average of σ (0: none yet)
        self.late = np.zeros(symbols, np.int64)
        self.skipped = np.zeros(1, np.int64)
        self._scratch = np.zeros((2, n))                 # returns, prices of one evaluation

    def kernel_args(self, events: EventBuffer) -> tuple[Any, ...]:
        """The arguments of :func:`price_move_update` between the records and the time."""
        return (self.config.params, self.price, self.prev, self.volume, self.quote,
                self.second, self.ints, self.baseline, self.late, self.skipped, self._scratch,
                events.records, events.state)

    def update(self, trades: np.ndarray, events: EventBuffer, ts_detect_ns: int) -> None:
        """Run one batch of trade records; events go to ``events``."""
        price_move_update(trades, *(*self.kernel_args(events), ts_detect_ns))

    def reset(self, symbol_id: int) -> None:
        """Forget a symbol (a ring discontinuity): it needs ``long_s`` of history again."""
        self.second[symbol_id] = -1
        self.ints[symbol_id] = -1
        self.ints[symbol_id, I_REGIME:] = 0
        self.baseline[symbol_id] = 0.0


@nb.njit(cache=True)
def _stdev(x, n):  # pragma: no cover - njit
    if n < 2:
        return np.nan
    mean = 0.0
    for i in range(n):
        mean += x[i]
    mean /= n
    acc = 0.0
    for i in range(n):
        acc += (x[i] - mean) ** 2
    return math.sqrt(acc / (n - 1))


@nb.njit(cache=True)
def _evaluate(t, s, h, params, price, prev, volume, quote, second, ints, baseline, scratch,
              out, out_state, ts_detect_ns):  # pragma: no cover - njit
    """Evaluate second ``h`` of symbol ``s`` (its buckets are complete)."""
    w, short, long_ = int(params[0]), int(params[1]), int(params[2])
    if h - ints[s, I_FIRST] < long_:
        return  # not enough history yet
    n = price.shape[1]
    first = h - long_
    base = 0.0  # the price in force at the end of second `first`
    for j in range(first, h + 1):
        k = j % n
        if second[s, k] == j:
            base = price[s, k] if j == first else prev[s, k]
            break
    if not base > 0.0:
        return
    rets, prices = scratch[0], scratch[1]
    last = p_w = base
    count = 0
    vol_w = vol_long = notional = 0.0
    for j in range(first + 1, h + 1):
        k = j % n
        present = second[s, k] == j
        p = price[s, k] if present else last
        rets[count] = math.log(p / last)
        prices[count] = p
        count += 1
        if present:
            vol_long += volume[s, k]
            notional += quote[s, k]
            if j > h - w:
                vol_w += volume[s, k]
        if j == h - w:
            p_w = p
        last = p
    # baselines exclude the window they are compared with: a burst must not raise its own bar
    sigma = _stdev(rets, count - w)
    move = math.log(last / p_w)
    avg_w = (vol_long - vol_w) * w / (long_ - w)
    if sigma > 0.0 and h >= ints[s, I_MOM_UNTIL] and abs(move) >= params[3] * sigma * \
            math.sqrt(w) and vol_w >= params[4] * avg_w:
        ints[s, I_MOM_UNTIL] = h + int(params[6])
        emit(out, out_state, t, _MOMENTUM, _HIGH, 1 if move > 0 else -1, ts_detect_ns, move,
             abs(move) / (sigma * math.sqrt(w)), vol_w, vol_w / avg_w if avg_w > 0 else np.inf,
             last, p_w, float(w), 0.0)
    for span in (short, int(params[14])):  # the two timeframes, shorter first
        if h < ints[s, I_VOL_UNTIL]:
            break
        sigma_short = _stdev(rets[count - span:count], span)
        sigma_base = _stdev(rets, count - span)
        if sigma_base > 0.0 and sigma_short >= params[5] * sigma_base:
            ints[s, I_VOL_UNTIL] = h + int(params[6])
            emit(out, out_state, t, _VOLATILITY, _HIGH, 0, ts_detect_ns, sigma_short,
                 sigma_base, sigma_short / sigma_base, float(span), float(long_), last, 0.0,
                 0.0)
    sigma_p = _stdev(prices, count)
    if vol_long > 0.0 and sigma_p > 0.0:
        vwap = notional / vol_long
        z = (last - vwap) / sigma_p
        if ints[s, I_REV_FIRED] == 1 and abs(z) < params[8]:
            ints[s, I_REV_FIRED] = 0
        elif ints[s, I_REV_FIRED] != 1 and abs(z) >= params[7]:
            ints[s, I_REV_FIRED] = 1
            emit(out, out_state, t, _REVERSION, _HIGH, 1 if z > 0 else -1, ts_detect_ns, z,
                 last, vwap, sigma_p, float(long_), 0.0, 0.0, 0.0)
    _regime(t, s, params, ints, baseline, _stdev(rets, count), math.log(last / base),
            long_, out, out_state, ts_detect_ns)


@nb.njit(cache=True)
def _regime(t, s, params, ints, baseline, sigma, drift, long_, out, out_state,
            ts_detect_ns):  # pragma: no cover - njit
    """Classify one evaluation and apply the hysteresis (module docstring)."""
    if not sigma > 0.0:
        return
    if baseline[s] == 0.0:
        baseline[s] = sigma
    else:
        baseline[s] += params[13] * (sigma - baseline[s])
    trend = abs(drift) / (sigma * math.sqrt(long_))
    ratio = sigma / baseline[s]
    if ratio >= params[10]:
        new = VOLATILE
    elif trend >= params[9]:
        new = TRENDING
    elif ratio <= params[11]:
        new = QUIET
    else:
        new = RANGING
    if new == ints[s, I_REGIME]:
        ints[s, I_CANDIDATE_N] = 0
        return
    if new != ints[s, I_CANDIDATE]:
        ints[s, I_CANDIDATE] = new
        ints[s, I_CANDIDATE_N] = 0
    ints[s, I_CANDIDATE_N] += 1
    if ints[s, I_CANDIDATE_N] >= int(params[12]):
        old = ints[s, I_REGIME]
        ints[s, I_REGIME] = new
        ints[s, I_CANDIDATE_N] = 0
        emit(out, out_state, t, _REGIME, _MEDIUM, 0, ts_detect_ns, float(new), float(old),
             trend, ratio, sigma, baseline[s], 0.0, 0.0)


@nb.njit(cache=True)
def price_move_update(trades, params, price, prev, volume, quote, second, ints, baseline, late,
                      skipped, scratch, out, out_state, ts_detect_ns):  # pragma: no cover - njit
    """Apply a batch of trades, evaluating each second as it completes (module docstring)."""
    n = price.shape[1]
    for i in range(len(trades)):
        t = trades[i]
        if not usable_trade(t, len(late)) or t.ts_exchange_ns < 0:
            skipped[0] += 1
            continue
        s = t.symbol_id
        sec = t.ts_exchange_ns // _NS
        head = ints[s, I_HEAD]
        if head < 0:
            ints[s, I_HEAD] = ints[s, I_FIRST] = head = sec
        elif sec < head:
            late[s] += 1
            continue
        elif sec > head:
            _evaluate(t, s, head, params, price, prev, volume, quote, second, ints, baseline,
                      scratch, out, out_state, ts_detect_ns)
            close = price[s, head % n]  # the price in force when this second starts
            ints[s, I_HEAD] = head = sec
            k = sec % n
            second[s, k] = sec
            volume[s, k] = quote[s, k] = 0.0
            prev[s, k] = close
        k = sec % n
        if second[s, k] != sec:  # the symbol's first second
            second[s, k] = sec
            volume[s, k] = quote[s, k] = 0.0
            prev[s, k] = t.price
        price[s, k] = t.price
        volume[s, k] += t.qty
        quote[s, k] += t.price * t.qty
