"""The errors the command line turns into a one-line message with a hint, in a module that
imports nothing: the modules that raise them need torch, pandas or transformers (seconds to
import), and the command line must name them without those for ``mtlib --help`` and a
settings error to answer at once. Each is re-exported by the module that raises it
(``from mtlib.data.files import DataError`` works, and ``from mtlib.config import ConfigError``).
"""


class ConfigError(ValueError):
    """A params.yaml or override problem; the message names the key path."""


class DataError(ValueError):
    """A task file is missing or malformed; the message names file, line and column."""


class OutputError(ValueError):
    """An output path that cannot be written as asked: a folder, or one of the inputs."""


class BackboneError(RuntimeError):
    """A backbone that cannot be loaded: a missing package or weights, or a bad setting."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not belong to the model or config at hand."""


class DeviceError(RuntimeError):
    """A configured device that this machine does not have."""


class RunFolderError(FileExistsError):
    """A folder this run may not write to: not a run folder, busy, or holding another run."""
