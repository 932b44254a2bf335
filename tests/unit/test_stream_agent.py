"""The Faust control agent, with `agent.test_context()` (memory transport, no broker): a
"republish" command reaches the real engine and marks every open window for re-sending."""

from __future__ import annotations

from clickagg_platform.settings import Settings
from streaming.config import StreamSettings
from streaming.runner import StreamRunner
from tests.unit.stream_sim import make_events


async def test_republish_command_marks_open_windows_dirty(tmp_path):
    from aiokafka import TopicPartition

    from streaming import app as stream_app

    runner = StreamRunner(Settings(), StreamSettings(state_dir=tmp_path))
    tp = TopicPartition(runner.topics.source, 0)
    proc = runner.procs[tp] = runner._open_counter(tp)
    for off, ev in enumerate(make_events(seed=2, n=300, bursts=0)):
        proc.process(ev, off)
    rows = proc.rows()
    proc.mark_published(rows)
    assert rows and proc.rows() == []

    stream_app.engine["engine"] = runner
    try:
        async with stream_app.handle_commands.test_context() as agent:
            event = await agent.put({"cmd": "republish"})
            assert agent.results[event.message.offset] == {"republished": len(proc.windows.counts)}
            event = await agent.put({"cmd": "nope"})
            assert "error" in agent.results[event.message.offset]
    finally:
        stream_app.engine.pop("engine", None)
    assert sorted(proc.rows()) == sorted(rows)
