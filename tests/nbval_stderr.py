"""pytest plugin for the nbval re-execution (tests/test_notebooks.py): a cell's stderr (progress bars, a warning
that an artifact was built) is not a result, and the book strips it too, so nbval does not compare it."""
from nbval.plugin import IPyNbFile

_init = IPyNbFile.__init__


def _init_without_stderr(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.skip_compare = self.skip_compare + ("stderr",)


IPyNbFile.__init__ = _init_without_stderr
