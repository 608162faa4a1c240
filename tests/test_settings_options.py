"""Settings: known options per instance, unknown keys refused, config.json never holds null."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from webui.settings import OPTIONS, OptionInfo, Settings, SettingsError, UnknownOptionError


def test_unknown_keys_are_refused_and_change_nothing(tmp_path: Path) -> None:
    s = Settings.load(tmp_path / "config.json")
    with pytest.raises(UnknownOptionError) as e:
        s.update({"CLIP_stop_at_last_layers": 2, "no_such_option": 1, "other_typo": 2})
    assert e.value.keys == ["no_such_option", "other_typo"] and "no_such_option, other_typo" in str(e.value)
    assert s.get("CLIP_stop_at_last_layers") == 1 and not (tmp_path / "config.json").exists()
    with pytest.raises(SettingsError):
        s.coerce("no_such_option", 1)


def test_register_option_is_per_instance(tmp_path: Path) -> None:
    a, b = Settings.load(tmp_path / "a.json"), Settings.load(tmp_path / "b.json")
    a.register_option("myext_level", OptionInfo(3, "Level", "My extension", "slider", minimum=0, maximum=5,
                                                infotext="My level"))
    assert a.is_known("myext_level") and not b.is_known("myext_level") and "myext_level" not in OPTIONS
    assert a.get("myext_level") == 3 and a.all()["myext_level"] == 3 and "myext_level" not in b.all()
    a.set("myext_level", "4")
    assert json.loads((tmp_path / "a.json").read_text())["myext_level"] == 4
    with pytest.raises(SettingsError):
        a.set("myext_level", 9)  # out of its range
    with pytest.raises(UnknownOptionError):
        b.set("myext_level", 4)
    with pytest.raises(SettingsError):
        a.register_option("bad", {"default": 1})  # type: ignore[arg-type]


def test_load_keeps_an_extensions_keys_and_drops_nulls(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"CLIP_stop_at_last_layers": 2, "myext_level": 7, "other_ext": "x",
                                "randn_source": None, "use_downcasted_alpha_bar": None}))
    s = Settings.load(path)
    assert s.get("myext_level") == 7 and s.all()["other_ext"] == "x"
    assert s.get("randn_source") == OPTIONS["randn_source"].default and s.get("use_downcasted_alpha_bar") is False
    s.set("CLIP_stop_at_last_layers", 3)
    saved = json.loads(path.read_text())
    assert saved == {"CLIP_stop_at_last_layers": 3, "myext_level": 7, "other_ext": "x"}
    # the extension registers later: its stored value is kept and typed; one that no longer fits is dropped
    s.register_option("myext_level", OptionInfo(1, "Level", "My extension", "number", minimum=0, maximum=10))
    assert s.get("myext_level") == 7
    s.register_option("other_ext", OptionInfo(0, "Count", "Other", "number"))
    assert s.get("other_ext") == 0


def test_none_unsets_and_is_never_written(tmp_path: Path) -> None:
    """The bug: a temporary override of a key with no value was restored as None and saved as null."""
    path = tmp_path / "config.json"
    s = Settings.load(path)
    seen: list[object] = []
    s.on_change("randn_source", seen.append)
    s.set("randn_source", "NV")
    s.set("randn_source", None)  # back to the default, listeners told
    s.update({"use_downcasted_alpha_bar": None, "no_such_option": None})  # nothing to unset: no error
    assert seen == ["NV", OPTIONS["randn_source"].default]
    assert json.loads(path.read_text()) == {}
    s.values["CLIP_stop_at_last_layers"] = None  # even if someone writes values directly
    s.save()
    assert json.loads(path.read_text()) == {}


def test_pipeline_options_have_a1111_defaults_and_infotext_names() -> None:
    want = {  # key: (default, infotext name)
        "randn_source": ("CPU", "RNG"),  # A1111: "GPU" (see the comment in webui/settings.py)
        "use_downcasted_alpha_bar": (False, "Downcast alphas_cumprod"),
        "face_restoration": (False, "Face restoration"), "face_restoration_model": ("CodeFormer", None),
        "code_former_weight": (0.5, None), "s_min_uncond": (0.0, "NGMS"), "s_churn": (0.0, "Sigma churn"),
        "s_tmin": (0.0, "Sigma tmin"), "s_tmax": (0.0, "Sigma tmax"), "s_noise": (1.0, "Sigma noise"),
        "eta_ddim": (0.0, "Eta DDIM"), "eta_ancestral": (1.0, "Eta"),
        "override_settings_restore_afterwards": (True, None),
        "generation_max_pixels": (64 * 1024 * 1024, None),
    }
    for key, (default, infotext) in want.items():
        info = OPTIONS[key]
        assert (info.default, info.infotext) == (default, infotext), key
        assert type(info.default) is type(default), key
    assert OPTIONS["randn_source"].choices == ("GPU", "CPU", "NV")
    labels = [i.infotext for i in OPTIONS.values() if i.infotext]
    assert len(labels) == len(set(labels))  # one option per infotext name
