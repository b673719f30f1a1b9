"""Files by URI for the feature job's tasks: local paths, `file:` URIs and `s3://` URIs alike.

pyarrow's filesystems do the work (pyarrow.fs: the local disk, and S3 with the standard AWS
credential chain; `AWS_ENDPOINT_URL` points it at another S3, such as moto in the tests).
The tasks that compute a batch's features read its two files and write its part file here,
so a Spark task on a Glue worker and the single-process job use the same calls.
No Spark, Dagster or boto3 imports.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs


def local_path(uri: str) -> str | None:
    """A local file's absolute path, whichever way it is spelt (a path, file:/x, file:///x); else None."""
    if uri.startswith("file:"):
        return posixpath.normpath("/" + unquote(uri[len("file:") :]).lstrip("/"))
    if "://" in uri:
        return None
    return os.path.abspath(uri)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a URI: local files in any spelling, or anything pyarrow knows (s3://)."""
    path = local_path(uri)
    if path is not None:
        return pafs.LocalFileSystem(), path
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
