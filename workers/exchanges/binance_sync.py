"""Binance diff-depth synchronisation: snapshot bridging and continuity, checked on every event.

The rules (Binance's "how to manage a local order book correctly", DESIGN.md section 5):

* Buffer events until the REST snapshot (``lastUpdateId``) is in; drop events with
  ``u < lastUpdateId`` (spot: ``u <= lastUpdateId``).
* The first applied event must bridge the snapshot: spot ``U <= lastUpdateId + 1 <= u``; USD-M
  futures ``U <= lastUpdateId <= u`` or ``pu == lastUpdateId``.
* Afterwards every event must continue the chain: spot ``U == previous u + 1``, futures
  ``pu == previous u``. Anything else is a gap: the symbol resyncs (a new snapshot). A repeat
  of the last applied event, and any older event while two connections overlap during a
  rotation, is dropped as stale.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["BinanceDepthSync", "Verdict"]


class Verdict(IntEnum):
    """What to do with one depth event."""

    APPLY = 1     # apply it to the book
    BUFFER = 2    # no snapshot yet: keep it until one arrives
    STALE = 3     # older than the snapshot: drop it
    GAP = 4       # the chain is broken: resync this symbol


class BinanceDepthSync:
    """Sequencing state of one symbol's Binance depth stream."""

    def __init__(self, futures: bool) -> None:
        self.futures = futures
        self.snapshot_id = -1    # lastUpdateId of the snapshot in use, -1 before one
        self.last_u = -1         # u of the last applied event, -1 before the bridge

    def reset(self) -> None:
        """Forget the snapshot and the chain (resync)."""
        self.snapshot_id = self.last_u = -1

    def on_snapshot(self, last_update_id: int) -> None:
        """A REST snapshot was applied to the (cleared) book."""
        self.snapshot_id = last_update_id
        self.last_u = -1

    def check(self, first: int, last: int, prev: int, overlap: bool = False) -> Verdict:
        """Verdict for an event with ``U=first``, ``u=last`` and (futures) ``pu=prev``.

        On APPLY the chain advances; the caller applies the event's levels. The event just
        applied, repeated, is STALE; during a connection overlap (``overlap``) so is any
        older event. Otherwise going backwards is a GAP (an exchange restart, a bad replay).
        """
        snap = self.snapshot_id
        if snap < 0:
            return Verdict.BUFFER
        if self.last_u < 0:  # the bridging event
            if last < snap or (not self.futures and last == snap):
                return Verdict.STALE
            if self.futures:
                ok = first <= snap <= last or prev == snap
            else:
                ok = first <= snap + 1 <= last
        elif last == self.last_u or (overlap and last < self.last_u):
            return Verdict.STALE  # already applied (a repeat, or a rotation's overlap)
        else:
            ok = prev == self.last_u if self.futures else first == self.last_u + 1
        if not ok:
            return Verdict.GAP
        self.last_u = last
        return Verdict.APPLY
