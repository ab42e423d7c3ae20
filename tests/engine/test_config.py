"""``[detectors]`` in config.toml: defaults, per-symbol overrides, and errors that name the
file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
EXCHANGE = '[exchanges.binance]\nenabled = true\nsymbols = [{symbol = "BTCUSDT"}, ' \
           '{symbol = "BTCUSDT", market = "spot"}]\n'


def test_shipped_detectors_section() -> None:
    cfg = load_config(REPO / "config.toml").detectors
    assert cfg.enabled and cfg.whale_min_usd == 1_000_000.0
    assert cfg.symbols["bybit:ETHUSDT"].whale_min_usd == 500_000.0
    assert cfg.symbols["bybit:ETHUSDT"].cascade_usd is None  # unset: the default applies


def test_overrides_use_latest_table_names(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(EXCHANGE + '[detectors.symbols."binance:BTCUSDT@spot"]\n'
                    'whale_min_usd = 10.0\n')
    assert load_config(path).detectors.symbols["binance:BTCUSDT@spot"].whale_min_usd == 10.0


@pytest.mark.parametrize(("text", "needle"), [
    ('[detectors.symbols."binance:BTCUSDT"]\nwhale_min_usd = 1.0\n', "unknown symbol"),
    ('[detectors.symbols."kraken:XBTUSD"]\nwhale_min_usd = 1.0\n', "binance:BTCUSDT@linear"),
    ('[detectors.symbols."binance:BTCUSDT@spot"]\nwhale_min_usd = -1.0\n', "≥ 0"),
    ("[detectors]\nevents_ring_capacity = 1000\n", "events_ring_capacity"),
    ("[detectors]\nimbalance_decay = 0.0\n", "imbalance_decay"),
    ("[detectors]\ncascade_min_slots = 0\n", "cascade_min_slots"),
    ("[detectors]\nbatch_window_us = -1\n", "batch_window_us must be ≥ 0"),
    ('[publisher]\nlatency_samples_file = "lat.npy"\n', "latency_samples_file must be an "
     "absolute path in an existing directory, got 'lat.npy' - at `$.publisher`"),
    ('[publisher]\nlatency_samples_file = "/nowhere/lat.npy"\n', "'/nowhere/lat.npy'"),
    ("[detectors]\nbatch_window_us = 2000\n", "batch_window_us 2000 exceeds idle_wait_us 1000"),
    ("[detectors]\nwhale_min_usd = 'big'\n", "$.detectors.whale_min_usd"),
    ("[detectors]\nenabled = true\ncpu = 999\n", "cpu 999"),
    ("[detectors]\ncolour = 1\n", "colour"),
    ("[detectors]\nkernels = ['cvd', 'tarot']\n", "unknown kernels ['tarot']"),
    ("[detectors]\nexchanges = ['okx']\n", "exchange 'okx' is not an enabled exchange"),
])
def test_errors_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(EXCHANGE + text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert needle in str(err.value) and str(path) in str(err.value)
