"""The Glue entry script's argument parsing, and the code the project ships to Glue."""

from __future__ import annotations

import ast
import io
import sys
import zipfile

import pytest

from glue.entry import JobArgumentError, resolved_options
from ml_demo_dagster.aws import glue_code

# What Glue 5 provides (Python 3.11, Spark 3.5, and its preinstalled modules); anything else
# must be in the zip the project uploads.
GLUE_PROVIDED = {"pyspark", "boto3", "botocore", "numpy", "pyarrow", "pandas"}


def test_options_are_read_the_way_glue_passes_them():
    argv = ["--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1", "--JOB_NAME", "features", "--job-bookmark-option",
            "job-bookmark-disable", "--batch_id", "1700000000001", "--out_uri=s3://b/features/1700000000001",
            "--dagster-pipes-context", "eJw=", "--batch_id", "1700000000002"]  # fmt: skip
    options = resolved_options(argv, ["JOB_NAME", "batch_id", "out_uri"])
    assert options == {"JOB_NAME": "features", "batch_id": "1700000000002", "out_uri": "s3://b/features/1700000000001"}


@pytest.mark.parametrize("argv, message", [
    (["--JOB_NAME", "features"], "missing job argument(s): --batch_id"),
    (["--JOB_NAME", "features", "--batch_id"], "--batch_id has no value"),
])  # fmt: skip
def test_a_missing_argument_is_named(argv, message):
    with pytest.raises(JobArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolved_options(argv, ["JOB_NAME", "batch_id"])


def test_code_is_named_by_its_content_and_built_the_same_way_every_time():
    glue_code.build.cache_clear()
    first = glue_code.build()
    glue_code.build.cache_clear()
    again = glue_code.build()
    assert first == again
    script_key, zip_key = first.keys("code/")
    assert script_key == f"code/{first.digest}/feature_job.py" and zip_key == f"code/{first.digest}/ml_demo_glue.zip"
    with open(sys.modules["glue.entry"].__file__, "rb") as f:
        assert first.script == f.read()


def test_the_zip_holds_everything_the_script_imports_beyond_what_glue_provides():
    code = glue_code.build()
    archive = zipfile.ZipFile(io.BytesIO(code.modules))
    shipped = {name.split("/")[0] for name in archive.namelist()}
    assert shipped == {"glue", "dagster_pipes"}
    imported = set()
    sources = [code.script] + [
        archive.read(n) for n in archive.namelist() if n.startswith("glue/") and n.endswith(".py")
    ]
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    outside = imported - set(sys.stdlib_module_names) - GLUE_PROVIDED - shipped
    assert outside == set(), f"the Glue job imports {sorted(outside)}, which neither Glue 5 nor the zip provides"
