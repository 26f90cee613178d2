"""Where the add-on gets ``protocol/`` from.

Inside the built extension (``scripts/build_addon.py``) a copy of the repository's ``protocol/``
package is vendored as ``<add-on>/protocol/`` with its imports made relative; in the repository
(development and tests) the add-on uses the top-level ``protocol`` package. Importing from here
picks the right one. ``codec`` and ``client`` need msgpack and pyzmq and are imported on demand,
so the add-on registers (and says what is missing) even where they are not installed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

VENDORED = (Path(__file__).resolve().parent / "protocol" / "__init__.py").is_file()
PACKAGE = f"{__package__}.protocol" if VENDORED else "protocol"

cameras = importlib.import_module(f"{PACKAGE}.cameras")
messages = importlib.import_module(f"{PACKAGE}.messages")
errors = importlib.import_module(f"{PACKAGE}.errors")


def module(name: str) -> ModuleType:
    """``protocol.<name>`` (e.g. 'client', 'codec'); raises ImportError when pyzmq/msgpack are missing."""
    return importlib.import_module(f"{PACKAGE}.{name}")


def missing_dependencies() -> list[str]:
    """The networking libraries the client needs that cannot be imported here (empty when all are fine)."""
    missing = []
    for mod, pip_name in (("zmq", "pyzmq"), ("msgpack", "msgpack")):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing.append(pip_name)
    return missing
