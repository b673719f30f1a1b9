"""The object store: where batches, features, datasets and models live.

One small interface with two faces: a local folder (the default, no cloud account) and
S3. Keys are '/'-separated, like S3 keys. Writes are atomic: the local face writes a
temporary file and renames it; the S3 face does one put. Listing takes `start_after`,
so callers that keep a cursor list only what is new. No Dagster imports.

S3 throttling (503 SlowDown) and server errors (500, 502, 503, 504) are retried by the
client with exponential backoff and jitter: botocore's "standard" retry mode, up to
S3_MAX_ATTEMPTS attempts per call, before a StoreError says what failed.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

S3_MAX_ATTEMPTS = 8  # botocore standard mode: backoff base 2^n s with full jitter, capped at 20 s


class StoreError(RuntimeError):
    """The store cannot be reached or used; the message names the store and the key."""


class ObjectNotFound(StoreError, KeyError):
    """The key does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ObjectStore(ABC):
    """Flat key/value store of bytes."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` at `key` atomically: readers see the old object or the whole new one."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read the object at `key`; ObjectNotFound if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """Keys under `prefix`, in byte order, strictly after `start_after` when given."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where a data engine (Spark, SageMaker) reads the key: a path or an s3:// URI."""

    def put_text(self, key: str, text: str) -> None:
        self.put_bytes(key, text.encode("utf-8"))

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode("utf-8")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _check_key(key: str) -> str:
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid store key {key!r}")
    return key


class LocalStore(ObjectStore):
    """A folder on this machine. Temporary files are dot-files, never listed."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.url}: no object {key!r}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        # Only the prefix's folder is read, names filtered by the rest of the prefix before any
        # key is built, and only matching sub-folders entered: a listing of staging/deals-
        # beside 100,000 other names costs one pass over the names, not one key per name.
        folder, _, name_prefix = prefix.rpartition("/")
        keys: list[str] = []
        self._collect(self.root / folder if folder else self.root, f"{folder}/" if folder else "", name_prefix,
                      start_after, keys)  # fmt: skip
        keys.sort()
        return iter(keys)

    def _collect(self, path: Path, key_prefix: str, name_prefix: str, start_after: str | None, out: list[str]) -> None:
        try:
            entries = os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or not name.startswith(name_prefix):
                    continue
                key = key_prefix + name
                if entry.is_dir(follow_symlinks=False):
                    self._collect(Path(entry.path), key + "/", "", start_after, out)
                elif (start_after is None or key > start_after) and entry.is_file():
                    out.append(key)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return str(self.path(key))


class S3Store(ObjectStore):
    """An S3 bucket, optionally under a prefix. boto3 honours AWS_ENDPOINT_URL (moto in tests)."""

    def __init__(self, bucket: str, prefix: str = "", region: str | None = None, client=None):
        import boto3  # imported here: the local face must not pay for boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        retries = Config(retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS})
        self._client = client or boto3.client("s3", region_name=region, config=retries)

    def _full(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _fail(self, action: str, key: str, error: Exception) -> StoreError:
        # botocore messages carry no credentials; keep only the service's own words.
        return StoreError(f"{self.url}: cannot {action} {key!r}: {error}")

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)
        except Exception as e:  # botocore raises many unrelated types
            raise self._fail("write", key, e) from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()
        except self._client.exceptions.NoSuchKey:
            raise ObjectNotFound(f"{self.url}: no object {key!r}") from None
        except Exception as e:
            raise self._fail("read", key, e) from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("check", key, e) from None

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        kwargs = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            kwargs["StartAfter"] = self.prefix + start_after
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", []):
                    yield item["Key"][len(self.prefix) :]
        except Exception as e:
            raise self._fail("list", prefix, e) from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as e:
            raise self._fail("delete", key, e) from None

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"


def open_store(url: str, region: str | None = None) -> ObjectStore:
    """`s3://bucket[/prefix]` gives an S3Store; anything else is a local folder."""
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise StoreError(f"store {url!r}: no bucket name")
        return S3Store(parsed.netloc, parsed.path, region=region)
    if "://" in url:
        raise StoreError(f"store {url!r}: only local folders and s3:// URLs are supported")
    return LocalStore(url)
