"""The version of unilstm, said once: ``pyproject.toml`` reads it (setuptools' dynamic ``version``, parsed
without importing the package, so that a build needs no torch), ``unilstm.__version__`` and
``unilstm --version`` print it."""

__version__ = "0.1.0"
