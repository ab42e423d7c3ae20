"""microstream's control plane: CLI, and (as the engine grows) config, supervisor and metrics."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("microstream")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
