"""Binance market-data messages as typed msgspec structs (decoded once, numbers from strings).

``strict=False`` lets msgspec turn the exchange's decimal strings into floats while decoding;
``gc=False`` because these structs hold no reference cycles. Spot ``bookTicker`` has no
``e``/``E``/``T``; spot ``depthUpdate`` has no ``pu``: defaults cover both.
"""

from __future__ import annotations

from itertools import chain
from typing import Annotated, Generic, TypeVar

import msgspec
import numpy as np

_chain = chain.from_iterable

__all__ = [
    "AggTrade",
    "BookTicker",
    "Combined",
    "Control",
    "DepthSnapshot",
    "DepthUpdate",
    "Envelope",
    "ForceOrder",
    "MarkPrice",
    "OpenInterest",
    "Trade",
    "decode_book_ticker",
    "decode_control",
    "decode_depth",
    "decode_envelope",
    "decode_open_interest",
    "decode_snapshot",
    "levels",
]


T = TypeVar("T")

# Exchange ids and millisecond times, bounded so that ids fit int64 and ms * 10^6 (ns) too:
# a larger number is malformed input (a DecodeError), not a crash in a kernel later.
Id = Annotated[int, msgspec.Meta(ge=-1, le=2**63 - 1)]
Ms = Annotated[int, msgspec.Meta(ge=0, le=9_000_000_000_000)]
# Book levels: finite, non-negative (NaN, inf or a negative size would corrupt a sorted book
# without making it look crossed)
Level = tuple[Annotated[float, msgspec.Meta(ge=0, le=1e15)],
              Annotated[float, msgspec.Meta(ge=0, le=1e15)]]


class Combined(msgspec.Struct, Generic[T], gc=False):
    """A combined-stream frame decoded straight into its event type (one decode per frame;
    the worker routes on the stream name before decoding)."""

    data: T


class Envelope(msgspec.Struct, gc=False):
    """A combined-stream frame: the stream name and the raw event, decoded by stream type."""

    stream: str
    data: msgspec.Raw


class DepthUpdate(msgspec.Struct, gc=False):
    """``depthUpdate``: levels changed between update ids ``U`` and ``u``."""

    E: Ms
    s: str
    U: Id
    u: Id
    b: list[Level]
    a: list[Level]
    pu: Id = -1   # USD-M only: u of the previous event
    T: Ms = 0


class BookTicker(msgspec.Struct, gc=False):
    """Best bid/ask with the book update id ``u``."""

    u: Id
    s: str
    b: float
    B: float
    a: float
    A: float
    E: Ms = 0
    T: Ms = 0


class Trade(msgspec.Struct, gc=False):
    """``trade``: ``m`` is True when the buyer was the maker (the aggressor sold)."""

    E: Ms
    s: str
    t: Id
    p: float
    q: float
    m: bool
    T: Ms = 0


class AggTrade(msgspec.Struct, gc=False):
    """``aggTrade``: fills of one taker order at one price; ``a`` is the aggregate id."""

    E: Ms
    s: str
    a: Id
    p: float
    q: float
    m: bool
    T: Ms = 0


class MarkPrice(msgspec.Struct, gc=False):
    """``markPriceUpdate``: mark ``p``, index ``i``, funding rate ``r``, next funding ``T``."""

    E: Ms
    s: str
    p: float
    i: float = float("nan")
    r: float = float("nan")
    T: Ms = 0


class LiquidationOrder(msgspec.Struct, gc=False):
    """The order inside ``forceOrder``: side ``S``, price ``p``/average ``ap``, filled ``z``."""

    s: str
    S: str
    q: float
    p: float
    ap: float = 0.0
    z: float = 0.0
    T: Ms = 0


class ForceOrder(msgspec.Struct, gc=False):
    """``forceOrder``: a liquidation order (sampled: at most one per symbol per second)."""

    E: Ms
    o: LiquidationOrder


class ErrorBody(msgspec.Struct, gc=False):
    """The ``error`` object of a rejected request."""

    code: int = 0
    msg: str = ""


class Control(msgspec.Struct, gc=False):
    """A reply to a request: ``{"result": null, "id": 1}`` or ``{"error": {...}, "id": 1}``."""

    id: int | str | None = None
    result: msgspec.Raw | None = None
    error: ErrorBody | None = None


class OpenInterest(msgspec.Struct, gc=False):
    """REST ``/fapi/v1/openInterest`` body (base-asset units)."""

    openInterest: float
    symbol: str = ""
    time: Ms = 0


class DepthSnapshot(msgspec.Struct, gc=False):
    """REST ``/api/v3/depth`` or ``/fapi/v1/depth`` body."""

    lastUpdateId: Id
    bids: list[Level]
    asks: list[Level]


decode_envelope = msgspec.json.Decoder(Envelope).decode
decode_depth = msgspec.json.Decoder(DepthUpdate, strict=False).decode
decode_book_ticker = msgspec.json.Decoder(BookTicker, strict=False).decode
decode_snapshot = msgspec.json.Decoder(DepthSnapshot, strict=False).decode
decode_control = msgspec.json.Decoder(Control).decode
decode_open_interest = msgspec.json.Decoder(OpenInterest, strict=False).decode


def levels(pairs: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Price and quantity arrays (strided views of one buffer) of a level list.

    ``np.fromiter`` over the flattened pairs: 2.1 µs for a median 17-level side, against 4.2 µs
    for ``np.array`` of the tuples (measured here).
    """
    flat = np.fromiter(_chain(pairs), np.float64, 2 * len(pairs))
    return flat[0::2], flat[1::2]
