"""Synthetic markets: a seeded random market per symbol, written in each exchange's formats.

The model is exchange-neutral and integer: prices in ticks, sizes in lots. The mid walks; the L2
book keeps its bids below the mid and its asks above it, so it is never crossed; trades hit the
touch and consume it; now and then a block trade or a burst of same-side liquidations happens;
every second each symbol publishes mark/index/funding and open interest. The result is a frame
list with receive times, like a recording, so the replay machinery (pacing, flood, faults)
serves it unchanged and every connection sees one consistent market from its first frame.
Sequence rules are the exchanges': Binance ``U``/``u``/``pu``, Bybit snapshot then ``u + 1``, OKX
``seqId``/``prevSeqId`` with the CRC32 ``checksum`` of the top 25 levels.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Protocol

import msgspec

__all__ = ["SyntheticConfig", "SyntheticMarket", "generate", "okx_checksum", "synthetic_symbols"]

_json = msgspec.json.Encoder()
_BASES = [("BTC", 60_000.0), ("ETH", 3_000.0), ("SOL", 150.0), ("XRP", 0.6), ("DOGE", 0.15),
          ("ADA", 0.45), ("AVAX", 35.0), ("LINK", 15.0), ("LTC", 80.0), ("DOT", 7.0)]
_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: synthetic exchange clock origin
_OKX_CT_VAL = 0.01             # base units per OKX contract (1 lot = 1 contract on OKX)


class SyntheticConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Size, speed and seed of a synthetic market."""

    exchange: str
    symbols: int = 1
    rate_hz: float = 1_000.0     # market events per second over all symbols
    seconds: float = 60.0        # length of the generated timeline
    seed: int = 7
    levels: int = 50             # book levels per side
    # scripted manipulations, each symbol in turn every 30 s from 10 s: "spoof" (a large bid
    # two ticks under the touch, pulled 1.5 s later) and "iceberg" (a bid touch eaten six
    # times and refilled each time); random events of that symbol pause while one runs
    scenarios: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.symbols <= len(_BASES):
            raise ValueError(f"symbols must be 1..{len(_BASES)}, not {self.symbols}")
        unknown = set(self.scenarios) - {"spoof", "iceberg"}
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: spoof, iceberg")
        if self.rate_hz <= 0 or self.seconds <= 0 or self.levels < 25:
            raise ValueError("rate_hz and seconds must be > 0 and levels ≥ 25")


def synthetic_symbols(exchange: str, count: int) -> list[str]:
    """The exchange-native names of a synthetic market's first ``count`` symbols (USD-M /
    linear perpetuals: ``BTCUSDT``, ...; OKX swaps: ``BTC-USDT-SWAP``, ...)."""
    bases = [base for base, _ in _BASES[:count]]
    return [f"{b}-USDT-SWAP" for b in bases] if exchange == "okx" else [f"{b}USDT" for b in bases]


