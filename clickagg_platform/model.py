"""The `ClickEvent` contract on the `clicks` topic, its fast codec and its DataFrame schema.

Serialization is msgspec JSON: one compact object per Kafka value, decoded into a typed struct.
The pandera schema validates DataFrames of clicks (the lake, the batch path).
"""

from __future__ import annotations

import hashlib

import msgspec

SCHEMA_VERSION = 1


class ClickEvent(msgspec.Struct, frozen=True, omit_defaults=False):
    """One captured click. `event_id` is stable per impression, so retries collapse to one id."""

    event_id: str
    impression_id: str
    advertiser_id: str
    campaign_id: str
    ad_id: str
    publisher_id: str
    event_time: int  # UTC epoch ms of the click
    received_at: int  # UTC epoch ms when the capture service accepted it
    ip_hash: str
    user_agent: str
    user_key: str
    token_key_id: str
    schema_version: int = SCHEMA_VERSION


CLICK_FIELDS: tuple[str, ...] = ClickEvent.__struct_fields__

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ClickEvent)


def encode_click(event: ClickEvent) -> bytes:
    return _encoder.encode(event)


def decode_click(data: bytes) -> ClickEvent:
    """Decode a Kafka value; raises `msgspec.ValidationError`/`DecodeError` on a bad record."""
    return _decoder.decode(data)


def event_id_for(impression_id: str) -> str:
    """The click's id, derived only from the impression: a retry or double-click gets the same."""
    return hashlib.sha256(b"click:" + impression_id.encode()).hexdigest()[:32]


def click_schema():
    """pandera schema of a DataFrame of clicks (built lazily: pandera import is slow)."""
    import pandera.pandas as pa

    ident = pa.Check.str_length(min_value=1, max_value=64)
    return pa.DataFrameSchema(
        {
            "event_id": pa.Column(str, pa.Check.str_matches(r"^[0-9a-f]{32}$")),
            "impression_id": pa.Column(str, ident),
            "advertiser_id": pa.Column(str, ident),
            "campaign_id": pa.Column(str, ident),
            "ad_id": pa.Column(str, ident),
            "publisher_id": pa.Column(str, ident),
            "event_time": pa.Column("int64", pa.Check.gt(0)),
            "received_at": pa.Column("int64", pa.Check.gt(0)),
            "ip_hash": pa.Column(str),
            "user_agent": pa.Column(str),
            "user_key": pa.Column(str),
            "token_key_id": pa.Column(str, ident),
            "schema_version": pa.Column("int64", pa.Check.isin([SCHEMA_VERSION])),
        },
        checks=[
            pa.Check(
                lambda df: df["event_time"] <= df["received_at"] + 60_000,
                error="event_time is more than a minute after received_at",
            )
        ],
        strict=False,
        coerce=False,
        name="clicks",
    )
