"""Protocol sessions, without sockets: malformed and edge-case client frames."""

from __future__ import annotations

import json

import pytest

from workers.venue import VenueProtocolError, open_session, topic_of


def test_okx_malformed_args_get_error_events_not_a_crash() -> None:
    s = open_session("okx", "/ws/v5/public")
    for args in (b'[{"channel":["books"],"instId":"X"}]', b'[{"channel":"books","instId":{}}]',
                 b'["books"]', b'[{"channel":"books"}]'):
        (reply,) = s.on_text(b'{"op":"subscribe","args":' + args + b"}")
        assert json.loads(reply)["event"] == "error"
    assert s.topics == set()
    assert json.loads(s.on_text(b"{nope")[0])["code"] == "60012"


def test_bybit_option_symbols_and_unknown_ops() -> None:
    s = open_session("bybit", "/v5/public/option")
    reply = json.loads(s.on_text(b'{"op":"subscribe","args":["orderbook.25.BTC-28MAR25-60000-C"]}'
                                 )[0])
    assert reply["success"] is True and "orderbook.25.BTC-28MAR25-60000-C" in s.topics
    assert json.loads(s.on_text(b'{"op":"dance"}')[0])["success"] is False
    with pytest.raises(VenueProtocolError):
        open_session("bybit", "/v5/private")


def test_binance_list_and_unsubscribe() -> None:
    s = open_session("binance", "/ws")
    s.on_text(b'{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@trade"],"id":1}')
    s.on_text(b'{"method":"UNSUBSCRIBE","params":["ethusdt@trade"],"id":2}')
    listed = json.loads(s.on_text(b'{"method":"LIST_SUBSCRIPTIONS","id":3}')[0])
    assert listed == {"result": ["btcusdt@trade"], "id": 3}
    assert json.loads(s.on_text(b'{"method":"SUBSCRIBE","params":[1],"id":4}')[0])["error"]


def test_okx_liquidation_orders_have_a_topic() -> None:
    frame = b'{"arg":{"channel":"liquidation-orders","instType":"SWAP"},"data":[]}'
    assert topic_of("okx", frame) == "liquidation-orders:SWAP"
