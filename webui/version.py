"""The version written into every infotext (`Version: ...`) and the API's `info.version`.

Why not "v0.1.0": A1111 (`modules/infotext_versions.py`) and our parser read the `Version` field
to switch on back-compatibility options for infotexts made by old A1111 releases:

    parse_version(text): if re.match(r'([^-]+-[^-]+)-.*', text): text = <the part before the 2nd '-'>
                         return packaging.version.parse(text), or None if that raises
    ver < 1.6.0        and '[' in prompt  -> "Old prompt editing timelines"
    ver < 1.6.0        and DDIM/PLMS      -> "Pad conds v0"
    ver < v1.7.0-225                      -> "Downcast alphas_cumprod"
    ver < 1.8.0        and a Refiner      -> "Refiner switch by sampling steps"
    (1.8.0-139 also decides whether hires-prompt styles are extracted: version > it, or None)

"v0.1.0" is a valid PEP 440 version (0.1.0) below every threshold, so our own images pasted back
(here or into A1111) were read as an A1111 older than 1.6: a `[red:yellow:0.5]` prompt then ran
with the old timeline and drew red where the original drew yellow.

"webui-v0.1.0" is no PEP 440 version (a name before the number), and it has a single '-', so
A1111's truncation leaves it whole: parse_version returns None and no back-compatibility option
is added, by A1111, by Forge (same module) or by us. Forge relies on the same rule: it writes
"f2.0.1v1.10.1-previous-..." which parse_version also reads as None. (A version number >= 1.8.0
would work too, but it would claim to be an A1111 release.) Our own later versions can still
recognise their images by the "webui-" prefix if they ever need back-compatibility of their own.
Whatever this becomes, A1111's parse_version must read it as None (or as >= 1.8.0-139);
tests/test_infotext.py checks it.
"""
from __future__ import annotations

APP_VERSION = "0.1.0"  # pyproject.toml's version
VERSION = f"webui-v{APP_VERSION}"
