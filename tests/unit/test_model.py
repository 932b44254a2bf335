import hashlib

import msgspec
import pandas as pd
import pandera.pandas as pa
import pytest

from clickagg_platform.model import (
    ClickEvent,
    click_schema,
    decode_click,
    encode_click,
    event_id_for,
)


def _event(**kw) -> ClickEvent:
    base = dict(
        event_id=event_id_for("imp-1"),
        impression_id="imp-1",
        advertiser_id="adv",
        campaign_id="camp",
        ad_id="ad",
        publisher_id="pub",
        event_time=1_800_000_000_000,
        received_at=1_800_000_000_500,
        ip_hash="ab",
        user_agent="UA",
        user_key="uk",
        token_key_id="k1",
    )
    base.update(kw)
    return ClickEvent(**base)


def test_event_id_is_stable_per_impression_and_independent_of_everything_else():
    assert event_id_for("imp-1") == hashlib.sha256(b"click:imp-1").hexdigest()[:32]
    assert event_id_for("imp-1") == event_id_for("imp-1") != event_id_for("imp-2")


def test_codec_round_trip_and_schema_version():
    e = _event()
    raw = encode_click(e)
    assert decode_click(raw) == e
    assert msgspec.json.decode(raw)["schema_version"] == 1


def test_decode_rejects_bad_records():
    with pytest.raises(msgspec.ValidationError):
        decode_click(b'{"event_id": 1}')
    with pytest.raises(msgspec.DecodeError):
        decode_click(b"not json")


def test_pandera_schema_accepts_clicks_and_rejects_bad_rows():
    good = pd.DataFrame(
        [
            msgspec.structs.asdict(_event()),
            msgspec.structs.asdict(_event(event_id=event_id_for("imp-2"), impression_id="imp-2")),
        ]
    )
    click_schema().validate(good)
    bad = good.copy()
    bad.loc[0, "event_id"] = "not-hex"
    with pytest.raises(pa.errors.SchemaError):
        click_schema().validate(bad)
    future = good.copy()
    future.loc[1, "event_time"] = future.loc[1, "received_at"] + 3_600_000
    with pytest.raises(pa.errors.SchemaError):
        click_schema().validate(future)
