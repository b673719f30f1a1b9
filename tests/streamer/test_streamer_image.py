"""What the streamer's image (streamer/Dockerfile) would contain, checked without Docker:
its dependency set (streamer/requirements.txt) resolved over the installed distributions,
free of the pipeline's heavy packages, and enough to stream: `ml-demo stream --source ig`
runs against the IG fakes, into S3 on moto, with credentials from Secrets Manager, while
every import outside that set fails as it would in the image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import boto3
import pytest
from ig_fakes import FakeIG
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "streamer" / "requirements.txt"
DOCKERFILE = ROOT / "streamer" / "Dockerfile"
PROJECT_PACKAGES = {"ml_demo_dagster", "streamer"}
NOT_IN_THE_IMAGE = {"dagster", "dagster-webserver", "dagster-aws", "dagster-pyspark", "pyspark", "scikit-learn",
                    "sagemaker", "optuna", "matplotlib", "pandas", "moto", "pytest"}  # fmt: skip


def image_requirements() -> list[Requirement]:
    lines = [line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    return [Requirement(line) for line in lines if line]


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """Every distribution the requirements pull in (name -> installed version), following
    each installed distribution's own requirements (markers evaluated, no extras)."""
    env = default_environment()
    found: dict[str, str] = {}
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found or (req.marker is not None and not req.marker.evaluate({**env, "extra": ""})):
            continue
        dist = metadata.distribution(name)
        assert req.specifier.contains(dist.version, prereleases=True), f"{name} {dist.version} is not {req}"
        found[name] = dist.version
        todo.extend(Requirement(r) for r in dist.requires or [])
    return found


def test_the_image_requirements_repeat_the_projects_specifiers():
    project = {
        canonicalize_name(r.name): r
        for r in map(Requirement, tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    }
    for req in image_requirements():
        assert str(req.specifier) == str(project[canonicalize_name(req.name)].specifier), req.name


def test_the_image_dependency_set_has_no_pipeline_packages():
    names = set(closure(image_requirements()))
    assert {"lightstreamer-client-lib", "aiohttp", "boto3", "pyarrow", "pydantic", "numpy"} <= names
    assert not names & NOT_IN_THE_IMAGE, names & NOT_IN_THE_IMAGE
    assert not [n for n in names if n.startswith(("dagster", "sagemaker", "pyspark"))]


def test_the_dockerfile_installs_that_set_as_a_non_root_user_and_runs_the_ig_streamer():
    text = DOCKERFILE.read_text()
    instructions = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip()[:1].isalpha()]
    assert instructions[0] == "FROM python:3.11-slim"
    runs = " ".join(i for i in instructions if i.startswith("RUN "))
    assert "pip install -r streamer-requirements.txt" in runs and "pip install --no-deps ." in runs
    assert "COPY streamer/requirements.txt streamer-requirements.txt" in instructions
    [user] = [i for i in instructions if i.startswith("USER ")]
    assert user.split()[1] not in ("root", "0")
    assert instructions.index(user) < instructions.index(instructions[-1])
    assert instructions[-1] == 'CMD ["ml-demo", "stream", "--source", "ig"]'
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"] and "!streamer/" in ignore and "!ml_demo_dagster/" in ignore


# Run the CLI with imports limited to the image's set: stdlib, the project, and the modules
# of the resolved distributions; anything else fails as "No module named ..." would there.
_BLOCKER = """
import importlib.abc, importlib.machinery, json, os, site, sys
allowed = set(json.loads(os.environ.pop("IMAGE_MODULES")))
preloaded = {m.partition(".")[0] for m in sys.modules}  # the interpreter's start-up (site, editable finder)
installed = tuple(site.getsitepackages())
class NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if path is not None or top in allowed:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec is None or not (spec.origin or "").startswith(installed):
            return None  # the standard library, or nothing at all: as anywhere
        raise ModuleNotFoundError(f"No module named {name!r} (not in the streamer image)", name=name)
sys.meta_path.insert(0, NotInTheImage())
from ml_demo_dagster.cli import main
rc = main(sys.argv[1:])
outside = sorted({m.partition(".")[0] for m, mod in list(sys.modules.items())
                  if (getattr(mod, "__file__", None) or "").startswith(installed)} - allowed - preloaded)
print("outside the image:", outside)
sys.exit(rc)
"""


def image_modules() -> list[str]:
    names = set(closure(image_requirements()))
    tops = {top for top, dists in metadata.packages_distributions().items()
            if any(canonicalize_name(d) in names for d in dists)}  # fmt: skip
    return sorted(tops | PROJECT_PACKAGES)


@pytest.mark.slow
def test_the_set_is_enough_to_stream_from_ig_into_s3_with_credentials_from_secrets_manager(moto_endpoint, tmp_path):
    aws = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "eu-west-2"}  # fmt: skip
    s3 = boto3.client("s3", region_name="eu-west-2", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="image-check", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    sm = boto3.client("secretsmanager", region_name="eu-west-2", endpoint_url=moto_endpoint)
    with FakeIG() as fake:
        sm.create_secret(Name="image-check/ig", SecretString=json.dumps(
            {"ig_identifier": fake.identifier, "ig_password": fake.password, "ig_api_key": fake.api_key}))  # fmt: skip
        env = {**os.environ, **aws, "IMAGE_MODULES": json.dumps(image_modules()),
               "ML_DEMO__IG__BASE_URL": fake.rest_url, "ML_DEMO__IG__SECRET_NAME": "image-check/ig",
               "ML_DEMO__STORE__URL": "s3://image-check/staging-test"}  # fmt: skip
        for name in ("IG_IDENTIFIER", "IG_PASSWORD", "IG_API_KEY"):
            env.pop(name, None)
        proc = subprocess.Popen([sys.executable, "-c", _BLOCKER, "stream", "--source", "ig", "--max-batches", "1",
                                 "--batch-size", "5"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            fake.wait_subscribed(process=proc)
            fake.send_many([{"BID": f"{30000 + 25 * (i % 2):.2f}", "OFFER": f"{30020 + 25 * (i % 2):.2f}",
                             "UPDATE_TIME": f"10:00:{i:02d}", "MARKET_STATE": "TRADEABLE"} for i in range(8)])  # fmt: skip
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        sm.delete_secret(SecretId="image-check/ig", ForceDeleteWithoutRecovery=True)
    assert proc.returncode == 0, err
    assert "outside the image: []" in out
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="image-check")["Contents"])
    assert len(keys) == 2 and all(k.startswith("staging-test/staging/") for k in keys)
