"""RESP encoding against a real Redis (redis-server parses what we write) and URL parsing."""

from __future__ import annotations

import socket

import hiredis
import pytest
import redis

from engine.embedded_redis import EmbeddedRedis
from workers.publisher.resp import CommandPrefixes, RedisAddress, encode_command, parse_redis_url


def _roundtrip(server: EmbeddedRedis, data: bytes, replies: int) -> list[object]:
    reader, out = hiredis.Reader(), []
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(server.socket_path))
        s.sendall(data)
        while len(out) < replies:
            reader.feed(s.recv(65536))
            while (reply := reader.gets()) is not False:
                out.append(reply)
    return out


def test_prefixed_commands_are_what_redis_executes(redis_server: EmbeddedRedis) -> None:
    payload = b'{"a":1,"b":"x\r\ny"}'   # CRLF inside a payload: lengths, not delimiters
    pre = CommandPrefixes("binance:btcusdt:trade", 5_000, 100)
    client = redis.Redis(unix_socket_path=str(redis_server.socket_path))
    data = pre.publish(payload) + pre.set_latest(payload) + pre.xadd(payload) + \
        encode_command("GET", "latest:binance:btcusdt:trade")
    replies = _roundtrip(redis_server, data, 4)
    assert replies[0] == 0                                  # PUBLISH: no subscribers
    assert replies[1] == b"OK"
    assert isinstance(replies[2], bytes) and b"-" in replies[2]   # a stream id
    assert replies[3] == payload
    assert 4_000 < client.pttl("latest:binance:btcusdt:trade") <= 5_000
    entries = client.xrange("stream:binance:btcusdt:trade")
    assert [e[1] for e in entries] == [{b"data": payload}]


def test_an_error_reply_is_a_reply_error_object(redis_server: EmbeddedRedis) -> None:
    replies = _roundtrip(redis_server, encode_command("NOSUCHCOMMAND", 1), 1)
    assert isinstance(replies[0], hiredis.ReplyError)


def test_urls() -> None:
    assert parse_redis_url("redis://127.0.0.1:6380/2") == RedisAddress(port=6380, db=2)
    assert parse_redis_url("redis://:s3cret@host") == RedisAddress(host="host",
                                                                    password="s3cret")
    assert parse_redis_url("unix:///run/redis.sock?db=1") == RedisAddress(
        unix_path="/run/redis.sock", db=1)
    assert RedisAddress(password="p", db=3).setup_commands() == [
        encode_command("AUTH", "p"), encode_command("SELECT", 3)]
    for bad in ("http://x", "unix://", "redis://h/notanumber"):
        with pytest.raises(ValueError, match="redis url"):
            parse_redis_url(bad)
