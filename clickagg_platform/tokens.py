"""Signed click URLs: mint on the ad-serving side, verify in the capture service.

Token = base64url(payload) "." base64url(HMAC-SHA256(key[kid], payload)), where payload is a
compact JSON array [version, kid, impression, advertiser, campaign, ad, publisher, landing,
issued_at_s, expires_at_s]. The key id is inside the signed payload, so it cannot be swapped;
several keys verify at once (rotation: sign with the new key, keep the old one until its links
expire). Verification is constant-time and reveals nothing beyond "invalid" or "expired".
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import time

import msgspec

TOKEN_VERSION = 1
MAX_TOKEN_LEN = 2048
SAFE_URL_CACHE = 10_000  # landing URLs remembered as validated
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# scheme, a host[:port] without userinfo, then an optional path/query/fragment; printable ASCII
# only (no spaces, no control characters: nothing that could split or bend a Location header)
_URL_RE = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][\x21-\x7e]*)?")


class TokenError(ValueError):
    """A token that must not be honoured. `reason` is for metrics/logs, never for the client."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ClickClaims(msgspec.Struct, frozen=True, array_like=True):
    """The signed payload itself: decoded straight from the token's JSON array."""

    version: int
    key_id: str
    impression_id: str
    advertiser_id: str
    campaign_id: str
    ad_id: str
    publisher_id: str
    landing_url: str
    issued_at: int  # epoch seconds
    expires_at: int  # epoch seconds


_payload_decoder = msgspec.json.Decoder(ClickClaims)
_encoder = msgspec.json.Encoder()


# base64url without padding, straight on binascii (the base64 module's wrappers cost ~1 us of
# every click); decoding is strict: a character outside the alphabet is an error, not skipped
# ("+", "/" and "=" become "!", which strict decoding refuses: they are not base64url)
_TO_STD = bytes.maketrans(b"-_+/=", b"+/!!!")
_TO_URL = bytes.maketrans(b"+/", b"-_")


def _b64e(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URL).rstrip(b"=").decode("ascii")


# The one spelling of unpadded base64url: a length that is not 1 mod 4, and a last character
# whose bits beyond the data are zero (2 or 4 of its 6 bits when the length is 2 or 3 mod 4).
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CANONICAL_LAST = {2: frozenset(_ALPHABET[::16]), 3: frozenset(_ALPHABET[::4])}


def _canonical(text: str) -> bool:
    rest = len(text) % 4
    return rest == 0 or (rest != 1 and text[-1] in _CANONICAL_LAST[rest])


def _b64d(text: str) -> bytes:
    # non-ASCII raises UnicodeEncodeError (a ValueError)
    padding = b"=" * (-len(text) % 4)
    return binascii.a2b_base64(text.encode("ascii").translate(_TO_STD) + padding, strict_mode=True)


def validate_landing_url(url: str) -> str:
    """Only absolute http(s) URLs without control characters may become a redirect target."""
    if not isinstance(url, str) or len(url) > 1024:
        raise ValueError("landing URL must be at most 1024 characters")
    if not _URL_RE.fullmatch(url):
        raise ValueError(
            "landing URL must be an absolute http(s) URL of printable ASCII "
            "(percent-encode the rest)"
        )
    return url


def validate_id(name: str, value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError(f"{name} must be 1-64 characters of [A-Za-z0-9_.:-], got {value!r}")
    return value


def mint_token(
    keyring: dict[str, bytes],
    key_id: str,
    *,
    impression_id: str,
    advertiser_id: str,
    campaign_id: str,
    ad_id: str,
    landing_url: str,
    publisher_id: str = "direct",
    ttl_s: int = 7 * 24 * 3600,
    now: float | None = None,
) -> str:
    """Mint a click token. Raises ValueError with a clear message on bad input."""
    if key_id not in keyring:
        raise ValueError(f"unknown signing key id {key_id!r}")
    for name, value in (
        ("impression_id", impression_id),
        ("advertiser_id", advertiser_id),
        ("campaign_id", campaign_id),
        ("ad_id", ad_id),
        ("publisher_id", publisher_id),
    ):
        validate_id(name, value)
    validate_landing_url(landing_url)
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    issued = int(now if now is not None else time.time())
    payload = _encoder.encode(
        [
            TOKEN_VERSION,
            key_id,
            impression_id,
            advertiser_id,
            campaign_id,
            ad_id,
            publisher_id,
            landing_url,
            issued,
            issued + ttl_s,
        ]
    )
    sig = hmac.digest(keyring[key_id], payload, "sha256")
    return f"{_b64e(payload)}.{_b64e(sig)}"


class TokenVerifier:
    """Verifies tokens against a keyring; HMAC key schedules are computed once, not per click."""

    def __init__(self, keyring: dict[str, bytes], skew_s: int = 300):
        self._macs = {kid: hmac.new(key, digestmod=hashlib.sha256) for kid, key in keyring.items()}
        self.skew_s = skew_s
        self._safe_urls: set[str] = set()

    def verify(self, token: str, now: float | None = None) -> ClickClaims:
        """Verify signature, key and expiry; return the claims or raise TokenError."""
        payload_b64, dot, sig_b64 = token.partition(".")
        if not dot or len(token) > MAX_TOKEN_LEN or "." in sig_b64:
            raise TokenError("malformed")
        if not (_canonical(payload_b64) and _canonical(sig_b64)):  # one spelling per token
            raise TokenError("malformed")
        try:
            payload = _b64d(payload_b64)
            sig = _b64d(sig_b64)
        except (binascii.Error, ValueError):
            raise TokenError("malformed") from None
        try:
            claims = _payload_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):  # incl. bad UTF-8
            raise TokenError("malformed") from None
        base = self._macs.get(claims.key_id)
        if claims.version != TOKEN_VERSION or base is None:
            raise TokenError("unknown_key")
        mac = base.copy()
        mac.update(payload)
        if not hmac.compare_digest(mac.digest(), sig):
            raise TokenError("bad_signature")
        t = time.time() if now is None else now
        if t > claims.expires_at:
            raise TokenError("expired")
        if claims.issued_at > t + self.skew_s:
            raise TokenError("not_yet_valid")
        # defense in depth: a signed but unsafe target is still never redirected to. Landing
        # URLs repeat across clicks (one per ad), so the ones that passed are remembered.
        if claims.landing_url not in self._safe_urls:
            try:
                validate_landing_url(claims.landing_url)
            except ValueError:
                raise TokenError("bad_landing") from None
            if len(self._safe_urls) >= SAFE_URL_CACHE:
                self._safe_urls.clear()
            self._safe_urls.add(claims.landing_url)
        return claims


def verify_token(
    token: str, keyring: dict[str, bytes], *, now: float | None = None, skew_s: int = 300
) -> ClickClaims:
    """One-off verification (tests, tools); services keep a `TokenVerifier`."""
    return TokenVerifier(keyring, skew_s).verify(token, now)


def click_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/c/{token}"
