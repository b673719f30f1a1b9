"""The Glue jobs' code on S3: each job's entry script and a zip of what it imports, by content hash.

Glue runs one script file (`ScriptLocation`) and puts the archives listed in
`--extra-py-files` on the Python path of the driver and the executors. Two jobs:

- the feature job (`build()`): the script is glue/entry.py; the zip holds the `glue`
  package and `dagster_pipes` (pure Python, no dependencies: the Pipes side of the script);
- the state machine's steps job (`build_steps()`): the script is ml_demo_dagster/aws/steps_job.py;
  the zip holds the project modules it imports (found by reading the imports, below) and
  `threadpoolctl` (pure Python, imported by core/linear_learner.py).

Everything else they import (pyspark, boto3, numpy, pyarrow) is part of Glue 5, except
scipy, which has compiled parts and so cannot come in a zip: the steps job names its pin
in `--additional-python-modules` (aws/requests.STEPS_PYTHON_MODULES) and Glue installs it.
Building the steps zip fails, naming the module, when the code imports anything else.

Which project modules the steps zip holds: those the script imports, followed through
module-level imports (they run when a module loads) and through the imports inside the
script's own functions (the steps), never through `if TYPE_CHECKING:` blocks. An import
inside a function of another module is lazy by the project's convention (core/linear_learner
imports core/metrics, and so scikit-learn, only to train): its module is not shipped, and
a step that needed it would fail on Glue with an ImportError (a test runs the steps with
nothing but the zip, Glue's modules and scipy importable).

Both files go under `<code_prefix>/<hash>/` in the store, where the hash covers the bytes
of both: a changed line gives a new folder, and the same code is uploaded once (a head
request finds it). The zip is built deterministically (sorted entries, fixed timestamps),
so the same source always gives the same hash.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import sys
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import glue

SCRIPT_NAME = "feature_job.py"
ZIP_NAME = "ml_demo_glue.zip"
STEPS_SCRIPT_NAME = "steps_job.py"
STEPS_ZIP_NAME = "ml_demo_steps.zip"
_EPOCH = (1980, 1, 1, 0, 0, 0)
# What Glue 5 provides (Python 3.11, Spark 3.5 and its preinstalled modules, "Python modules
# already provided in AWS Glue"), of what the project imports.
GLUE_PROVIDED = ("pyspark", "boto3", "botocore", "numpy", "pyarrow", "pandas")
# Pure-Python packages the steps job imports that Glue 5 lacks: shipped in its zip.
STEPS_VENDORED = ("threadpoolctl",)
PROJECT_PACKAGES = ("ml_demo_dagster", "glue")


class GlueCodeError(RuntimeError):
    """The code cannot be shipped to Glue as it is; the message names the module."""


@dataclass(frozen=True)
class GlueCode:
    """A job's script and module zip, and the hash that names their folder."""

    script: bytes
    modules: bytes
    digest: str
    script_name: str = SCRIPT_NAME
    zip_name: str = ZIP_NAME

    def keys(self, code_prefix: str) -> tuple[str, str]:
        """(script key, zip key) under the code prefix."""
        folder = f"{code_prefix.strip('/')}/{self.digest}"
        return f"{folder}/{self.script_name}", f"{folder}/{self.zip_name}"


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


def _bundle(script: bytes, files: list[tuple[str, bytes]], script_name: str, zip_name: str) -> GlueCode:
    modules = _zip(files)
    digest = hashlib.sha256(len(script).to_bytes(8, "big") + script + modules).hexdigest()[:16]
    return GlueCode(script, modules, digest, script_name, zip_name)


@lru_cache(maxsize=1)
def build() -> GlueCode:
    """The feature job's script and zip from the installed sources (cached: the sources do not change in a process)."""
    glue_dir = Path(glue.__file__).resolve().parent
    pipes_spec = importlib.util.find_spec("dagster_pipes")
    if pipes_spec is None or not pipes_spec.submodule_search_locations:
        raise RuntimeError("dagster-pipes is not installed; the Glue job needs it (pip install dagster-pipes)")
    pipes_dir = Path(list(pipes_spec.submodule_search_locations)[0])
    script = (glue_dir / "entry.py").read_bytes()
    return _bundle(script, _package_files(glue_dir, "glue") + _package_files(pipes_dir, "dagster_pipes"),
                   SCRIPT_NAME, ZIP_NAME)  # fmt: skip