def okx_checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """OKX book checksum: signed CRC32 of ``bid1px:bid1sz:ask1px:ask1sz:...`` (top 25)."""
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i][:2]
        if i < len(asks):
            parts += asks[i][:2]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class SyntheticMarket:
    """One symbol's market in ticks and lots."""

    def __init__(self, rng: random.Random, base: str, price: float, levels: int) -> None:
        self.rng = rng
        self.base = base
        decimals = max(0, 6 - len(str(int(price))))  # BTC 0.1, ETH 0.01, SOL 0.001, ...
        self.tick = 10.0 ** -decimals
        self.px_fmt = f"{{:.{decimals}f}}"
        self.mid = round(price / self.tick)
        self.levels = levels
        self.bids = {self.mid - k: self._lots() for k in range(1, levels + 1)}
        self.asks = {self.mid + k: self._lots() for k in range(1, levels + 1)}
        self.funding = 0.0001
        self.open_interest = rng.randint(50_000, 150_000)

    def _lots(self) -> int:
        return max(1, int(self.rng.lognormvariate(3.0, 1.0)))

    def px(self, ticks: int) -> str:
        return self.px_fmt.format(ticks * self.tick)

    def best(self) -> tuple[int, int, int, int]:
        """Best bid price, bid lots, best ask price, ask lots."""
        b, a = max(self.bids), min(self.asks)
        return b, self.bids[b], a, self.asks[a]

    def book_step(self) -> list[tuple[int, int, int]]:
        """Change the book; returns ``(side, price, lots)`` changes (side +1 bid, -1 ask; 0 lots
        deletes)."""
        rng, out = self.rng, []
        if rng.random() < 0.1:  # the mid moves one tick; levels that would cross go
            step = rng.choice((-1, 1))
            self.mid += step
            own, other, side = (self.asks, self.bids, -1) if step > 0 else \
                (self.bids, self.asks, 1)
            if self.mid in own:
                del own[self.mid]
                out.append((side, self.mid, 0))
            edge = self.mid - step  # the new level at the touch of the other side
            if edge not in other:
                other[edge] = self._lots()
                out.append((-side, edge, other[edge]))
        for _ in range(rng.randint(1, 3)):
            side = rng.choice((1, -1))
            book = self.bids if side > 0 else self.asks
            price = self.mid - side * (1 + min(int(rng.expovariate(0.3)), self.levels - 1))
            lots = 0 if rng.random() < 0.2 and len(book) > 10 else self._lots()
            if lots == 0 and price not in book:
                continue
            if lots:
                book[price] = lots
            else:
                del book[price]
            out.append((side, price, lots))
        self._trim(out)
        return out

    def trade(self, block: bool, side: int = 0
              ) -> tuple[int, list[tuple[int, int]], list[tuple[int, int, int]]]:
        """A market order: ``(aggressor side, fills [(price, lots)], book changes)``.

        A normal order takes part of the touch; a block order walks several levels. ``side``
        forces the aggressor side (+1 buy, -1 sell), random otherwise."""
        rng = self.rng
        side = side or rng.choice((1, -1))
        book = self.asks if side > 0 else self.bids
        want = sum(sorted(book.values())[-3:]) * rng.randint(1, 3) if block else 0
        fills: list[tuple[int, int]] = []
        changes: list[tuple[int, int, int]] = []
        while True:
            price = min(book) if side > 0 else max(book)
            take = min(book[price], want) if block else rng.randint(1, book[price])
            fills.append((price, take))
            book[price] -= take
            changes.append((-side, price, book[price]))
            if book[price] == 0:
                del book[price]
            want -= take
            if not block or want <= 0 or len(book) <= 5:
                break
        while len(book) < 5:  # keep a book: refill far from the touch
            far = (max(book) + 1) if side > 0 else (min(book) - 1)
            book[far] = self._lots()
            changes.append((-side, far, book[far]))
        return side, fills, changes

    def _trim(self, out: list[tuple[int, int, int]]) -> None:
        for side, book in ((1, self.bids), (-1, self.asks)):
            while len(book) > self.levels:
                far = min(book) if side > 0 else max(book)
                del book[far]
                out.append((side, far, 0))

    def spoof(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """A large bid two ticks under the touch: the changes that place it, and those that
        pull it (restoring what was there)."""
        price = max(self.bids) - 1
        before = self.bids.get(price, 0)
        self.bids[price] = 5_000
        return [(1, price, 5_000)], [(1, price, before)]

    def unspoof(self, changes: list[tuple[int, int, int]]) -> None:
        """Apply the pull returned by :meth:`spoof`."""
        for _, price, lots in changes:
            if lots:
                self.bids[price] = lots
            else:
                self.bids.pop(price, None)

    def tick_second(self) -> None:
        """Per-second drift of funding and open interest."""
        self.funding = max(-0.0075, min(0.0075, self.funding + self.rng.gauss(0, 0.00001)))
        self.open_interest = max(1_000, self.open_interest + int(self.rng.gauss(0, 500)))


Frame = tuple[int, str, bytes]  # (receive time ns, topic, frame)


class _Format(Protocol):
    """One exchange's rendering of a market's events as frames."""

    def start(self, ns: int) -> list[Frame]: ...
    def book(self, ns: int, changes: list[tuple[int, int, int]]) -> list[Frame]: ...
    def trades(self, ns: int, side: int, fills: list[tuple[int, int]]) -> list[Frame]: ...
    def liquidations(self, ns: int, side: int, items: list[tuple[int, int]]) -> list[Frame]: ...
    def second(self, ns: int) -> list[Frame]: ...


class _Binance:
    """USD-M futures: combined-stream frames; ``U``/``u``/``pu`` chain.

    The REST snapshot is the book right after the first depth event (``lastUpdateId`` = its
    ``u``), so Binance's documented bridge ``U <= lastUpdateId <= u`` holds for that event (a
    client re-applies it: its quantities are absolute, so that is harmless), as on the exchange.
    """

    def __init__(self, m: SyntheticMarket) -> None:
        self.m, self.sym = m, f"{m.base}USDT"
        self.s = self.sym.lower()
        self.u = 1_000_000  # last update id
        self.trade_id = 0
        self.last_liq_ms = -10_000
        self.snapshot: bytes | None = None

    def _frame(self, ns: int, stream: str, data: dict[str, object]) -> Frame:
        return ns, stream, _json.encode({"stream": stream, "data": data})

    def start(self, ns: int) -> list[Frame]:
        return []

    def rest_depth(self) -> bytes:
        m = self.m
        return _json.encode({
            "lastUpdateId": self.u, "E": _START_MS, "T": _START_MS,
            "bids": [[m.px(p), _lots(m.bids[p])] for p in sorted(m.bids, reverse=True)],
            "asks": [[m.px(p), _lots(m.asks[p])] for p in sorted(m.asks)]})

    def book(self, ns: int, changes: list[tuple[int, int, int]]) -> list[Frame]:
        m, ms = self.m, _ms(ns)
        first, self.u = self.u + 1, self.u + len(changes)
        data = {"e": "depthUpdate", "E": ms, "T": ms, "s": self.sym, "U": first, "u": self.u,
                "pu": first - 1,
                "b": [[m.px(p), _lots(q)] for s, p, q in changes if s > 0],
                "a": [[m.px(p), _lots(q)] for s, p, q in changes if s < 0]}
        if self.snapshot is None:
            self.snapshot = self.rest_depth()
        b, bq, a, aq = m.best()
        ticker = {"e": "bookTicker", "u": self.u, "s": self.sym, "b": m.px(b), "B": _lots(bq),
                  "a": m.px(a), "A": _lots(aq), "T": ms, "E": ms}
        return [self._frame(ns, f"{self.s}@depth@100ms", data),
                self._frame(ns, f"{self.s}@bookTicker", ticker)]

    def trades(self, ns: int, side: int, fills: list[tuple[int, int]]) -> list[Frame]:
        out = []
        for price, lots in fills:
            self.trade_id += 1
            out.append(self._frame(ns, f"{self.s}@trade", {
                "e": "trade", "E": _ms(ns), "T": _ms(ns), "s": self.sym, "t": self.trade_id,
                "p": self.m.px(price), "q": _lots(lots), "X": "MARKET", "m": side < 0}))
        return out

    def liquidations(self, ns: int, side: int, items: list[tuple[int, int]]) -> list[Frame]:
        ms = _ms(ns)
        if ms - self.last_liq_ms < 1000:  # Binance samples: at most one per symbol per second
            return []
        self.last_liq_ms = ms
        price, lots = max(items, key=lambda item: item[1])
        px = self.m.px(price)
        return [self._frame(ns, f"{self.s}@forceOrder", {"e": "forceOrder", "E": ms, "o": {
            "s": self.sym, "S": "BUY" if side > 0 else "SELL", "o": "LIMIT", "f": "IOC",
            "q": _lots(lots), "p": px, "ap": px, "X": "FILLED", "l": _lots(lots),
            "z": _lots(lots), "T": ms}})]

    def second(self, ns: int) -> list[Frame]:
        m, ms = self.m, _ms(ns)
        return [self._frame(ns, f"{self.s}@markPrice@1s", {
            "e": "markPriceUpdate", "E": ms, "s": self.sym, "p": m.px(m.mid), "i": m.px(m.mid),
            "P": m.px(m.mid), "r": f"{m.funding:.8f}", "T": _next_funding(ms)})]


class _Bybit:
    """v5 linear: ``orderbook.50`` snapshot then deltas with ``u + 1``; tickers snapshot+deltas."""

    def __init__(self, m: SyntheticMarket) -> None:
        self.m, self.sym = m, f"{m.base}USDT"
        self.u = 0
        self.seq = 5_000_000
        self.trade_no = 0

    def _frame(self, ns: int, topic: str, kind: str, data: object, **extra: object) -> Frame:
        return ns, topic, _json.encode({"topic": topic, "type": kind, "ts": _ms(ns),
                                        "data": data, **extra})

    def _book_data(self, bids: list[tuple[int, int]], asks: list[tuple[int, int]]
                   ) -> dict[str, object]:
        self.u += 1
        self.seq += 1
        m = self.m
        return {"s": self.sym, "b": [[m.px(p), _lots(q)] for p, q in bids],
                "a": [[m.px(p), _lots(q)] for p, q in asks], "u": self.u, "seq": self.seq}

    def _tickers(self, ns: int, kind: str) -> Frame:
        m = self.m
        b, bq, a, aq = m.best()
        data = {"symbol": self.sym, "markPrice": m.px(m.mid), "indexPrice": m.px(m.mid),
                "fundingRate": f"{m.funding:.6f}", "openInterest": _lots(m.open_interest),
                "openInterestValue": f"{m.open_interest / 1000 * m.mid * m.tick:.2f}",
                "nextFundingTime": str(_next_funding(_ms(ns))),
                "bid1Price": m.px(b), "bid1Size": _lots(bq), "ask1Price": m.px(a),
                "ask1Size": _lots(aq)}
        return self._frame(ns, f"tickers.{self.sym}", kind, data, cs=self.seq)

    def start(self, ns: int) -> list[Frame]:
        m = self.m
        data = self._book_data([(p, m.bids[p]) for p in sorted(m.bids, reverse=True)],
                               [(p, m.asks[p]) for p in sorted(m.asks)])
        return [self._frame(ns, f"orderbook.50.{self.sym}", "snapshot", data, cts=_ms(ns)),
                self._tickers(ns, "snapshot")]

    def book(self, ns: int, changes: list[tuple[int, int, int]]) -> list[Frame]:
        data = self._book_data([(p, q) for s, p, q in changes if s > 0],
                               [(p, q) for s, p, q in changes if s < 0])
        return [self._frame(ns, f"orderbook.50.{self.sym}", "delta", data, cts=_ms(ns))]

    def trades(self, ns: int, side: int, fills: list[tuple[int, int]]) -> list[Frame]:
        data = []
        for price, lots in fills:
            self.trade_no += 1
            data.append({"T": _ms(ns), "s": self.sym, "S": "Buy" if side > 0 else "Sell",
                         "v": _lots(lots), "p": self.m.px(price), "L": "ZeroPlusTick",
                         "i": f"00000000-0000-4000-8000-{self.trade_no:012d}", "BT": False})
        return [self._frame(ns, f"publicTrade.{self.sym}", "snapshot", data)]

    def liquidations(self, ns: int, side: int, items: list[tuple[int, int]]) -> list[Frame]:
        # S is the position side (Bybit docs): market buys liquidate shorts ("Sell")
        data = [{"T": _ms(ns), "s": self.sym, "S": "Sell" if side > 0 else "Buy",
                 "v": _lots(lots), "p": self.m.px(price)} for price, lots in items]
        return [self._frame(ns, f"allLiquidation.{self.sym}", "snapshot", data)]

    def second(self, ns: int) -> list[Frame]:
        return [self._tickers(ns, "delta")]


class _Okx:
    """v5 SWAP: ``books`` with ``seqId``/``prevSeqId`` and checksum; sizes in contracts."""

    def __init__(self, m: SyntheticMarket) -> None:
        self.m, self.inst = m, f"{m.base}-USDT-SWAP"
        self.seq = 10_000
        self.trade_id = 0

    def _frame(self, ns: int, channel: str, data: list[object], action: str = "") -> Frame:
        arg = {"channel": channel, "instId": self.inst}
        body: dict[str, object] = {"arg": arg, "data": data}
        if action:
            body = {"arg": arg, "action": action, "data": data}
        return ns, f"{channel}:{self.inst}", _json.encode(body)

    def _book(self, ns: int, action: str, bids: list[list[str]], asks: list[list[str]]
              ) -> Frame:
        m = self.m
        top_b = [[m.px(p), str(m.bids[p])] for p in sorted(m.bids, reverse=True)[:25]]
        top_a = [[m.px(p), str(m.asks[p])] for p in sorted(m.asks)[:25]]
        prev, self.seq = (-1 if action == "snapshot" else self.seq), self.seq + 1
        return self._frame(ns, "books", [{
            "asks": asks, "bids": bids, "ts": str(_ms(ns)),
            "checksum": okx_checksum(top_b, top_a), "prevSeqId": prev, "seqId": self.seq}],
            action)

    def start(self, ns: int) -> list[Frame]:
        m = self.m
        return [self._book(ns, "snapshot",
                           [[m.px(p), str(m.bids[p]), "0", "1"] for p in sorted(m.bids)[::-1]],
                           [[m.px(p), str(m.asks[p]), "0", "1"] for p in sorted(m.asks)])]

    def book(self, ns: int, changes: list[tuple[int, int, int]]) -> list[Frame]:
        m = self.m
        bids = [[m.px(p), str(q), "0", "1" if q else "0"] for s, p, q in changes if s > 0]
        asks = [[m.px(p), str(q), "0", "1" if q else "0"] for s, p, q in changes if s < 0]
        return [self._book(ns, "update", bids, asks)]

    def trades(self, ns: int, side: int, fills: list[tuple[int, int]]) -> list[Frame]:
        out = []
        for price, lots in fills:
            self.trade_id += 1
            out.append(self._frame(ns, "trades", [{
                "instId": self.inst, "tradeId": str(self.trade_id), "px": self.m.px(price),
                "sz": str(lots), "side": "buy" if side > 0 else "sell", "ts": str(_ms(ns)),
                "count": "1"}]))
        return out

    def liquidations(self, ns: int, side: int, items: list[tuple[int, int]]) -> list[Frame]:
        details = [{"side": "buy" if side > 0 else "sell",
                    "posSide": "short" if side > 0 else "long", "bkPx": self.m.px(price),
                    "sz": str(lots), "bkLoss": "0", "ccy": "", "ts": str(_ms(ns))}
                   for price, lots in items]
        body = {"arg": {"channel": "liquidation-orders", "instType": "SWAP"},
                "data": [{"instId": self.inst, "instType": "SWAP", "uly": f"{self.m.base}-USDT",
                          "details": details}]}
        return [(ns, "liquidation-orders:SWAP", _json.encode(body))]

    def second(self, ns: int) -> list[Frame]:
        m, ms = self.m, str(_ms(ns))
        oi = m.open_interest
        return [
            self._frame(ns, "mark-price", [{"instId": self.inst, "instType": "SWAP",
                                            "markPx": m.px(m.mid), "ts": ms}]),
            self._frame(ns, "funding-rate", [{
                "instId": self.inst, "instType": "SWAP", "fundingRate": f"{m.funding:.8f}",
                "nextFundingRate": f"{m.funding:.8f}", "method": "current_period",
                "fundingTime": str(_next_funding(_ms(ns))), "ts": ms}]),
            self._frame(ns, "open-interest", [{
                "instId": self.inst, "instType": "SWAP", "oi": str(oi),
                "oiCcy": f"{oi * _OKX_CT_VAL:.2f}", "ts": ms}])]

    def instrument(self) -> dict[str, str]:
        return {"instId": self.inst, "instType": "SWAP", "ctVal": str(_OKX_CT_VAL),
                "ctValCcy": self.m.base, "settleCcy": "USDT", "tickSz": self.m.px(1),
                "lotSz": "1", "state": "live"}


def _lots(lots: int) -> str:
    return f"{lots / 1000:.3f}"  # Binance/Bybit: 1 lot = 0.001 base


def _ms(ns: int) -> int:
    return _START_MS + ns // 1_000_000


def _next_funding(ms: int) -> int:
    return (ms // 28_800_000 + 1) * 28_800_000


def _script(config: SyntheticConfig, markets: list[SyntheticMarket], fmts: list[_Format]
            ) -> list[tuple[int, int, Callable[[int], list[Frame]]]]:
    """``(ns, symbol index, action(ns) -> frames)`` of the scripted scenarios, in time order."""
    out: list[tuple[int, int, Callable[[int], list[Frame]]]] = []
    kinds = list(config.scenarios)
    t, k = 10_000_000_000, 0
    end = int(config.seconds * 1e9) - 3_000_000_000
    while kinds and t < end:
        i, kind = k % len(markets), kinds[k % len(kinds)]
        m, fmt = markets[i], fmts[i]
        if kind == "spoof":
            pull: list[list[tuple[int, int, int]]] = []

            def place(ns: int, m: SyntheticMarket = m, fmt: _Format = fmt,
                      pull: list[list[tuple[int, int, int]]] = pull) -> list[Frame]:
                changes, undo = m.spoof()
                pull.append(undo)
                return fmt.book(ns, changes)

            def pulled(ns: int, m: SyntheticMarket = m, fmt: _Format = fmt,
                       pull: list[list[tuple[int, int, int]]] = pull) -> list[Frame]:
                m.unspoof(pull[0])
                return fmt.book(ns, pull[0])

            out += [(t, i, place), (t + 1_500_000_000, i, pulled)]
        else:
            state: list[int] = []

            def start(ns: int, m: SyntheticMarket = m, fmt: _Format = fmt,
                      state: list[int] = state) -> list[Frame]:
                price = max(m.bids)
                state += [price, max(40, m.bids[price])]
                m.bids[price] = state[1]
                return fmt.book(ns, [(1, price, state[1])])

            def eat(ns: int, m: SyntheticMarket = m, fmt: _Format = fmt,
                    state: list[int] = state) -> list[Frame]:
                price, size = state
                m.bids[price] = 1
                return fmt.trades(ns, -1, [(price, size - 1)]) + fmt.book(ns, [(1, price, 1)])

            def refill(ns: int, m: SyntheticMarket = m, fmt: _Format = fmt,
                       state: list[int] = state) -> list[Frame]:
                price, size = state
                m.bids[price] = size
                return fmt.book(ns, [(1, price, size)])

            out.append((t, i, start))
            for c in range(6):
                out += [(t + (c + 1) * 200_000_000, i, eat),
                        (t + (c + 1) * 200_000_000 + 100_000_000, i, refill)]
        t += 30_000_000_000
        k += 1
    return out


_FORMATS: dict[str, type[_Binance] | type[_Bybit] | type[_Okx]] = {
    "binance": _Binance, "bybit": _Bybit, "okx": _Okx}


def generate(config: SyntheticConfig) -> tuple[list[Frame], dict[str, object]]:
    """The timeline of frames (receive ns from 0, topic, bytes) and the REST state:
    ``{"depth": {SYMBOL: body}, "open_interest": {SYMBOL: [per second]}, "instruments": [...]}``.
    """
    try:
        fmt_class = _FORMATS[config.exchange]
    except KeyError:
        raise ValueError(f"unknown exchange {config.exchange!r}") from None
    rng = random.Random(config.seed)
    markets = [SyntheticMarket(rng, base, price, config.levels)
               for base, price in _BASES[:config.symbols]]
    fmts: list[_Format] = [fmt_class(m) for m in markets]
    frames: list[Frame] = [f for fmt in fmts for f in fmt.start(0)]
    binance = [(m, fmt) for m, fmt in zip(markets, fmts, strict=True) if isinstance(fmt, _Binance)]
    open_interest = {fmt.sym: [_lots(m.open_interest)] for m, fmt in binance}  # per second
    events = int(config.rate_hz * config.seconds)
    step_ns = 1e9 / config.rate_hz
    next_second = 1_000_000_000
    script = _script(config, markets, fmts)
    busy = [0] * len(markets)  # a symbol's random events pause until then (ns)
    for n in range(events):
        ns = int((n + 1) * step_ns)
        while script and script[0][0] <= ns:
            at, i, action = script.pop(0)
            frames += action(at)
            busy[i] = max(busy[i], at + 2_000_000_000)
        while ns >= next_second:
            for market, fmt in zip(markets, fmts, strict=True):
                market.tick_second()
                frames += fmt.second(next_second)
            for market, fmt in binance:  # USD-M open interest is REST only
                open_interest[fmt.sym].append(_lots(market.open_interest))
            next_second += 1_000_000_000
        i = n % len(markets)
        market, fmt = markets[i], fmts[i]
        roll = rng.random()
        if ns < busy[i]:
            continue
        if roll < 0.75:
            changes = market.book_step()
            if changes:  # an empty update would break Binance's U <= u
                frames += fmt.book(ns, changes)
        elif roll < 0.998:
            side, fills, changes = market.trade(block=rng.random() < 0.01)
            frames += fmt.trades(ns, side, fills) + fmt.book(ns, changes)
        else:  # a burst of same-side liquidations, each a market order against the book
            side, items = rng.choice((1, -1)), []
            for _ in range(rng.randint(3, 8)):
                _, fills, changes = market.trade(block=False, side=side)
                items.append(fills[0])
                frames += fmt.trades(ns, side, fills) + fmt.book(ns, changes)
            frames += fmt.liquidations(ns, side, items)
    rest: dict[str, object] = {
        "depth": {f"fapi:{fmt.sym}": fmt.snapshot or fmt.rest_depth() for _, fmt in binance},
        "open_interest": open_interest,
        "instruments": [fmt.instrument() for fmt in fmts if isinstance(fmt, _Okx)]}
    if len(frames) < 2:
        raise ValueError("the synthetic timeline is empty: raise rate_hz × seconds")
    return frames, rest
