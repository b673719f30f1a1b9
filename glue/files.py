"""Files by URI for the feature job's tasks: local paths, `file:` URIs and `s3://` URIs alike.

pyarrow's filesystems do the work (pyarrow.fs: the local disk, and S3 with the standard AWS
credential chain; `AWS_ENDPOINT_URL` points it at another S3, such as moto in the tests).
The tasks that compute a batch's features read its two files and write its part file here,
so a Spark task on a Glue worker and the single-process job use the same calls.
S3 throttling (SlowDown) and 5xx answers are retried with exponential backoff by the AWS
SDK's standard retry strategy, up to S3_MAX_ATTEMPTS attempts per request.
No Spark, Dagster or boto3 imports.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from functools import lru_cache
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs


def local_path(uri: str) -> str | None:
    """A local file's absolute path, whichever way it is spelt (a path, file:/x, file:///x); else None."""
    if uri.startswith("file:"):
        return posixpath.normpath("/" + unquote(uri[len("file:") :]).lstrip("/"))
    if "://" in uri:
        return None
    return os.path.abspath(uri)


S3_MAX_ATTEMPTS = 8


@lru_cache(maxsize=8)
def s3_filesystem(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    """pyarrow's S3 with the standard retry strategy (throttling and 5xx, exponential backoff)."""
    options: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS)}
    if endpoint:
        parsed = urlparse(endpoint)
        options.update(endpoint_override=parsed.netloc or endpoint, scheme=parsed.scheme or "https")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a URI: local files in any spelling, s3:// through s3_filesystem,
    anything else pyarrow knows."""
    path = local_path(uri)
    if path is not None:
        return pafs.LocalFileSystem(), path
    if uri.startswith("s3://"):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return s3_filesystem(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"), region), uri[
            5:
        ]
    return pafs.FileSystem.from_uri(uri)


def join(uri: str, name: str) -> str:
    """`name` inside the folder `uri` (same spelling as `uri`)."""
    return uri.rstrip("/") + "/" + name


def read_bytes(uri: str) -> bytes:
    """The whole file at `uri`."""
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes | pa.Buffer) -> None:
    """Write a whole file so that no reader ever sees part of it.

    Local: a temporary name in the same folder, then a rename. S3: one upload, which
    S3 makes visible only when it completes. Writing the same bytes twice (a retried
    task) leaves the same file.
    """
    fs, path = resolve(uri)
    if fs.type_name == "local":
        folder = posixpath.dirname(path)
        fs.create_dir(folder, recursive=True)
        temporary = posixpath.join(folder, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with fs.open_output_stream(temporary) as f:
                f.write(data)
            fs.move(temporary, path)
        except BaseException:
            if fs.get_file_info(temporary).type != pafs.FileType.NotFound:
                fs.delete_file(temporary)
            raise
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


def clear_folder(uri: str) -> int:
    """Delete every file under the folder `uri` (nothing else); returns how many."""
    fs, path = resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    files = [i.path for i in infos if i.type == pafs.FileType.File]
    # On S3, pyarrow leaves an empty `folder/` marker object after deleting the last file
    # of a folder; readers of the output list `*.parquet` and `_SUCCESS` only.
    for file in files:
        fs.delete_file(file)
    return len(files)
