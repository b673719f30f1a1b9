"""The external tools the infra tests run, installed once into cached folders of the clone:
checkov in its own virtualenv (.venv-checkov/: it pins an old boto3) and asl-validator from
npm (.cache/asl-validator/). PyPI and the npm registry are the only network they need; a
file lock keeps two test processes from installing at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import venv
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKOV_VENV = REPO / ".venv-checkov"
CHECKOV_REQUIREMENTS = Path(__file__).with_name("checkov-requirements.txt")
ASL_VALIDATOR_DIR = REPO / ".cache" / "asl-validator"
ASL_VALIDATOR_VERSION = "4.0.0"


@contextmanager
def _locked(name: str):
    lock = REPO / ".cache" / f"{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"installing {what} failed ({result.returncode}): {result.stderr[-2000:]}")


def checkov() -> Path:
    """The checkov executable, installed from the pinned requirements on first use."""
    stamp = CHECKOV_VENV / f".installed-{hashlib.sha256(CHECKOV_REQUIREMENTS.read_bytes()).hexdigest()[:12]}"
    with _locked("checkov"):
        if not stamp.exists():
            shutil.rmtree(CHECKOV_VENV, ignore_errors=True)
            venv.EnvBuilder(with_pip=True).create(CHECKOV_VENV)
            pip = [
                str(CHECKOV_VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ]
            _run([*pip, "--no-deps", "-r", str(CHECKOV_REQUIREMENTS)], "checkov")
            stamp.touch()
    return CHECKOV_VENV / "bin" / "checkov"


def asl_validator() -> Path:
    """The asl-validator executable (npm), installed on first use."""
    binary = ASL_VALIDATOR_DIR / "node_modules" / ".bin" / "asl-validator"
    stamp = ASL_VALIDATOR_DIR / f".installed-{ASL_VALIDATOR_VERSION}"
    with _locked("asl-validator"):
        if not stamp.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise RuntimeError("npm is not on PATH: the ASL check needs Node.js and npm")
            ASL_VALIDATOR_DIR.mkdir(parents=True, exist_ok=True)
            _run([npm, "install", "--prefix", str(ASL_VALIDATOR_DIR), "--no-audit", "--no-fund", "--silent",
                  f"asl-validator@{ASL_VALIDATOR_VERSION}"], "asl-validator")  # fmt: skip
            stamp.touch()
    return binary


def terraform() -> str:
    path = shutil.which("terraform")
    if path is None:
        raise RuntimeError("terraform is not on PATH (Terraform >= 1.10 is needed for `terraform fmt`)")
    return path


if __name__ == "__main__":  # `python tests/infra/infra_tools.py`: install both ahead of the tests
    print(checkov(), asl_validator(), file=sys.stderr)
