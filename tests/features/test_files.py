"""glue.files: the feature job's tasks read and write local and S3 files through one set of calls."""

from __future__ import annotations

import boto3
import pytest

from glue import files


def test_local_files_in_every_spelling_are_the_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a b.csv").write_bytes(b"x")
    for spelling in ("a b.csv", str(tmp_path / "a b.csv"), f"file:{tmp_path}/a%20b.csv", f"file://{tmp_path}/a b.csv"):
        assert files.local_path(spelling) == str(tmp_path / "a b.csv")
        assert files.read_bytes(spelling) == b"x"
    assert files.local_path("s3://bucket/key") is None


def test_write_is_whole_or_nothing_and_clear_removes_only_files_below(tmp_path):
    target = tmp_path / "out" / "deep" / "part-00000.parquet"
    files.write_bytes(str(target), b"one")
    files.write_bytes(str(target), b"two")  # a retried task: same name, replaced
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["part-00000.parquet"]  # no temporary left
    (tmp_path / "keep.txt").write_bytes(b"k")
    assert files.clear_folder(str(tmp_path / "out")) == 1
    assert (tmp_path / "keep.txt").exists() and not target.exists()
    assert files.clear_folder(str(tmp_path / "missing")) == 0


def test_s3_round_trip_and_clear(s3_env):
    s3 = boto3.client("s3", region_name="eu-west-2")
    s3.create_bucket(Bucket="features-io", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    s3.put_object(Bucket="features-io", Key="other/x", Body=b"keep")
    for i in range(3):
        files.write_bytes(files.join("s3://features-io/features/1/", f"part-{i:05d}.parquet"), b"p%d" % i)
    assert files.read_bytes("s3://features-io/features/1/part-00002.parquet") == b"p2"
    assert files.clear_folder("s3://features-io/features/1") == 3
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="features-io").get("Contents", [])]
    assert [k for k in keys if not k.endswith("/")] == ["other/x"]  # pyarrow may leave a folder marker
    with pytest.raises(FileNotFoundError):
        files.read_bytes("s3://features-io/features/1/part-00000.parquet")
