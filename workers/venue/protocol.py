"""What each exchange's public WebSocket says back: paths, subscriptions, acks, pings, errors.

One :class:`Session` per connection, created from the request path; ``on_text`` takes a client
text frame and returns the frames to send back, updating ``topics`` (the subscription set that
decides which data frames the connection gets). No I/O here, so every rule is unit-testable.
Shapes follow the recordings in ``tests/data/recorded`` and the exchanges' documentation.
"""

from __future__ import annotations

import itertools
import re
import time
from urllib.parse import parse_qs, urlsplit

import msgspec

__all__ = ["Session", "VenueProtocolError", "open_session"]

_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder()
_conn_ids = itertools.count(1)


class VenueProtocolError(ValueError):
    """The request path is not an endpoint of this exchange (answered with HTTP 404)."""


class Session:
    """Per-connection protocol state. ``topics`` holds the subscribed topic names."""

    def __init__(self, exchange: str, path: str) -> None:
        self.exchange = exchange
        self.path = path
        self.topics: set[str] = set()
        self.conn_id = f"venue-{next(_conn_ids):06d}"

    def on_text(self, text: bytes) -> list[bytes]:
        """Replies to one client text frame."""
        raise NotImplementedError

    def render(self, frame: bytes) -> bytes:
        """The bytes to send for a recorded data frame (the frame itself unless overridden)."""
        return frame

    @property
    def sends_as_recorded(self) -> bool:
        """True if :meth:`render` returns frames unchanged (the venue's pre-encoded frames fit)."""
        return True

    def error_frame(self) -> bytes:
        """An error frame in this exchange's shape (sent by fault injection)."""
        raise NotImplementedError


# -- Binance --------------------------------------------------------------------------------
_BINANCE_ROUTES = {  # USD-M routed endpoints: which stream types each route carries
    "public": re.compile(r"@(depth|bookTicker|trade)(@|$)|^!bookTicker"),
    "market": re.compile(r"@(aggTrade|markPrice|forceOrder|kline_)|^!(markPrice|forceOrder)"),
}


class BinanceSession(Session):
    """``/stream?streams=a/b`` (spot), ``/public/...`` and ``/market/...`` (USD-M routes), ``/ws``.

    A stream on the wrong USD-M route is accepted and then stays silent, as on the exchange.
    ``/ws`` connections get the raw event (the combined wrapper removed).
    """

    def __init__(self, exchange: str, path: str) -> None:
        super().__init__(exchange, path)
        parts = urlsplit(path)
        segments = [s for s in parts.path.split("/") if s]
        self.route = segments[0] if segments and segments[0] in _BINANCE_ROUTES else ""
        rest = segments[1:] if self.route else segments
        if not rest or rest[0] not in ("stream", "ws"):
            raise VenueProtocolError(f"binance: no endpoint {parts.path!r}")
        self.combined = rest[0] == "stream"
        self.requested: set[str] = set()  # what the client asked for, routed or not
        streams = parse_qs(parts.query).get("streams", [""])[0].split("/") if self.combined \
            else rest[1:2]
        self._subscribe([s for s in streams if s])

    def _subscribe(self, streams: list[str]) -> None:
        route = _BINANCE_ROUTES.get(self.route)
        self.topics.update(s for s in streams if route is None or route.search(s))
        self.requested.update(streams)

    def on_text(self, text: bytes) -> list[bytes]:
        try:
            msg = _decode.decode(text)
            method, ident = msg["method"], msg.get("id")
            params = msg.get("params", [])
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise TypeError("params must be a list of stream names")
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError) as exc:
            return [_json.encode({"error": {"code": 2, "msg": f"Invalid request: {exc}"},
                                  "id": None})]
        if method == "SUBSCRIBE":
            self._subscribe(params)
        elif method == "UNSUBSCRIBE":
            self.topics.difference_update(params)
            self.requested.difference_update(params)
        elif method == "LIST_SUBSCRIPTIONS":
            return [_json.encode({"result": sorted(self.requested), "id": ident})]
        else:
            return [_json.encode({"error": {"code": 2, "msg": f"Invalid request: unknown "
                                            f"method {method!r}"}, "id": ident})]
        return [_json.encode({"result": None, "id": ident})]

    @property
    def sends_as_recorded(self) -> bool:
        return self.combined

    def error_frame(self) -> bytes:
        return _json.encode({"error": {"code": 3, "msg": "Invalid JSON: injected by the venue"},
                             "id": None})

    def render(self, frame: bytes) -> bytes:
        if self.combined:
            return frame
        start = frame.index(b',"data":') + 8
        return frame[start:-1]


# -- Bybit v5 -------------------------------------------------------------------------------
_BYBIT_TOPIC = re.compile(
    r"^(orderbook\.(1|25|50|100|200|500|1000)|publicTrade|tickers|kline\.\w+|allLiquidation)"
    r"\.[A-Z0-9-]+$")  # option symbols carry dashes: BTC-28MAR25-60000-C


