"""Pure, deterministic stream logic: no Kafka, no Faust, no wall clock.

Every decision here is a function of the partition's records in offset order, which is what
makes replays safe: replaying the same offsets from the same state yields the same counts and
the same versions (see docs/streaming.md, "Why determinism is the whole trick").
"""
