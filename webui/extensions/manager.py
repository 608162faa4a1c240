"""The app's extensions: one object that knows the folder, the flags and the settings, discovers the
extensions and keeps what loading did (built once by the composition root, passed to the UI, the API
and the Extensions tab)."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from webui.extensions.discovery import Extension, discover
from webui.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ExtensionManager:
    extensions_dir: Path
    settings: Settings
    args: argparse.Namespace
    extensions: list[Extension] = field(default_factory=list)
    # the options that existed before any extension registered its own (a reload unregisters the rest)
    base_option_keys: set[str] | None = None

    def disable_all(self) -> str:
        """A1111: the flags win over the option."""
        if getattr(self.args, "disable_all_extensions", False):
            return "all"
        if getattr(self.args, "disable_extra_extensions", False):
            return "extra"
        return str(self.settings.get("disable_all_extensions") or "none")

    def refresh(self) -> list[Extension]:
        """Re-read the folder (a new install shows up; what was loaded stays loaded until a restart)."""
        loaded = {e.name: e for e in self.extensions}
        found = discover(self.extensions_dir, disabled=list(self.settings.get("disabled_extensions") or []),
                         disable_all=self.disable_all())
        for e in found:
            old = loaded.get(e.name)
            if old is not None:  # keep what loading recorded
                e.errors, e.load_seconds, e.scripts = old.errors, old.load_seconds, old.scripts
                e.javascript, e.stylesheet = old.javascript, old.stylesheet
        self.extensions = found
        return found

    def enabled(self) -> list[Extension]:
        return [e for e in self.extensions if e.enabled]

    def get(self, name: str) -> Extension | None:
        return next((e for e in self.extensions if e.name == name), None)
