"""OKX v5 public push frames as typed msgspec structs (decoded once, numbers from strings).

A frame is decoded in two steps: :class:`Envelope` reads ``arg``/``action``/``event`` and keeps
``data`` as ``msgspec.Raw``; the channel then picks one of the ``decode_*`` functions for it.
The hot channels (books, trades, bbo) have one-pass ``*Push`` types for frames the feed routed
on their leading ``{"arg":{...}`` bytes.
``strict=False`` lets msgspec turn OKX's decimal strings into numbers while decoding; ``gc=False``
because these structs hold no reference cycles.

Book levels stay **strings** (``["px", "sz", "0", "orders"]``): the checksum is computed over the
exchange's original text, which a float round trip would not reproduce (``"0.10"`` vs ``0.1``).

OKX sends ``""`` for a number it does not have (``nextFundingRate`` outside ``next_period``
funding, a ticker's ``bidPx`` when an option has no bid); :class:`Num` decodes it to NaN instead of
failing the whole frame. ``seqId``/``prevSeqId`` are ``None`` when the frame has none (recordings
from before OKX added them): distinct from ``prevSeqId == -1``, which marks a snapshot.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

import msgspec

__all__ = [
    "Arg",
    "BboData",
    "BboPush",
    "BookData",
    "BookPush",
    "Envelope",
    "FundingRate",
    "Instrument",
    "Instruments",
    "Liquidation",
    "LiquidationDetail",
    "MarkPrice",
    "Num",
    "OpenInterest",
    "RawBookData",
    "Ticker",
    "Trade",
    "TradePush",
    "decode_bbo",
    "decode_bbo_push",
    "decode_book_push",
    "decode_books",
    "decode_books_raw",
    "decode_envelope",
    "decode_funding_rate",
    "decode_instruments",
    "decode_liquidations",
    "decode_mark_price",
    "decode_open_interest",
    "decode_tickers",
    "decode_trade_push",
    "decode_trades",
]


class Num(float):
    """A float from an OKX decimal string; ``""`` (no value) decodes to NaN."""


_NAN = Num(math.nan)
_T = TypeVar("_T")
_ID_MAX = (1 << 63) - 1
# book fields reach the njit record kernels, where an int beyond int64 is a numba TypingError
# (not an exception the feed counts): reject them while decoding. ``ts`` is then ms -> ns.
_TS_MS = Annotated[int, msgspec.Meta(ge=0, le=_ID_MAX // 1_000_000)]
_SEQ = Annotated[int, msgspec.Meta(ge=-1, le=_ID_MAX)]


def _dec_hook(tp: type, obj: Any) -> Any:
    # msgspec calls this for Num fields only; it must return the declared type
    if tp is Num:
        return _NAN if obj == "" else Num(obj)
    raise NotImplementedError(f"no decoder for {tp!r}")


class Arg(msgspec.Struct, gc=False):
    """The subscription a frame belongs to (``liquidation-orders`` has ``instType``, no
    ``instId``)."""

    channel: str
    instId: str = ""
    instType: str = ""


class Envelope(msgspec.Struct, gc=False):
    """Any frame on ``/ws/v5/public``: a push (``arg`` + ``data``, books also ``action``
    ``snapshot``/``update``) or an event (``subscribe`` ack, ``error`` with ``code``/``msg``)."""

    arg: Arg | None = None
    action: str = ""
    event: str = ""
    code: str = ""
    msg: str = ""
    connId: str = ""
    data: msgspec.Raw = msgspec.Raw(b"")  # empty (len 0) on events


class BookData(msgspec.Struct, gc=False):
    """``books``/``books-l2-tbt``/``books50-l2-tbt``: levels ``[px, sz, "0", orders]`` as
    strings (size ``"0"`` deletes), best first; ``checksum`` covers the book after the message.

    ``seqId``/``prevSeqId`` are None when absent; ``prevSeqId == -1`` on a snapshot."""

    asks: list[list[str]]
    bids: list[list[str]]
    ts: _TS_MS
    checksum: int
    seqId: _SEQ | None = None
    prevSeqId: _SEQ | None = None


class RawBookData(msgspec.Struct, gc=False):
    """:class:`BookData` with each side kept as its JSON text, for ``OkxBook.apply_json``: no
    Python list or string is built per level."""

    asks: msgspec.Raw
    bids: msgspec.Raw
    ts: _TS_MS
    checksum: int
    seqId: _SEQ | None = None
    prevSeqId: _SEQ | None = None


class BboData(msgspec.Struct, gc=False):
    """``bbo-tbt`` / ``books5``: a full top-of-book snapshot per message (no checksum)."""

    asks: list[list[str]]
    bids: list[list[str]]
    ts: _TS_MS
    seqId: _SEQ | None = None
    instId: str = ""


class Trade(msgspec.Struct, gc=False):
    """``trades``: ``side`` is the taker's side."""

    instId: str
    tradeId: str
    px: float
    sz: float
    side: Literal["buy", "sell"]
    ts: int
    count: int = 1  # trades aggregated into this one (newer feeds)


