import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickagg_platform.tokens import TokenError, mint_token, verify_token

OLD = {"k1": b"old-secret"}
ROTATING = {"k2": b"new-secret", "k1": b"old-secret"}
NOW = 1_800_000_000


def _mint(keyring=ROTATING, kid="k2", **kw):
    args = dict(
        impression_id="imp-1",
        advertiser_id="adv-1",
        campaign_id="camp-1",
        ad_id="ad-1",
        landing_url="https://shop.example/landing?x=1",
        publisher_id="pub-1",
        ttl_s=3600,
        now=NOW,
    )
    args.update(kw)
    return mint_token(keyring, kid, **args)


def test_round_trip_carries_every_claim():
    c = verify_token(_mint(), ROTATING, now=NOW + 10)
    assert (c.key_id, c.impression_id, c.advertiser_id, c.campaign_id, c.ad_id, c.publisher_id) == (
        "k2",
        "imp-1",
        "adv-1",
        "camp-1",
        "ad-1",
        "pub-1",
    )
    assert c.landing_url == "https://shop.example/landing?x=1"
    assert (c.issued_at, c.expires_at) == (NOW, NOW + 3600)


def test_signature_is_hmac_sha256_over_the_payload():
    token = _mint()
    payload_b64, sig_b64 = token.split(".")
    payload = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
    sig = base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))
    assert sig == hmac.new(b"new-secret", payload, hashlib.sha256).digest()
    assert json.loads(payload)[1] == "k2"


def test_rotation_old_key_still_verifies_until_removed():
    old_token = _mint(OLD, "k1")
    assert verify_token(old_token, ROTATING, now=NOW).key_id == "k1"
    with pytest.raises(TokenError) as err:
        verify_token(old_token, {"k2": b"new-secret"}, now=NOW)
    assert err.value.reason == "unknown_key"


def test_expired_and_future_tokens_are_rejected():
    token = _mint(ttl_s=60)
    assert verify_token(token, ROTATING, now=NOW + 60)
    with pytest.raises(TokenError) as err:
        verify_token(token, ROTATING, now=NOW + 61)
    assert err.value.reason == "expired"
    with pytest.raises(TokenError) as err:
        verify_token(token, ROTATING, now=NOW - 3600)
    assert err.value.reason == "not_yet_valid"


def _tamper_payload(token: str, index: int, value) -> str:
    payload_b64, sig_b64 = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    fields[index] = value
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + sig_b64


@pytest.mark.parametrize(
    "index,value",
    [
        (2, "imp-2"),
        (3, "adv-2"),
        (4, "camp-2"),
        (5, "ad-2"),
        (7, "https://evil.example/"),
        (9, NOW + 10**6),
        (1, "k1"),
    ],
)
def test_tampering_any_field_breaks_the_signature(index, value):
    with pytest.raises(TokenError) as err:
        verify_token(_tamper_payload(_mint(), index, value), ROTATING, now=NOW)
    assert err.value.reason in {"bad_signature", "unknown_key"}


def test_signature_from_another_key_is_rejected():
    forged = _mint({"k2": b"guessed"}, "k2")
    with pytest.raises(TokenError) as err:
        verify_token(forged, ROTATING, now=NOW)
    assert err.value.reason == "bad_signature"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "//evil.example/",
        "/relative",
        "ftp://x.example/",
        "https://x.example/\r\nSet-Cookie: a=b",
        "https://x.example/ü",
        "https:///nohost",
        "",
    ],
)
def test_mint_refuses_unsafe_landing_urls(url):
    with pytest.raises(ValueError):
        _mint(landing_url=url)


@pytest.mark.parametrize("field", ["impression_id", "advertiser_id", "campaign_id", "ad_id"])
def test_mint_refuses_bad_ids(field):
    with pytest.raises(ValueError, match=field):
        _mint(**{field: "has space"})


def test_mint_refuses_unknown_key():
    with pytest.raises(ValueError, match="unknown signing key"):
        _mint(kid="nope")


@given(st.text(max_size=300))
def test_arbitrary_text_never_verifies(text):
    with pytest.raises(TokenError):
        verify_token(text, ROTATING, now=NOW)


@given(st.binary(min_size=1, max_size=200))
def test_arbitrary_payload_with_random_signature_never_verifies(raw):
    b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        verify_token(f"{b64}.{b64}", ROTATING, now=NOW)


def test_payload_with_invalid_utf8_is_malformed_not_a_crash():
    # found by the endpoint fuzz test: a flipped base64 character made the payload invalid UTF-8
    bad = base64.urlsafe_b64encode(b'[1,"\xa2"]').rstrip(b"=").decode()
    with pytest.raises(TokenError) as err:
        verify_token(f"{bad}.{bad}", ROTATING, now=NOW)
    assert err.value.reason == "malformed"


def test_non_canonical_base64_spelling_is_rejected():
    token = _mint()
    payload_b64, sig_b64 = token.split(".")
    # the last base64 character of a 32-byte signature carries 2 unused bits: flip one
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig_b64[-1])
    respelled = sig_b64[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(respelled + "=") == base64.urlsafe_b64decode(sig_b64 + "=")
    with pytest.raises(TokenError):
        verify_token(f"{payload_b64}.{respelled}", ROTATING, now=NOW)


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _stdlib_canonical(text: str) -> bytes | None:
    """The reference: bytes iff the stdlib decodes `text` and re-encodes it to the same text."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text else None


@given(st.text(alphabet=_B64URL + "+/=.é", max_size=60))
def test_base64url_decoding_accepts_exactly_the_canonical_spellings(text):
    from clickagg_platform.tokens import _b64d, _canonical

    expected = _stdlib_canonical(text)
    try:
        got = _b64d(text) if _canonical(text) else None
    except ValueError:
        got = None
    assert got == expected
