import boto3
import pytest

from ml_demo_dagster.core.store import LocalStore, ObjectNotFound, StoreError, open_store


def exercise(store):
    store.put_bytes("staging/price-1700000000001.csv", b"p1")
    store.put_bytes("staging/deals-1700000000001.csv", b"d1")
    store.put_bytes("staging/deals-1700000000002.csv", b"d2")
    store.put_text("models/champion.json", "{}")
    assert store.get_bytes("staging/deals-1700000000002.csv") == b"d2"
    assert store.exists("models/champion.json") and not store.exists("models/nope.json")
    assert list(store.list_keys("staging/")) == [
        "staging/deals-1700000000001.csv",
        "staging/deals-1700000000002.csv",
        "staging/price-1700000000001.csv",
    ]
    assert list(store.list_keys("staging/deals-", start_after="staging/deals-1700000000001.csv")) == [
        "staging/deals-1700000000002.csv"
    ]
    store.put_bytes("staging/deals-1700000000002.csv", b"d2'")  # overwrite is whole
    assert store.get_bytes("staging/deals-1700000000002.csv") == b"d2'"
    store.delete("staging/deals-1700000000002.csv")
    with pytest.raises(ObjectNotFound, match="deals-1700000000002"):
        store.get_bytes("staging/deals-1700000000002.csv")


def test_local_store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    assert isinstance(store, LocalStore)
    exercise(store)
    # Atomic writes leave no temporary files behind, and temporary files are never listed.
    (tmp_path / "store" / "staging" / ".deals-x.tmp").write_bytes(b"partial")
    assert all(not k.split("/")[-1].startswith(".") for k in store.list_keys(""))


def test_local_store_rejects_escaping_keys(tmp_path):
    store = LocalStore(tmp_path)
    for key in ("../x", "/etc/passwd", "a//b", ""):
        with pytest.raises(StoreError):
            store.put_bytes(key, b"")


def test_s3_store_against_moto(s3_env):
    boto3.client("s3", region_name="eu-west-2").create_bucket(
        Bucket="ml-demo-test", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
    )
    store = open_store("s3://ml-demo-test/team-a", region="eu-west-2")
    exercise(store)
    assert store.uri("features/1/x.parquet") == "s3://ml-demo-test/team-a/features/1/x.parquet"
    # The prefix isolates: nothing is listed from outside it.
    open_store("s3://ml-demo-test", region="eu-west-2").put_bytes("staging/deals-1700000000009.csv", b"x")
    assert "staging/deals-1700000000009.csv" not in list(store.list_keys("staging/"))


def test_s3_store_missing_bucket_is_a_clear_error(s3_env):
    store = open_store("s3://no-such-bucket", region="eu-west-2")
    with pytest.raises(StoreError, match="s3://no-such-bucket"):
        store.put_bytes("a", b"b")
