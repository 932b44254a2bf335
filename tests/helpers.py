"""Test helpers that run the real services as processes (so faults can be injected)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
from pydantic import SecretStr

from clickagg_platform.settings import Settings
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_env(settings: Settings, **extra) -> dict[str, str]:
    """The environment that makes a child process see exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            env[f"CLICKAGG_{name.upper()}"] = str(value)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    def answers() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout, f"{url} to answer 200", interval=0.05)


@contextmanager
def capture_server(settings: Settings, log_path: Path, **extra_env):
    """Run `clickagg capture` as a real uvicorn process; yields its base URL."""
    port = free_port()
    env = settings_env(settings, CLICKAGG_CAPTURE_PORT=port, **extra_env)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clickagg_platform.cli", "capture", "--log-level", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc=proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 60.0):
    """Read every record from the start until `expected` were seen and the topic is drained.

    Returns a list of (key, value, partition, offset). Fails if fewer than `expected` arrive
    before the deadline; reads on a little after reaching `expected` to catch extra records.
    """
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    md = c.list_topics(topic, timeout=10)
    parts = [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
    c.assign(parts)
    out, eof = [], set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    eof.add(msg.partition())
                    if len(out) >= expected and len(eof) == len(parts):
                        return out
                continue
            eof.discard(msg.partition())
            out.append((msg.key(), msg.value(), msg.partition(), msg.offset()))
        raise AssertionError(f"read {len(out)} records from {topic}, expected {expected}")
    finally:
        c.close()


@contextmanager
def private_kafka(tmp_path: Path, ports: tuple[int, int] | None = None, **extra_env: str):
    """A broker of this test's own (own dir and ports), so stopping it disturbs no one else.
    `ports` = (client, controller); `extra_env` e.g. CLICKAGG_KAFKA_EXTRA_CONF (infra/kafka.sh)."""
    port, cport = ports or (free_port(), free_port())
    env = dict(
        os.environ,
        CLICKAGG_LOCAL_DIR=str(tmp_path / "local"),
        CLICKAGG_KAFKA_PORT=str(port),
        CLICKAGG_KAFKA_CONTROLLER_PORT=str(cport),
        CLICKAGG_KAFKA_HEAP="256m",
        **extra_env,
    )
    env.pop("CLICKAGG_KAFKA_BOOTSTRAP", None)
    # share the fetched jars instead of downloading them again
    libs = tmp_path / "local" / "kafka" / "libs"
    libs.parent.mkdir(parents=True, exist_ok=True)
    shared = Path(os.environ.get("CLICKAGG_LOCAL_DIR", ROOT / ".local")) / "kafka" / "libs"
    if shared.exists():
        libs.symlink_to(shared)
    script = str(ROOT / "infra" / "kafka.sh")

    def run(cmd: str) -> None:
        subprocess.run([script, cmd], env=env, check=True, timeout=180)

    run("start")
    try:
        yield f"127.0.0.1:{port}", run
    finally:
        run("stop")
