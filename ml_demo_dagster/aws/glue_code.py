"""The Glue job's code on S3: the entry script and a zip of what it imports, by content hash.

Glue runs one script file (`ScriptLocation`) and puts the archives listed in
`--extra-py-files` on the Python path of the driver and the executors. The script is
glue/entry.py; the zip holds the `glue` package and `dagster_pipes` (pure Python, no
dependencies: the Pipes side of the script). Everything else it imports (pyspark, boto3,
numpy, pyarrow) is part of Glue 5.

Both files go under `<code_prefix>/<hash>/` in the store, where the hash covers the bytes
of both: a changed line gives a new folder, and the same code is uploaded once (a head
request finds it). The zip is built deterministically (sorted entries, fixed timestamps),
so the same source always gives the same hash.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import glue

SCRIPT_NAME = "feature_job.py"
ZIP_NAME = "ml_demo_glue.zip"
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class GlueCode:
    """The script and the module zip, and the hash that names their folder."""

    script: bytes
    modules: bytes
    digest: str

    def keys(self, code_prefix: str) -> tuple[str, str]:
        """(script key, zip key) under the code prefix."""
        folder = f"{code_prefix.strip('/')}/{self.digest}"
        return f"{folder}/{SCRIPT_NAME}", f"{folder}/{ZIP_NAME}"


def _package_files(package_dir: Path, name: str) -> list[tuple[str, bytes]]:
    files = []
    for path in sorted(package_dir.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".typed") and "__pycache__" not in path.parts:
            files.append((f"{name}/{path.relative_to(package_dir).as_posix()}", path.read_bytes()))
    return files


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def build() -> GlueCode:
    """The script and zip from the installed sources (cached: the sources do not change in a process)."""
    glue_dir = Path(glue.__file__).resolve().parent
    pipes_spec = importlib.util.find_spec("dagster_pipes")
    if pipes_spec is None or not pipes_spec.submodule_search_locations:
        raise RuntimeError("dagster-pipes is not installed; the Glue job needs it (pip install dagster-pipes)")
    pipes_dir = Path(list(pipes_spec.submodule_search_locations)[0])
    script = (glue_dir / "entry.py").read_bytes()
    modules = _zip(_package_files(glue_dir, "glue") + _package_files(pipes_dir, "dagster_pipes"))
    digest = hashlib.sha256(len(script).to_bytes(8, "big") + script + modules).hexdigest()[:16]
    return GlueCode(script, modules, digest)
