"""An S3 store for the tests: moto's server on loopback with request signing enforced (a wrong secret gets 403),
one user whose keys the tests hand to Loupe, and buckets filled with boto3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from helpers import free_port
from servers import kill_group, wait_up

REGION = "us-east-1"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@dataclass
class S3Store:
    endpoint: str
    access_key_id: str
    secret_access_key: str

    def client(self):  # noqa: ANN201 - a boto3 S3 client with the user's keys
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def credentials(self, secret: str | None = None) -> str:
        """The lines `loupe sources credentials` reads."""
        return (f"access_key_id={self.access_key_id}\nsecret_access_key={secret or self.secret_access_key}\n"
                f"endpoint={self.endpoint}\nregion={REGION}\n")


@contextmanager
def s3_store() -> Iterator[S3Store]:
    import boto3

    port = free_port()
    # Requests are unsigned-and-accepted only until the user and its policy exist (3 calls); every later one
    # must carry a valid signature of a known key.
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "MOTO_ALLOW_NONEXISTENT_REGION": "false"}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_up(endpoint, process, 60, path="/moto-api/")
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="loupe")
        key = iam.create_access_key(UserName="loupe")["AccessKey"]
        iam.put_user_policy(UserName="loupe", PolicyName="read-write", PolicyDocument=json.dumps(ALLOW_ALL))
        yield S3Store(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        kill_group(process)
