"""The lake (raw archive + batch outputs) as a Dagster resource.

`file://` for local runs, `s3://` for object storage. Parquet I/O goes through
`clickagg_platform.lake` (pyarrow filesystems, one code path for both schemes); the S3 side of
the resource is dagster-aws's `S3Resource` (boto3): it downloads raw files for Spark (Spark has
no S3 connector here: hadoop-aws jars are not installed, and the driver runs in-process anyway),
and lists/heads the batch outputs written, whose sizes/ETags go into the materialisation.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from clickagg_platform import lake
from clickagg_platform.settings import Settings


class LakeResource(dg.ConfigurableResource):
    """Root URL of the lake and, for s3://, the S3 endpoint and client."""

    url: str = Field(description="Lake root: file:///path or s3://bucket/prefix")
    s3_endpoint_url: str = Field("", description="S3-compatible endpoint override (empty = AWS)")
    topic: str = Field("clicks", description="Kafka topic whose archive is read")
    s3: S3Resource = Field(default_factory=S3Resource, description="dagster-aws S3 client")

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def settings(self, base: Settings | None = None) -> Settings:
        base = base or Settings()
        return base.model_copy(
            update={"lake_url": self.url, "s3_endpoint_url": self.s3_endpoint_url or None}
        )

    def _bucket_key(self, url: str) -> tuple[str, str]:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        return bucket, key

    @contextmanager
    def local_copies(self, files: list[lake.RawFile]):
        """Local paths of the raw files: file:// paths as they are; s3:// objects downloaded
        through the dagster-aws client into a temp dir (removed afterwards)."""
        if not self.is_s3:
            yield [f.url.removeprefix("file://") for f in files]
            return
        client = self.s3.get_client()
        with tempfile.TemporaryDirectory(prefix="clickagg-raw-") as tmp:
            paths = []
            for f in files:
                bucket, key = self._bucket_key(f.url)
                dest = Path(tmp) / f"p{f.partition}-{f.first:012d}-{f.last:012d}.parquet"
                client.download_file(bucket, key, str(dest))
                paths.append(str(dest))
            yield paths

    @contextmanager
    def local_paths(self, urls: list[str]):
        """Local paths of any lake objects (the first-seen index files): as `local_copies`."""
        if not self.is_s3:
            yield [u.removeprefix("file://") for u in urls]
            return
        client = self.s3.get_client()
        with tempfile.TemporaryDirectory(prefix="clickagg-lake-") as tmp:
            paths = []
            for i, url in enumerate(urls):
                bucket, key = self._bucket_key(url)
                dest = Path(tmp) / f"{i:06d}.parquet"
                client.download_file(bucket, key, str(dest))
                paths.append(str(dest))
            yield paths

    def describe(self, url: str) -> dict:
        """Size (and ETag on S3) of a written object, for the materialisation metadata."""
        if self.is_s3:
            bucket, key = self._bucket_key(url)
            head = self.s3.get_client().head_object(Bucket=bucket, Key=key)
            return {"bytes": int(head["ContentLength"]), "etag": head["ETag"].strip('"')}
        path = url.removeprefix("file://")
        return {"bytes": os.path.getsize(path)} if os.path.exists(path) else {}

    def list_keys(self, prefix_url: str) -> list[str]:
        """URLs of the objects under a prefix (S3 via the dagster-aws client)."""
        if self.is_s3:
            bucket, key = self._bucket_key(prefix_url)
            out = []
            paginator = self.s3.get_client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=key):
                out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
            return out
        base = Path(prefix_url.removeprefix("file://"))
        if not base.exists():
            return []
        return sorted(f"file://{p}" for p in base.rglob("*") if p.is_file())
