"""A job's own view of the options: the shared settings as they were when the job started, with
its `override_settings` applied on top.

A1111 applies overrides by writing the shared `opts` for the length of the job; a `POST /options`
made meanwhile is then lost or leaks. Here the shared `Settings` are never written by a job: every
stage reads `p.opts`, so a change made while the job runs is kept and seen by the next job.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from webui.settings import Settings, SettingsError


class OptionsSnapshot(Mapping[str, Any]):
    """Read-only options of one job (`p.opts.get("CLIP_stop_at_last_layers")`, `p.opts.emphasis`)."""

    def __init__(self, values: dict[str, Any], overridden: tuple[str, ...] = ()) -> None:
        self._values = dict(values)
        self.overridden = overridden  # keys that differ from the shared settings for this job

    @classmethod
    def take(cls, settings: Settings, overrides: Mapping[str, Any] | None = None) -> "OptionsSnapshot":
        """The settings now, with ``overrides`` coerced and validated as a POST /options would be."""
        values = settings.all()
        applied: list[str] = []
        for key, value in (overrides or {}).items():
            if value is None:
                continue  # an infotext that did not carry the key: nothing to override
            try:
                values[key] = settings.coerce(key, value)
            except SettingsError as e:
                from webui.processing.errors import GenerationError
                raise GenerationError(f"override_settings: {e}") from None
            applied.append(key)
        return cls(values, tuple(applied))

    def get(self, key: str, default: Any = None) -> Any:
        v = self._values.get(key, default)
        return default if v is None and default is not None else v

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        # A1111 extensions read `opts.some_option`
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"no option {key!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def with_values(self, **changes: Any) -> "OptionsSnapshot":
        return OptionsSnapshot({**self._values, **changes}, self.overridden + tuple(changes))
