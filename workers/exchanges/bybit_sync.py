"""Bybit v5 sequencing: the ``orderbook`` update-id chain and the ``tickers`` delta merge.

Book rules (Bybit v5 docs, DESIGN.md section 5): a ``snapshot`` replaces the book, and so does any
message with ``u == 1`` (the service restarted and the sequence began again); a ``delta`` must
have ``u == previous u + 1``. Anything else is a gap: the symbol resyncs by resubscribing, and its
deltas are ignored until the new snapshot. Level-1 books are nothing but snapshots.

Ticker rule: a ``snapshot`` carries every field, a ``delta`` (linear) only the changed ones, so
the current values are the snapshot merged with every delta since. Spot tickers are snapshots
without derivatives fields; those values stay NaN.
"""

from __future__ import annotations

from enum import IntEnum

from .bybit_wire import UNSET, Ticker

__all__ = ["BBO", "FUNDING", "OPEN_INTEREST", "BybitBookSync", "TickerState", "Verdict"]

_NAN = float("nan")

# record families a ticker message can change (bit mask returned by TickerState.apply)
FUNDING = 1          # mark, index, funding rate, next funding time
OPEN_INTEREST = 2    # open interest, open interest value
BBO = 4              # bid1/ask1 price and size


class Verdict(IntEnum):
    """What to do with one orderbook message."""

    RESET = 1     # clear the book, then apply the levels (a snapshot or a restart)
    APPLY = 2     # apply the levels: the next delta of the chain
    GAP = 3       # the chain broke: resync (resubscribe) this symbol
    WAIT = 4      # a delta before any snapshot (or after a gap): drop it


class BybitBookSync:
    """Sequencing state of one symbol's ``orderbook`` stream."""

    __slots__ = ("last_u",)

    def __init__(self) -> None:
        self.last_u = -1    # u of the last applied message, -1 until a snapshot

    def reset(self) -> None:
        """Forget the chain (resync: deltas wait for the next snapshot)."""
        self.last_u = -1

    def check(self, kind: str, u: int) -> Verdict:
        """Verdict for a message of type ``kind`` ("snapshot" or "delta") with update id ``u``.

        On RESET or APPLY the chain advances to ``u``; on GAP it is forgotten, so the deltas
        still in flight before the new snapshot get WAIT instead of a gap each.
        """
        if kind == "snapshot" or u == 1:
            self.last_u = u
            return Verdict.RESET
        last = self.last_u
        if last < 0:
            return Verdict.WAIT
        if u == last + 1:
            self.last_u = u
            return Verdict.APPLY
        self.last_u = -1
        return Verdict.GAP


class TickerState:
    """Current ticker values of one symbol, merged from snapshot and delta messages.

    Plain float attributes (NaN until published), updated in place: no allocation per message.
    """

    __slots__ = ("ask1", "ask1_size", "bid1", "bid1_size", "funding_rate", "index", "last",
                 "mark", "next_funding_ns", "open_interest", "open_interest_value", "snapshot")

    def __init__(self) -> None:
        self.snapshot = False     # a snapshot has been merged (values are complete)
        self.clear()

    def clear(self) -> None:
        """Forget every value (NaN; next funding time 0)."""
        self.last = self.mark = self.index = self.funding_rate = _NAN
        self.open_interest = self.open_interest_value = _NAN
        self.bid1 = self.bid1_size = self.ask1 = self.ask1_size = _NAN
        self.next_funding_ns = 0

    def apply(self, kind: str, t: Ticker) -> int:
        """Merge one message (``kind`` "snapshot" replaces, "delta" updates) and return the
        families (``FUNDING | OPEN_INTEREST | BBO`` bits) it carried a field of.

        A present field counts as a change even if its value is equal: Bybit deltas only carry
        changed fields, and a snapshot restates everything.
        """
        if kind == "snapshot":
            self.clear()
            self.snapshot = True
        changed = 0
        if t.lastPrice is not UNSET:
            self.last = t.lastPrice
        if t.markPrice is not UNSET:
            self.mark = t.markPrice
            changed |= FUNDING
        if t.indexPrice is not UNSET:
            self.index = t.indexPrice
            changed |= FUNDING
        if t.fundingRate is not UNSET:
            self.funding_rate = t.fundingRate
            changed |= FUNDING
        if t.nextFundingTime is not UNSET:
            self.next_funding_ns = t.nextFundingTime * 1_000_000
            changed |= FUNDING
        if t.openInterest is not UNSET:
            self.open_interest = t.openInterest
            changed |= OPEN_INTEREST
        if t.openInterestValue is not UNSET:
            self.open_interest_value = t.openInterestValue
            changed |= OPEN_INTEREST
        if t.bid1Price is not UNSET:
            self.bid1 = t.bid1Price
            changed |= BBO
        if t.bid1Size is not UNSET:
            self.bid1_size = t.bid1Size
            changed |= BBO
        if t.ask1Price is not UNSET:
            self.ask1 = t.ask1Price
            changed |= BBO
        if t.ask1Size is not UNSET:
            self.ask1_size = t.ask1Size
            changed |= BBO
        return changed
