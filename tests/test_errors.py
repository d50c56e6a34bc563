"""mtlib.errors: the error types the command line names are the classes the modules that
raise them export (that they import without torch: tests/test_cli.py)."""
import mtlib.errors as errors
from mtlib.cli import KNOWN
from mtlib.config import ConfigError
from mtlib.data.files import DataError
from mtlib.io import OutputError
from mtlib.model.backbone import BackboneError
from mtlib.training.checkpoint import CheckpointError
from mtlib.training.precision import DeviceError
from mtlib.training.runs import RunFolderError


def test_the_raising_modules_export_the_same_classes_and_the_cli_hints_each():
    exported = [ConfigError, DataError, OutputError, BackboneError, CheckpointError, DeviceError, RunFolderError]
    defined = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert sorted(exported, key=str) == sorted(defined, key=str)
    assert set(defined) <= set(KNOWN)

