"""Raw-frame capture: every received frame, with its receive time, into rotating gzip files.

The capture format is the one :mod:`workers.exchanges.replay` and :mod:`workers.venue.recording`
read: gzip text, one line per frame, ``b"{recv_ns} {frame}\\n"`` where ``recv_ns`` is the epoch
ns receive stamp of :class:`~workers.exchanges.connection.FeedConnection` and ``frame`` the
exact payload bytes. A frame holding a raw ``\\n`` or ``\\r`` (never seen in these JSON
protocols) would split its line for the readers: it is counted in ``skipped``, not written.

:class:`CaptureWriter` writes ``{exchange}-{session start UTC}-{index:04d}.capture.gz`` files
in a directory, each first as ``*.part`` and renamed once complete, so a reader (a glob on
``*.capture.gz``) never sees a half-written file. It rotates after ``rotate_bytes`` of
uncompressed lines or ``rotate_s`` of age. Files of one session are consecutive members of one
stream: ``cat DIR/binance-*.capture.gz > all.gz`` is a valid capture too (multi-member gzip).

:func:`run_record` is the process entry of ``microstream record``: a normal
:class:`~workers.exchanges.worker.FeedWorker` (connections, subscriptions, REST snapshots,
books, rings, stats) with a :class:`CaptureTap` on its feed: each frame goes to the feed, then
to the writer, and each accepted Binance REST depth snapshot is saved next to the file being
written as ``{file}.rest_depth_{SYMBOL}.json`` (the name ``microstream replay
--rest-snapshot`` and the venue's ``--replay`` both understand; a later snapshot of the same
symbol in the same file is ``{file}.{k}.rest_depth_{SYMBOL}.json``).
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from engine.config import Config, ExchangeConfig

from .feed import Feed

__all__ = ["DEFAULT_COMPRESSLEVEL", "DEFAULT_ROTATE_BYTES", "DEFAULT_ROTATE_S", "CaptureTap",
           "CaptureWriter", "capture_files", "run_record"]

log = logging.getLogger("microstream.capture")

DEFAULT_ROTATE_BYTES = 256 * 1024 * 1024
DEFAULT_ROTATE_S = 3600.0
# level 1: ~4.5 us/frame (≈300 B Binance frames), 5.6x smaller; level 6 doubles the cost
# for 7.3x (measured on tests/data/recorded/binance USD-M frames)
DEFAULT_COMPRESSLEVEL = 1
SUFFIX = ".capture.gz"


def capture_files(out_dir: str | Path, exchange: str = "") -> list[Path]:
    """The complete capture files in ``out_dir`` (of ``exchange`` if given), in written order."""
    prefix = f"{exchange}-" if exchange else ""
    return sorted(Path(out_dir).glob(f"{prefix}*{SUFFIX}"))


class CaptureWriter:
    """Rotating gzip writer of ``"{recv_ns} {frame}"`` lines (see the module docstring).

    ``frames``, ``bytes`` (uncompressed, newlines included), ``files`` (opened) and
    ``skipped`` count what was written; ``paths`` lists the completed files in order.
    """

    def __init__(self, out_dir: str | Path, exchange: str,
                 rotate_bytes: int = DEFAULT_ROTATE_BYTES, rotate_s: float = DEFAULT_ROTATE_S,
                 compresslevel: int = DEFAULT_COMPRESSLEVEL) -> None:
        if rotate_bytes <= 0 or not rotate_s > 0:
            raise ValueError("rotate_bytes and rotate_s must be > 0")
        if not 0 <= compresslevel <= 9:
            raise ValueError("compresslevel must be in 0..9")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.exchange = exchange
        self.rotate_bytes = rotate_bytes
        self.rotate_s = rotate_s
        self.compresslevel = compresslevel
        self.session = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.frames = self.bytes = self.files = self.skipped = 0
        self.paths: list[Path] = []
        self._rotate_ns = int(rotate_s * 1e9)
        self._index = 0
        self._gz: gzip.GzipFile | None = None
        self._raw: IO[bytes] | None = None
        self._path: Path | None = None   # final name of the open file
        self._opened_ns = 0
        self._file_bytes = 0
        self._closed = False

    @property
    def current_path(self) -> Path | None:
        """Final name of the file being written (it exists as ``*.part``), or None."""
        return self._path

    # -- hot path -----------------------------------------------------------------------
    def write(self, recv_ns: int, frame: bytes) -> None:
        """Write one frame received at ``recv_ns`` (epoch ns): one gzip ``write``; rotates."""
        if b"\n" in frame or b"\r" in frame:
            self.skipped += 1
            return
        gz = self._gz
        if gz is None:
            gz = self._open(recv_ns)
        elif recv_ns - self._opened_ns >= self._rotate_ns:
            self._finish()
            gz = self._open(recv_ns)
        line = b"%d %b\n" % (recv_ns, frame)
        gz.write(line)
        n = len(line)
        self.frames += 1
        self.bytes += n
        self._file_bytes += n
        if self._file_bytes >= self.rotate_bytes:
            self._finish()   # the next file opens with the next frame

    # -- control plane ------------------------------------------------------------------
    def tick(self, now_ns: int | None = None) -> None:
        """Close the open file if it is older than ``rotate_s`` (call it while idle)."""
        now = time.time_ns() if now_ns is None else now_ns
        if self._gz is not None and now - self._opened_ns >= self._rotate_ns:
            self._finish()

    def save_sidecar(self, kind: str, body: bytes) -> Path:
        """Save ``body`` as ``{file}.{kind}.json`` next to the file being written (opened if
        none is), ``{file}.{k}.{kind}.json`` if taken; complete once visible."""
        if self._path is None:
            self._open(time.time_ns())
        assert self._path is not None
        name, k = self._path.name, 0
        path = self.out_dir / f"{name}.{kind}.json"
        while path.exists():
            k += 1
            path = self.out_dir / f"{name}.{k}.{kind}.json"
        part = path.with_name(path.name + ".part")
        part.write_bytes(body)
        os.replace(part, path)
        return path

    def close(self) -> None:
        """Complete and rename the open file; no writes after this."""
        self._closed = True
        if self._gz is not None:
            self._finish()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, now_ns: int) -> gzip.GzipFile:
        if self._closed:
            raise ValueError("capture writer is closed")
        while True:  # never overwrite: skip names left by an earlier session or a crash
            path = self.out_dir / f"{self.exchange}-{self.session}-{self._index:04d}{SUFFIX}"
            self._index += 1
            part = path.with_name(path.name + ".part")
            if path.exists():
                continue
            try:
                raw = open(part, "xb")  # closed by _finish
            except FileExistsError:
                continue
            break
        self._raw, self._path = raw, path
        self._gz = gzip.GzipFile(str(path), "wb", self.compresslevel, raw)
        self._opened_ns, self._file_bytes = now_ns, 0
        self.files += 1
        return self._gz

    def _finish(self) -> None:
        gz, raw, path = self._gz, self._raw, self._path
        assert gz is not None and raw is not None and path is not None
        self._gz = self._raw = self._path = None
        try:
            gz.close()   # the gzip trailer: a complete file
        finally:
            raw.close()
        os.replace(path.with_name(path.name + ".part"), path)
        self.paths.append(path)


class CaptureTap:
    """Taps a feed instance: ``on_frame`` feeds first, then the writer; accepted REST depth
    snapshots (Binance ``on_snapshot``) are saved as sidecars. A write failure (disk full)
    stops the capture, never the feed: it is kept in ``error`` for the control plane."""

    def __init__(self, feed: Feed, writer: CaptureWriter, rest_snapshots: bool = True) -> None:
        self.feed, self.writer = feed, writer
        self.error: BaseException | None = None
        self.snapshots: list[Path] = []
        feed_on_frame, write = feed.on_frame, writer.write

        def on_frame(conn: str, data: bytes, recv: int, mono: int) -> None:
            feed_on_frame(conn, data, recv, mono)
            if self.error is None:
                try:
                    write(recv, data)
                except Exception as exc:
                    self.error = exc

        feed.on_frame = on_frame  # type: ignore[method-assign]
        feed_on_snapshot: Callable[..., bool] | None = getattr(feed, "on_snapshot", None)
        if rest_snapshots and feed_on_snapshot is not None:
            def on_snapshot(sid: int, body: bytes, recv: int, mono: int) -> bool:
                ok = feed_on_snapshot(sid, body, recv, mono)
                if ok and self.error is None:
                    try:
                        tag = f"rest_depth_{feed.symbols[sid].symbol.upper()}"
                        self.snapshots.append(writer.save_sidecar(tag, body))
                    except Exception as exc:
                        self.error = exc
                return ok

            feed.on_snapshot = on_snapshot  # type: ignore[attr-defined]


def run_record(exchange: str, config: Config, out_dir: str | Path,
               duration_s: float | None = None, rotate_bytes: int = DEFAULT_ROTATE_BYTES,
               rotate_s: float = DEFAULT_ROTATE_S, compresslevel: int = DEFAULT_COMPRESSLEVEL,
               rest_snapshots: bool = True) -> int:
    """Process entry of ``microstream record``: a feed worker of ``exchange`` (as
    ``run_worker``: pinned, warmed, frozen, uvloop, bus segments of the config's instance)
    whose frames are also captured into ``out_dir``, until SIGTERM/SIGINT (or
    ``duration_s``). Returns 0, or 1 if writing the capture failed (the capture stops there;
    completed files are kept)."""
    import signal

    import uvloop

    from .worker import FeedWorker, warm_kernels

    cfg: ExchangeConfig = getattr(config.exchanges, exchange)
    if cfg.cpu >= 0:
        os.sched_setaffinity(0, {cfg.cpu})
    writer = CaptureWriter(out_dir, exchange, rotate_bytes, rotate_s, compresslevel)
    warm_kernels()
    worker = FeedWorker(exchange, cfg, config.engine.instance)
    tap = CaptureTap(worker.feed, writer, rest_snapshots)

    async def watch() -> None:
        reported = 0
        while True:
            await asyncio.sleep(0.5)
            if tap.error is None:
                try:
                    writer.tick()
                except Exception as exc:
                    tap.error = exc
            for path in writer.paths[reported:]:
                log.info("%s: capture file %s complete", exchange, path.name)
            reported = len(writer.paths)
            if tap.error is not None:
                log.error("%s: capture failed, stopping: %r", exchange, tap.error)
                worker.stop()
                return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        gc.collect()
        gc.freeze()
        watcher = asyncio.create_task(watch(), name="capture")
        try:
            await worker.run(duration_s)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    log.info("%s: capturing frames into %s", exchange, writer.out_dir)
    try:
        uvloop.run(main())
    finally:
        worker.close()
        try:
            writer.close()
        except Exception as exc:
            tap.error = tap.error or exc
    log.info("%s: captured %d frames (%d bytes, %d skipped) in %d files, %d REST snapshots",
             exchange, writer.frames, writer.bytes, writer.skipped, len(writer.paths),
             len(tap.snapshots))
    if tap.error is not None:
        log.error("%s: capture incomplete: %r", exchange, tap.error)
        return 1
    return 0
