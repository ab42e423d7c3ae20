"""Ring semantics in one process: commit/poll, start positions, laps, errors, takeover."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bus_procs import mismatches, payload

import shm


@pytest.fixture
def name(instance: str) -> str:
    return shm.segment_name(instance, "binance", "trades")


def test_commit_single_and_batch_round_trip(name: str) -> None:
    with shm.Writer(name, shm.TRADE, 64) as w, shm.Reader(name, start="oldest") as r:
        assert len(r.poll()) == 0
        assert w.commit(payload(np.array([0]))[0]) == 0
        assert w.commit_batch(payload(np.arange(1, 10))) == 9
        got = r.poll()
        assert list(got["seq"]) == list(range(10))
        assert mismatches(got) == 0
        assert np.all(got["ts_commit_ns"] > 0)  # stamped by the writer
        assert r.stats.delivered == 10 and r.stats.lag == 0


def test_seq_is_assigned_by_the_writer(name: str) -> None:
    with shm.Writer(name, shm.TRADE, 8) as w, shm.Reader(name, start="oldest") as r:
        rec = payload(np.array([12345]))
        w.commit_batch(rec)
        assert r.poll()["seq"].tolist() == [0]


def test_start_positions(name: str) -> None:
    with shm.Writer(name, shm.TRADE, 16) as w:
        for first in range(0, 40, 10):
            w.commit_batch(payload(np.arange(first, first + 10)))
        with shm.Reader(name, start="latest") as r:
            assert len(r.poll()) == 0
            w.commit_batch(payload(np.arange(40, 42)))
            assert r.poll()["seq"].tolist() == [40, 41]
        with shm.Reader(name, start="oldest") as r:
            assert r.poll()["seq"].tolist() == list(range(26, 42))
        with shm.Reader(name, start=30) as r:
            assert r.poll()["seq"].tolist() == list(range(30, 42))
        with shm.Reader(name, start=50) as r:  # a future seq: wait for it
            w.commit_batch(payload(np.arange(42, 52)))
            assert r.poll()["seq"].tolist() == [50, 51]


def test_lapped_reader_counts_loss_and_jumps_ahead(name: str) -> None:
    with shm.Writer(name, shm.TRADE, 16) as w, \
            shm.Reader(name, start="oldest", lap_margin=4) as r:
        w.commit_batch(payload(np.arange(3)))
        assert len(r.poll()) == 3
        for _ in range(5):
            w.commit_batch(payload(np.arange(10)))  # 50 more: lapped by 34
        got = r.poll()
        st = r.stats
        assert st.lapped == 1
        assert got["seq"].tolist() == list(range(53 - 16 + 4, 53))
        assert st.lost == (53 - 16 + 4) - 3
        assert st.delivered + st.lost == 53


def test_max_batch_limits_one_poll(name: str) -> None:
    with shm.Writer(name, shm.TRADE, 64) as w, \
            shm.Reader(name, start="oldest", max_batch=10) as r:
        w.commit_batch(payload(np.arange(25)))
        sizes = [len(r.poll()) for _ in range(4)]
        assert sizes == [10, 10, 5, 0]


def test_records_wrap_around_the_ring_end(name: str) -> None:
    with shm.Writer(name, shm.TRADE, 8) as w, shm.Reader(name, start="oldest") as r:
        w.commit_batch(payload(np.arange(6)))
        r.poll()
        w.commit_batch(payload(np.arange(6, 11)))  # slots 6, 7, 0, 1, 2
        got = r.poll()
        assert got["seq"].tolist() == [6, 7, 8, 9, 10]
        assert mismatches(got) == 0


def test_bad_input_raises_clear_errors(name: str) -> None:
    with pytest.raises(ValueError, match="power of two"):
        shm.Writer(name, shm.TRADE, 100)
    with pytest.raises(ValueError, match="seq"):
        shm.Writer(name, np.dtype([("x", "<u8")]), 8)
    with pytest.raises(ValueError, match="instance"):
        shm.segment_name("Bad Name", "binance", "trades")
    with shm.Writer(name, shm.TRADE, 8) as w:
        with pytest.raises(shm.LayoutMismatch, match=name):
            w.commit_batch(np.zeros(2, shm.BBO))
        with pytest.raises(ValueError, match="exceeds capacity"):
            w.commit_batch(np.zeros(9, shm.TRADE))
        with pytest.raises(shm.LayoutMismatch, match="expected"):
            shm.Reader(name, dtype=shm.BBO)
    with pytest.raises(shm.SegmentNotFound, match="nosuch"):
        shm.Reader(name.replace("trades", "nosuch"))


def test_second_writer_is_refused(name: str) -> None:
    with shm.Writer(name, shm.TRADE, 8), pytest.raises(shm.WriterBusy, match=name):
        shm.Writer(name, shm.TRADE, 8)


def test_takeover_bumps_generation_and_continues_seq(name: str) -> None:
    w = shm.Writer(name, shm.TRADE, 8)
    w.commit_batch(payload(np.arange(3)))
    w.close()
    with shm.Reader(name, start="oldest") as r:
        assert len(r.poll()) == 3
        w2 = shm.Writer(name, shm.TRADE, 8)
        assert w2.generation == 2
        w2.commit_batch(payload(np.arange(3, 5)))
        assert r.poll()["seq"].tolist() == [3, 4]
        assert r.stats.discontinuities == 1 and r.stats.generation == 2
        w2.close(unlink=True)


def test_foreign_file_is_refused_or_replaced(name: str) -> None:
    with open(os.path.join(shm.SHM_DIR, name), "wb") as f:
        f.write(b"not ours")
    with pytest.raises(shm.LayoutMismatch, match="smaller than a header"):
        shm.Writer(name, shm.TRADE, 8)
    with shm.Writer(name, shm.TRADE, 8, replace=True) as w:
        assert w.commit_batch(payload(np.arange(2))) == 1
    shm.Writer(name, shm.TRADE, 8).close(unlink=True)


def test_layout_change_needs_replace(name: str) -> None:
    shm.Writer(name, shm.TRADE, 8).close()
    with pytest.raises(shm.LayoutMismatch, match="capacity"):
        shm.Writer(name, shm.TRADE, 16)
    w = shm.Writer(name, shm.BBO, 16, replace=True)
    assert w.generation == 2 and w.tail == 0
    w.close(unlink=True)


def test_wrong_record_raises_layout_mismatch(name: str) -> None:
    with shm.Writer(name, shm.TRADE, 8) as w:
        with pytest.raises(shm.LayoutMismatch, match=name):
            w.commit((1, 2, 3))
        with pytest.raises(shm.LayoutMismatch, match=name):
            w.commit(np.zeros(1, shm.BBO)[0])
        assert w.tail == 0


def test_unlink_after_close(name: str) -> None:
    with shm.Writer(name, shm.TRADE, 8) as w:
        w.commit_batch(payload(np.arange(2)))
    w.close(unlink=True)  # the with-block already closed it
    assert shm.list_segments(name.split(".")[1]) == []


def test_poll_into_reuses_one_buffer(name: str) -> None:
    buf = np.zeros(4, shm.TRADE)
    with shm.Writer(name, shm.TRADE, 16) as w, shm.Reader(name, start="oldest") as r:
        assert r.poll_into(buf) == 0
        w.commit_batch(payload(np.arange(6)))
        assert r.poll_into(buf) == 4 and buf["seq"].tolist() == [0, 1, 2, 3]
        assert mismatches(buf) == 0
        assert r.poll_into(buf) == 2 and buf["seq"][:2].tolist() == [4, 5]
        for first in range(6, 46, 10):  # lapped: loss counted, newest records delivered
            w.commit_batch(payload(np.arange(first, first + 10)))
        n = r.poll_into(buf)
        assert n == 4 and r.stats.lapped == 1 and mismatches(buf[:n]) == 0
        with pytest.raises(shm.LayoutMismatch, match="poll_into"):
            r.poll_into(np.zeros(4, shm.BBO))


def test_a_segment_being_created_is_not_found_yet(name: str) -> None:
    path = os.path.join(shm.SHM_DIR, name)
    with open(path, "wb"):
        pass  # created, not sized yet
    with pytest.raises(shm.SegmentNotFound, match="being created"):
        shm.Reader(name)
    with open(path, "wb") as f:
        f.write(bytes(8192))  # sized, header not written yet (magic is written last)
    with pytest.raises(shm.SegmentNotFound, match="being created"):
        shm.Reader(name)
    with open(path, "wb") as f:
        f.write(b"x" * 8192)  # something else entirely
    with pytest.raises(shm.LayoutMismatch, match="bad magic"):
        shm.Reader(name)
    os.unlink(path)
