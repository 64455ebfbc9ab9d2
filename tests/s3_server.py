"""Pytest fixtures: one moto S3 server on loopback per session, one fresh bucket per test.

Load from conftest.py with ``pytest_plugins = ["tests.s3_server"]`` (or import the fixtures).
Everything talks plain HTTP to 127.0.0.1 with dummy credentials; nothing reaches AWS.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on the test server, with a sync client for setting up objects."""

    endpoint_url: str
    bucket: str
    client: Any  # boto3 S3 client (sync), for test setup only

    @property
    def url(self) -> str:
        """``s3://bucket``."""
        return f"s3://{self.bucket}"

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` as object ``key``."""
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def s3_client(endpoint_url: str) -> Any:
    """A sync boto3 S3 client for the test server (explicit dummy credentials, no retries)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto server (all services) listening on 127.0.0.1, for the whole session."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket_factory(moto_endpoint: str) -> Iterator[Callable[[], S3Bucket]]:
    """Creates uniquely named buckets on demand; empties and deletes them after the test."""
    client = s3_client(moto_endpoint)
    created: list[str] = []

    def create() -> S3Bucket:
        name = f"kmdb-test-{uuid.uuid4().hex[:16]}"
        client.create_bucket(Bucket=name)
        created.append(name)
        return S3Bucket(endpoint_url=moto_endpoint, bucket=name, client=client)

    yield create
    for name in created:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", ()):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
    client.close()


@pytest.fixture
def s3_bucket(s3_bucket_factory: Callable[[], S3Bucket]) -> S3Bucket:
    """A fresh empty bucket on the test server, deleted after the test."""
    return s3_bucket_factory()