# --- the steps job: its imports, read from the sources ------------------------------------------


@dataclass(frozen=True)
class Imports:
    """What a source file imports: absolute module names, at module level and inside functions."""

    eager: frozenset[str]
    lazy: frozenset[str]


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith("TYPE_CHECKING")


def read_imports(source: bytes, package: str) -> Imports:
    """The modules `source` imports (`from a import b` counts a.b too: b may be a module)."""
    eager: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if _is_type_checking(node):
            for child in node.orelse:  # the `else:` of `if TYPE_CHECKING:` runs
                visit(child, in_function)
            return
        into = lazy if in_function else eager
        if isinstance(node, ast.Import):
            into.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            into.add(base)
            into.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source), False)
    return Imports(frozenset(eager), frozenset(lazy))


def _source(module: str) -> tuple[Path, bool] | None:
    """(file, is a package) of a project module, or None when the name is not a module."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, AttributeError, ValueError):  # `a.b.name` where a.b is a module
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin), spec.submodule_search_locations is not None


def steps_closure(entry: str = "ml_demo_dagster.aws.steps_job") -> tuple[list[str], set[str]]:
    """The project modules the steps script needs (sorted) and the other top-level packages
    their eager imports name."""
    found: dict[str, Path] = {}
    external: set[str] = set()
    entry_file = _source(entry)
    pending = [(entry, True)]
    while pending:
        module, is_entry = pending.pop()
        top = module.split(".")[0]
        if top not in PROJECT_PACKAGES:
            external.add(top)
            continue
        source = _source(module)
        if source is None or module in found:
            continue  # an attribute, not a module (`from a import name`), or done
        path, is_package = source
        if not is_entry:
            found[module] = path
        parts = module.split(".")
        for i in range(1, len(parts)):  # the packages above it, for their __init__ files
            pending.append((".".join(parts[:i]), False))
        imports = read_imports(path.read_bytes(), module if is_package else ".".join(parts[:-1]))
        for name in imports.eager | (imports.lazy if is_entry else frozenset()):
            pending.append((name, False))
    assert entry_file is not None
    return sorted(found), {e for e in external if e not in sys.stdlib_module_names}


def _module_files(modules: list[str]) -> list[tuple[str, bytes]]:
    files = []
    for module in modules:
        path, is_package = _source(module)
        name = module.replace(".", "/") + ("/__init__.py" if is_package else ".py")
        files.append((name, path.read_bytes()))
    return files


def _vendored(name: str) -> list[tuple[str, bytes]]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise GlueCodeError(f"{name} is not installed; the steps job ships it (pip install {name})")
    if spec.submodule_search_locations:
        return _package_files(Path(list(spec.submodule_search_locations)[0]), name)
    return [(f"{name}.py", Path(spec.origin).read_bytes())]


@lru_cache(maxsize=1)
def build_steps() -> GlueCode:
    """The steps job's script and zip; GlueCodeError when it imports what Glue cannot have."""
    from ml_demo_dagster.aws.requests import STEPS_PYTHON_MODULES

    modules, external = steps_closure()
    installed = {spec.split("==")[0].split(">")[0].split("<")[0].strip() for spec in STEPS_PYTHON_MODULES}
    missing = sorted(external - set(GLUE_PROVIDED) - set(STEPS_VENDORED) - installed)
    if missing:
        raise GlueCodeError(f"the steps job imports {', '.join(missing)}, which neither Glue 5 provides nor the "
                            "zip carries (ml_demo_dagster/aws/glue_code.py)")  # fmt: skip
    script_path, _ = _source("ml_demo_dagster.aws.steps_job")
    files = _module_files(modules) + [f for name in STEPS_VENDORED for f in _vendored(name)]
    return _bundle(script_path.read_bytes(), files, STEPS_SCRIPT_NAME, STEPS_ZIP_NAME)
