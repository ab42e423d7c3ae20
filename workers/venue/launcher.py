"""Run a venue in the foreground (``microstream venue``) or in a subprocess (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import json
import logging
import selectors
import signal
import subprocess
import sys
import tempfile
from types import TracebackType

import uvloop

from .server import Venue, VenueConfig

__all__ = ["VenueProcess", "run_venue", "start_venue"]


def run_venue(config: VenueConfig) -> int:
    """Serve until SIGINT/SIGTERM. Prints one JSON line when listening: exchange, URLs, frames."""

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="venue: %(message)s")

    async def main() -> None:
        venue = Venue(config)
        await venue.start()
        print(json.dumps({"exchange": config.exchange, "ws_url": venue.ws_url,
                          "rest_url": venue.rest_url, "frames": len(venue.frames),
                          "topics": sorted(set(venue.topics))}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await venue.close()

    uvloop.run(main())
    return 0


class VenueProcess:
    """A venue in a child process; ``ws_url``/``rest_url`` are ready once constructed.

    The child's stderr (its log, with every injected fault) goes to a temporary file, never to
    a pipe nobody drains: a full pipe would block the venue inside its logger.
    """

    def __init__(self, args: list[str], timeout_s: float = 60.0) -> None:
        self._log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "venue", *args],
                                     stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.stderr = ""
        try:
            self.info = json.loads(self._ready_line(timeout_s))
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            self._read_log()
            self._log.close()
            raise
        self.ws_url: str = self.info["ws_url"]
        self.rest_url: str = self.info["rest_url"]

    def _ready_line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                raise RuntimeError(f"venue did not start within {timeout_s:g} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=timeout_s)
            self._read_log()
            raise RuntimeError(f"venue did not start: {self.stderr.strip()}")
        return line

    def _read_log(self) -> None:
        self._log.seek(0)
        self.stderr = self._log.read()

    def stop(self) -> int:
        """SIGTERM (SIGKILL after 30 s), wait; ``stderr`` then holds the venue's log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self._log.closed:
            self._read_log()
            self._log.close()
        return self.proc.returncode

    def faults(self) -> list[dict[str, object]]:
        """The faults the venue injected (after :meth:`stop`), as logged."""
        return [json.loads(line[len("venue: "):]) for line in self.stderr.splitlines()
                if line.startswith('venue: {"fault"')]

    def __enter__(self) -> VenueProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_venue(exchange: str, replay: list[str], *, speed: float = 1.0, flood: bool = False,
                rest_weight_limit: int = 2400, faults: str = "",
                synthetic: dict[str, float] | None = None, loop: bool = False,
                shared_clock: bool = False) -> VenueProcess:
    """Start ``microstream venue`` on a free loopback port; returns when it is listening.

    ``shared_clock``: one timeline for every connection, as on a live exchange (paced only).
    Injected faults are logged on the child's stderr (``VenueProcess.stop`` returns them)."""
    args = ["--exchange", exchange, "--port", "0", "--rest-weight-limit",
            str(rest_weight_limit), "--faults", faults] + (["--loop"] if loop else []) + (
            ["--shared-clock"] if shared_clock else [])
    if synthetic is not None:  # e.g. {"symbols": 2, "rate": 5000, "seconds": 10, "seed": 1}
        args.append("--synthetic")
        for key, value in synthetic.items():
            args += [f"--{key}", str(value)]
    else:
        args += ["--replay", *replay]
    args += ["--flood"] if flood else ["--speed", str(speed)]
    return VenueProcess(args)
