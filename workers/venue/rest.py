"""The venue's REST endpoints, answered on the WebSocket port (picows serves plain GETs too).

Binance: ``GET /api/v3/depth`` and ``/fapi/v1/depth`` (``symbol``, ``limit``): the current book,
i.e. the recording's REST snapshot file (or the synthetic start book) advanced to where the
replay is (see ``books.DepthBooks``), each request charged its documented weight against a
per-minute budget, reported in ``X-MBX-USED-WEIGHT-1M``; over budget the answer is 429 with
``Retry-After`` (seconds to the next minute) and Binance's ``-1003`` body.
OKX: ``GET /api/v5/public/instruments?instType=SWAP`` (with ``ctVal``) for synthetic markets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec

from .recording import Recording

__all__ = ["DepthSource", "RestApi", "find_depth_snapshots"]

_json = msgspec.json.Encoder()
# the depth body for a REST key ("fapi:BTCUSDT") with the best N levels per side, None if unknown
DepthSource = Callable[[str, int], dict[str, object] | None]
_SPOT_WEIGHTS = ((100, 5), (500, 25), (1000, 50), (5000, 250))   # limit ≤ N → weight
_FUTURES_WEIGHTS = ((50, 2), (100, 5), (500, 10), (1000, 20))


def find_depth_snapshots(recordings: list[Recording]) -> dict[str, bytes]:
    """REST depth bodies next to the recordings, keyed ``"api:SYMBOL"`` (spot) or
    ``"fapi:SYMBOL"`` (USD-M: its depth events carry ``pu``).

    ``NAME.rest_depth_<SYMBOL>.json`` names its symbol; a single ``NAME.rest_depth_snapshot.json``
    belongs to that recording's only symbol (taken from its own topics).
    """
    out: dict[str, bytes] = {}
    for rec in recordings:
        path = Path(rec.path)
        stem = path.name.split(".frames.jsonl")[0]
        depth = [f for f, t in zip(rec.frames, rec.topics, strict=True) if "@depth" in t]
        market = "fapi" if depth and b'"pu":' in depth[0] else "api"
        symbols = {t.split("@")[0].upper() for t in rec.topics}
        for snap in sorted(path.parent.glob(f"{stem}.rest_depth_*.json")):
            tag = snap.name[len(stem) + len(".rest_depth_"):-len(".json")]
            if tag == "snapshot":
                if len(symbols) != 1:
                    continue  # ambiguous: no symbol to give it
                tag = next(iter(symbols))
            out[f"{market}:{tag.upper()}"] = snap.read_bytes()
    return out


class RestApi:
    """Answers GET requests: ``handle(path) -> (status, body, headers)``."""

    def __init__(self, exchange: str, depth: DepthSource, weight_limit_per_min: int,
                 instruments: list[dict[str, str]] | None = None,
                 open_interest: dict[str, list[str]] | None = None):
        self.exchange = exchange
        self._instruments = instruments or []
        self._open_interest = open_interest or {}
        self._started = time.monotonic()
        self.weight_limit = weight_limit_per_min
        self._depth = depth
        self._minute = 0
        self._used = 0
        self.requests = 0
        self.rejected = 0

    def handle(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        """Status, JSON body and extra headers for ``GET path``."""
        self.requests += 1
        parts = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if self.exchange == "binance" and parts.path in ("/api/v3/depth", "/fapi/v1/depth"):
            return self._binance_depth(parts.path.startswith("/fapi"), query)
        if self.exchange == "binance" and parts.path == "/fapi/v1/openInterest":
            return self._binance_open_interest(query.get("symbol", "").upper())
        if self.exchange == "okx" and parts.path == "/api/v5/public/instruments":
            kind = query.get("instType", "")
            data = [i for i in self._instruments if i["instType"] == kind]
            if not kind:
                return 400, _json.encode({"code": "51000", "msg": "Parameter instType error",
                                          "data": []}), {}
            return 200, _json.encode({"code": "0", "msg": "", "data": data}), {}
        return 404, _json.encode({"code": -1, "msg": f"no endpoint {parts.path}"}), {}

    def _charge(self, weight: int) -> dict[str, str] | None:
        now = time.time()
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used = minute, 0
        if self._used + weight > self.weight_limit:
            return None
        self._used += weight
        return {"X-MBX-USED-WEIGHT-1M": str(self._used)}

    def _over_budget(self) -> tuple[int, bytes, dict[str, str]]:
        """Binance's 429: ``-1003``, ``Retry-After`` = seconds to the next minute."""
        self.rejected += 1
        msg = (f"Too much request weight used; current limit is {self.weight_limit} "
               "request weight per 1 MINUTE.")
        return 429, _json.encode({"code": -1003, "msg": msg}), {
            "Retry-After": str(60 - int(time.time()) % 60),
            "X-MBX-USED-WEIGHT-1M": str(self._used)}

    def _binance_open_interest(self, symbol: str) -> tuple[int, bytes, dict[str, str]]:
        """The synthetic open interest at the venue's elapsed second (weight 1)."""
        headers = self._charge(1)
        if headers is None:
            return self._over_budget()
        series = self._open_interest.get(symbol)
        if not series:
            return 400, _json.encode({"code": -1121, "msg": "Invalid symbol."}), headers
        second = min(int(time.monotonic() - self._started), len(series) - 1)
        return 200, _json.encode({"openInterest": series[second], "symbol": symbol,
                                  "time": int(time.time() * 1000)}), headers

    def _binance_depth(self, futures: bool, query: dict[str, str]
                       ) -> tuple[int, bytes, dict[str, str]]:
        try:
            limit = int(query.get("limit", "100" if not futures else "500"))
        except ValueError:
            return 400, _json.encode({"code": -1100, "msg": "Illegal characters in 'limit'"}), {}
        table = _FUTURES_WEIGHTS if futures else _SPOT_WEIGHTS
        weight = next((w for top, w in table if limit <= top), None)
        if weight is None or limit < 1:
            return 400, _json.encode({"code": -1100, "msg": f"Illegal limit {limit}"}), {}
        headers = self._charge(weight)
        if headers is None:
            return self._over_budget()
        market = "fapi" if futures else "api"
        body = self._depth(f"{market}:{query.get('symbol', '').upper()}", limit)
        if body is None:
            return 400, _json.encode({"code": -1121, "msg": "Invalid symbol."}), headers
        return 200, _json.encode(body), headers
