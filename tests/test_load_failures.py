"""A checkpoint load that fails for a reason outside the file does not make a good file unusable.

Out of host memory is produced for real: a child process lowers its own address-space limit
(RLIMIT_AS) to what it already uses, asks for the checkpoint, then lifts the limit and asks again,
without a restart.  A file that is itself broken (truncated) is marked; the same file restored
on disk is judged again and loads.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_models import make_tiny_checkpoint
from webui.memory.devices import DevicePolicy
from webui.models.file_checks import is_transient_failure
from webui.models.file_io import ModelFileError
from webui.models.registry import CheckpointRegistry
from webui.services.model_service import ModelLoadError, ModelService

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
from pathlib import Path
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.services.model_service import ModelLoadError, ModelService

root = Path(sys.argv[1])
registry = CheckpointRegistry(root / "models", root / "cache")
registry.refresh()
models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True))
models.load("warm.safetensors")  # every lazy import and first-use allocation happens here
models.unload()

def vm_bytes():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

soft, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + (4 << 20), hard))  # no room for the weights
try:
    models.load("good.safetensors")
    first = "loaded"
except ModelLoadError as e:
    first = str(e)
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
error_after = registry.get("good.safetensors").error
registry.refresh()
listed_error = registry.get("good.safetensors").error
loaded = models.load("good.safetensors")
print(json.dumps({"first": first, "error_after": error_after, "listed_error": listed_error,
                  "loaded": loaded.info.name}))
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loadfail")
    (root / "models").mkdir()
    make_tiny_checkpoint(root / "models" / "good.safetensors", family="sd1", seed=2)
    shutil.copyfile(root / "models" / "good.safetensors", root / "models" / "warm.safetensors")
    return root


def test_out_of_host_memory_while_loading_leaves_the_file_usable(root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(root)], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert "could not be loaded just now" in res["first"] and "not marked unusable" in res["first"], res
    assert res["error_after"] is None and res["listed_error"] is None, res
    assert res["loaded"] == "good.safetensors"


def test_a_broken_file_is_marked_and_the_repaired_file_is_checked_again(root: Path, one_torch_thread) -> None:
    path = root / "models" / "good.safetensors"
    good = path.read_bytes()
    registry = CheckpointRegistry(root / "models", root / "cache2")
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True))
    try:
        # the download stopped half-way after the listing was made: the load finds the damage
        path.write_bytes(good[: len(good) // 2])
        with pytest.raises(ModelLoadError) as e:
            models.load("good.safetensors")
        assert "just now" not in str(e.value)
        assert registry.get("good.safetensors").error  # marked, with its reason
        with pytest.raises(ModelLoadError, match="unusable"):
            models.load("good.safetensors")  # not read again while the file is the same
    finally:
        path.write_bytes(good)  # the download completed: a new version of the file
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    registry.refresh()
    assert registry.get("good.safetensors").error is None
    assert models.load("good.safetensors").info.name == "good.safetensors"


def test_which_failures_are_transient(root: Path) -> None:
    assert is_transient_failure(MemoryError())
    assert is_transient_failure(OSError(5, "Input/output error"))
    assert is_transient_failure(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate"))
    assert is_transient_failure(ModelFileError(None, "cannot read file (Input/output error)", transient=True))
    assert not is_transient_failure(ModelFileError(None, "safetensors header is not valid JSON"))
    assert not is_transient_failure(KeyError("model.diffusion_model.input_blocks.0.0.weight"))