class LiquidationDetail(msgspec.Struct, gc=False):
    """One liquidation: ``side`` of the liquidation order, ``posSide`` of the closed position."""

    side: str
    bkPx: Num
    sz: Num
    ts: int
    posSide: str = ""
    bkLoss: Num = _NAN
    ccy: str = ""


class Liquidation(msgspec.Struct, gc=False):
    """``liquidation-orders`` (subscribed per ``instType``): details per instrument."""

    instId: str
    details: list[LiquidationDetail]
    instType: str = ""
    uly: str = ""
    instFamily: str = ""


class FundingRate(msgspec.Struct, gc=False):
    """``funding-rate``: current rate and its settlement time; optional fields are NaN / 0 /
    ``""`` when missing."""

    instId: str
    fundingRate: Num
    fundingTime: int
    ts: int
    instType: str = ""
    nextFundingRate: Num = _NAN  # "" outside "next_period" funding
    nextFundingTime: int = 0
    method: str = ""
    premium: Num = _NAN
    minFundingRate: Num = _NAN
    maxFundingRate: Num = _NAN
    settState: str = ""
    settFundingRate: Num = _NAN


class MarkPrice(msgspec.Struct, gc=False):
    """``mark-price``."""

    instId: str
    markPx: Num
    ts: int
    instType: str = ""


class OpenInterest(msgspec.Struct, gc=False):
    """``open-interest``: ``oi`` in contracts, ``oiCcy`` in coin."""

    instId: str
    oi: Num
    oiCcy: Num
    ts: int
    instType: str = ""
    oiUsd: Num = _NAN


class Instrument(msgspec.Struct, gc=False):
    """One item of ``GET /api/v5/public/instruments``: a contract is ``ctVal × ctMult`` units of
    ``ctValCcy`` (the base coin for linear contracts and options, USD for inverse ones); spot
    instruments have neither (NaN)."""

    instId: str
    instType: str = ""
    ctVal: Num = _NAN
    ctMult: Num = _NAN
    ctValCcy: str = ""
    state: str = ""


class Instruments(msgspec.Struct, gc=False):
    """The ``/api/v5/public/instruments`` answer (``code`` ``"0"`` on success)."""

    code: str = "0"
    msg: str = ""
    data: list[Instrument] = []


class Ticker(msgspec.Struct, gc=False):
    """``tickers``: an option without a bid or ask sends ``""`` (NaN here)."""

    instId: str
    last: Num
    ts: int
    instType: str = ""
    lastSz: Num = _NAN
    bidPx: Num = _NAN
    bidSz: Num = _NAN
    askPx: Num = _NAN
    askSz: Num = _NAN
    vol24h: Num = _NAN


def _lenient(tp: type[_T]) -> msgspec.json.Decoder[_T]:
    return msgspec.json.Decoder(tp, strict=False, dec_hook=_dec_hook)


class BookPush(msgspec.Struct, gc=False):
    """A ``books*`` push decoded in one pass, once the feed routed it on its ``arg`` bytes
    (``arg`` itself is skipped)."""

    data: list[RawBookData] = []
    action: str = ""
    event: str = ""  # set: not a push after all (an ack in arg-first order)


class TradePush(msgspec.Struct, gc=False):
    """A ``trades`` push decoded in one pass (see :class:`BookPush`)."""

    data: list[Trade] = []
    event: str = ""


class BboPush(msgspec.Struct, gc=False):
    """A ``bbo-tbt`` push decoded in one pass (see :class:`BookPush`)."""

    data: list[BboData] = []
    event: str = ""


decode_envelope = msgspec.json.Decoder(Envelope).decode
decode_book_push = msgspec.json.Decoder(BookPush, strict=False).decode
decode_trade_push = msgspec.json.Decoder(TradePush, strict=False).decode
decode_bbo_push = msgspec.json.Decoder(BboPush, strict=False).decode
# each takes ``Envelope.data`` (a JSON array) and returns the list of items in it
decode_books = msgspec.json.Decoder(list[BookData], strict=False).decode
decode_books_raw = msgspec.json.Decoder(list[RawBookData], strict=False).decode
decode_bbo = msgspec.json.Decoder(list[BboData], strict=False).decode
decode_trades = msgspec.json.Decoder(list[Trade], strict=False).decode
decode_liquidations = _lenient(list[Liquidation]).decode
decode_funding_rate = _lenient(list[FundingRate]).decode
decode_mark_price = _lenient(list[MarkPrice]).decode
decode_open_interest = _lenient(list[OpenInterest]).decode
decode_tickers = _lenient(list[Ticker]).decode
decode_instruments = _lenient(Instruments).decode  # the whole REST body, not Envelope.data
