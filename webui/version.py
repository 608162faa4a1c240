"""The version written into every infotext (`Version: ...`) and the API's `info.version`."""
from __future__ import annotations

VERSION = "v0.1.0"