class BybitSession(Session):
    """``/v5/public/{linear,spot,inverse,option}``: ``op`` subscribe/unsubscribe/ping."""

    def __init__(self, exchange: str, path: str) -> None:
        super().__init__(exchange, path)
        m = re.fullmatch(r"/v5/public/(linear|spot|inverse|option)", urlsplit(path).path)
        if not m:
            raise VenueProtocolError(f"bybit: no endpoint {path!r}")
        self.category = m.group(1)

    def _reply(self, op: str, req_id: str, success: bool, ret_msg: str) -> bytes:
        if self.category == "spot":  # the spot stream's shape
            return _json.encode({"success": success, "ret_msg": ret_msg or op,
                                 "conn_id": self.conn_id, "req_id": req_id, "op": op})
        return _json.encode({"success": success, "ret_msg": ret_msg, "conn_id": self.conn_id,
                             "req_id": req_id, "op": op})

    def error_frame(self) -> bytes:
        return self._reply("subscribe", "", False, "error:injected by the venue")

    def on_text(self, text: bytes) -> list[bytes]:
        try:
            msg = _decode.decode(text)
            op, req_id = msg["op"], str(msg.get("req_id", ""))
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
            return [self._reply("", "", False, "error:invalid request")]
        if op == "ping":
            if self.category == "spot":
                return [_json.encode({"req_id": req_id, "op": "pong",
                                      "args": [str(time.time_ns() // 1_000_000)],
                                      "conn_id": self.conn_id})]
            return [self._reply("ping", req_id, True, "pong")]
        args = msg.get("args", [])
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            return [self._reply(str(op), req_id, False, f"error:unknown op {op}")]
        bad = [a for a in args if not isinstance(a, str) or not _BYBIT_TOPIC.match(a)]
        if bad:
            return [self._reply(op, req_id, False, f"error:handler not found,topic:{bad[0]}")]
        if op == "subscribe":
            self.topics.update(args)
        else:
            self.topics.difference_update(args)
        return [self._reply(op, req_id, True, "")]


# -- OKX v5 ---------------------------------------------------------------------------------
_OKX_CHANNELS = {"books", "books5", "bbo-tbt", "books-l2-tbt", "books50-l2-tbt", "trades",
                 "tickers", "funding-rate", "mark-price", "open-interest", "index-tickers"}


class OkxSession(Session):
    """``/ws/v5/public``: ``op`` subscribe/unsubscribe with ``{channel, instId}`` args; text
    ``ping`` → ``pong``."""

    def __init__(self, exchange: str, path: str) -> None:
        super().__init__(exchange, path)
        if urlsplit(path).path not in ("/ws/v5/public", "/ws/v5/business"):
            raise VenueProtocolError(f"okx: no endpoint {path!r}")

    def _error(self, code: str, msg: str) -> bytes:
        return _json.encode({"event": "error", "code": code, "msg": msg, "connId": self.conn_id})

    def error_frame(self) -> bytes:
        return self._error("60009", "Internal error: injected by the venue")

    def on_text(self, text: bytes) -> list[bytes]:
        if text == b"ping":
            return [b"pong"]
        try:
            msg = _decode.decode(text)
            op, args = msg["op"], msg["args"]
            if not isinstance(args, list):
                raise TypeError("args must be a list")
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError) as exc:
            return [self._error("60012", f"Invalid request: {exc}")]
        if op not in ("subscribe", "unsubscribe"):
            return [self._error("60012", f"Invalid request: unknown op {op}")]
        replies = []
        for arg in args:
            channel = arg.get("channel") if isinstance(arg, dict) else None
            key = (arg.get("instType") if channel == "liquidation-orders" else
                   arg.get("instId")) if isinstance(arg, dict) else None
            if not isinstance(channel, str) or not isinstance(key, str) or not key or (
                    channel not in _OKX_CHANNELS and channel != "liquidation-orders"):
                replies.append(self._error("60018", f"Wrong URL or channel:{channel},instId:"
                                                    f"{key} doesn't exist."))
                continue
            topic = f"{channel}:{key}"
            if op == "subscribe":
                self.topics.add(topic)
            else:
                self.topics.discard(topic)
            replies.append(_json.encode({"event": op, "arg": arg, "connId": self.conn_id}))
        return replies


_SESSIONS: dict[str, type[Session]] = {
    "binance": BinanceSession, "bybit": BybitSession, "okx": OkxSession}


def open_session(exchange: str, path: str) -> Session:
    """The session for a new connection to ``path``; VenueProtocolError if there is no such
    endpoint, ValueError for an unknown exchange."""
    try:
        cls = _SESSIONS[exchange]
    except KeyError:
        raise ValueError(f"unknown exchange {exchange!r}; use binance, bybit or okx") from None
    return cls(exchange, path)
