"""Faust hosting shared by the stream worker and the archiver.

Each engine (stream runner, archiver) consumes in batches with its own aiokafka consumer group;
Faust provides the worker around it: lifecycle and signals, a web server bound to 127.0.0.1 with
`/metrics`, logging, the `faust -A ... worker` CLI, and one small agent on a control topic
(Faust's consumer needs a topic; the agent takes operator commands such as a full republish).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Protocol

import faust
from mode import Service

from clickagg_platform.kafka_security import faust_credentials
from clickagg_platform.settings import Settings
from streaming import metrics
from streaming.config import StreamSettings


class Engine(Protocol):
    async def start(self) -> None: ...
    async def run(self) -> None: ...
    async def stop(self) -> None: ...
    async def command(self, cmd: dict) -> dict: ...


# The collector, not the work, was a quarter of the worker's time (and ~12% of the archiver's):
# each fetch keeps ~20,000 tracked ConsumerRecords alive while it is processed, so they survive
# young collections and keep triggering full ones, which walk all long-lived state (millions
# of dedup ids, a block's columns). The engines make no reference cycles on their hot paths,
# so collections are made rare (young: every 100,000 net allocations; full: every 100 middle
# ones) and the startup heap is frozen out of their scans; the stream runner also freezes the
# state it recovers on each assignment. Measured in docs/streaming.md.
GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()  # the startup heap (Faust, aiokafka, modules) is permanent
    gc.set_threshold(*GC_THRESHOLDS)


def make_app(
    app_id: str,
    web_port: int,
    settings: Settings,
    ss: StreamSettings,
    engine_factory: Callable[[], Engine],
) -> tuple[faust.App, dict]:
    state_dir = ss.state_path(settings)
    state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.bootstrap}",
        # TLS/SASL like every other client (the control agent's consumer, Faust's producer)
        broker_credentials=faust_credentials(settings.kafka_security),
        store="memory://",
        datadir=str(state_dir / f"faust-{app_id}"),
        web_bind=ss.web_host,
        web_host=ss.web_host,
        web_port=web_port,
        processing_guarantee="at_least_once",  # see docs/streaming.md: no Kafka transactions
        topic_disable_leader=True,
        # a SIGKILLed worker's membership must expire fast, or its restart waits to rejoin
        # Faust's own group (the control agent) only: a restarted worker is "Ready" once the
        # dead member's session expired, so keep it at the broker's minimum (6 s). No static
        # membership here: Faust's assignor asserts that the assignment it gets back names its
        # own web URL, which a static member's old assignment does not after a restart.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        autodiscover=False,
    )
    holder: dict = {}
    control = app.topic(
        f"{app_id}-{settings.clicks_topic}-control",
        partitions=1,
        internal=True,
        value_serializer="json",
    )

    @app.agent(control, name="handle_commands")
    async def handle_commands(commands):
        """Operator commands for the engine, e.g. {"cmd": "republish"}."""
        async for cmd in commands:
            engine = holder.get("engine")
            yield await engine.command(cmd) if engine else {"error": "engine not started"}

    class RunEngine(Service):
        async def on_start(self) -> None:
            logging.getLogger("clickagg").setLevel(logging.INFO)
            holder["engine"] = engine = engine_factory()
            tune_gc()
            await engine.start()
            self.add_future(self._run(engine))

        async def _run(self, engine: Engine) -> None:
            try:
                await engine.run()
            except Exception as exc:  # a crashed engine must crash the worker, not idle
                await self.crash(exc)

        async def on_stop(self) -> None:
            if "engine" in holder:
                await holder["engine"].stop()

    app.service(RunEngine)

    @app.page("/metrics")
    async def prometheus(web, request):
        body, content_type = metrics.render()
        return web.bytes(body, content_type=content_type)

    holder["agent"] = handle_commands
    return app, holder
