"""A local exchange venue: Binance, Bybit and OKX public WebSocket (and REST) protocols served
from real recordings, so the engine can be tested, benchmarked and demonstrated offline."""

from .launcher import VenueProcess, run_venue, start_venue
from .protocol import Session, VenueProtocolError, open_session
from .recording import Recording, RecordingError, load_recording, topic_of
from .server import Venue, VenueConfig
from .synthetic import SyntheticConfig, generate, okx_checksum

__all__ = [
    "Recording", "RecordingError", "Session", "SyntheticConfig", "Venue", "VenueConfig",
    "VenueProcess", "VenueProtocolError", "generate", "load_recording", "okx_checksum",
    "open_session", "run_venue", "start_venue", "topic_of",
]
