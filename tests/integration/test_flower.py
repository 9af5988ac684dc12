"""Flower as the Procfile starts it: loopback only, basic auth, seeing the workers."""

import os
import signal
import subprocess
import sys

import requests

from support.helpers import wait_for
from tasks.embedded import free_port


def test_flower_requires_basic_auth(worker_env, start_worker, tmp_path):
    start_worker(name="flowerseen")
    port = free_port()
    log = open(tmp_path / "flower.log", "wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks.app", "flower", "--address=127.0.0.1", f"--port={port}"],
        # As in the Procfile: Flower reads FLOWER_BASIC_AUTH itself, so the password stays out of `ps`.
        env=dict(worker_env, FLOWER_BASIC_AUTH="ops:s3cret-pass"), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def answering():
            # A Response is falsy for 4xx, so return its status code.
            try:
                return requests.get(f"{url}/workers", timeout=2).status_code
            except requests.ConnectionError:
                return None

        assert wait_for(answering, timeout=30, message="flower listening") == 401

        def workers():
            response = requests.get(f"{url}/api/workers", auth=("ops", "s3cret-pass"), params={"refresh": "true"}, timeout=10)
            return response if response.status_code == 200 and "flowerseen" in response.text else None

        assert wait_for(workers, timeout=30, interval=1, message="worker listed by flower")
        wrong = requests.get(f"{url}/workers", auth=("ops", "wrong"), timeout=5)
        assert wrong.status_code == 401
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(timeout=10)
