"""Property tests of the real capture endpoint: whatever arrives, never a 5xx, never an event for
an invalid token, never a redirect to a URL that is not in a valid token."""

from __future__ import annotations

import socket
import string
import uuid

import msgspec
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from clickagg_platform import kafka_admin
from clickagg_platform.settings import Settings
from clickagg_platform.tokens import mint_token
from tests.helpers import capture_server, read_topic

pytestmark = pytest.mark.integration

LANDINGS = [f"https://adv{i}.example/landing?x={i}" for i in range(5)]
HYP = hsettings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    s = Settings(
        clicks_topic=f"clicks_fuzz_{uuid.uuid4().hex[:8]}",
        spool_dir=tmp / "spool",
        signing_keys="k2:fuzz-two,k1:fuzz-one",
    )
    kafka_admin.wait_for_broker(s)
    kafka_admin.ensure_topic(s)
    tokens = [
        mint_token(
            s.keyring(),
            "k2",
            impression_id=f"imp{i}",
            advertiser_id="a",
            campaign_id="c",
            ad_id="d",
            landing_url=LANDINGS[i],
        )
        for i in range(5)
    ]
    state = {"valid_sent": 0}
    with capture_server(s, tmp / "capture.log") as (base, _):
        port = int(base.rsplit(":", 1)[1])
        yield s, port, tokens, state
    # after all fuzzing: exactly the valid requests produced events, all from valid tokens
    records = read_topic(s.bootstrap, s.clicks_topic, expected=state["valid_sent"], timeout=60)
    assert len(records) == state["valid_sent"]
    assert {msgspec.json.decode(v)["impression_id"] for _, v, _, _ in records} <= {
        f"imp{i}" for i in range(5)
    }
    kafka_admin.delete_topic(s, s.clicks_topic)


def raw_request(port: int, request: bytes, half_close: bool = False):
    """Send raw bytes; return (status, location) of the first response, or (None, None).

    `half_close` ends our side after sending, for byte soup that is not a complete request.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    if not data.startswith(b"HTTP/1.1 "):
        return None, None
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    status = int(head[0].split()[1])
    location = next(
        (h.split(b":", 1)[1].strip() for h in head[1:] if h.lower().startswith(b"location:")), None
    )
    return status, location


def get(port: int, target: bytes, headers: list[tuple[bytes, bytes]] = ()):
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [k + b": " + v for k, v in headers]
    return raw_request(port, b"\r\n".join(lines) + b"\r\n\r\n")


url_chars = st.sampled_from(string.ascii_letters + string.digits + "-_.~/%?&=.+")
token_chars = st.sampled_from(string.ascii_letters + string.digits + "-_.=")


@HYP
@given(path=st.text(url_chars, max_size=200))
def test_random_paths_never_5xx_never_redirect(server, path):
    _, port, _, _ = server
    status, location = get(port, b"/" + path.encode())
    assert status is not None and status < 500
    assert status != 302 and location is None


@HYP
@given(data=st.data())
def test_mutated_tokens_are_rejected(server, data):
    _, port, tokens, state = server
    token = data.draw(st.sampled_from(tokens))
    i = data.draw(st.integers(0, len(token) - 1))
    kind = data.draw(st.sampled_from(["flip", "cut", "extend", "swap_sig"]))
    if kind == "flip":
        c = data.draw(st.sampled_from(string.ascii_letters + string.digits + "-_."))
        mutated = token[:i] + c + token[i + 1 :]
    elif kind == "cut":
        mutated = token[:i]
    elif kind == "extend":
        mutated = token + data.draw(st.text(token_chars, min_size=1, max_size=20))
    else:
        other = data.draw(st.sampled_from(tokens))
        mutated = token.split(".")[0] + "." + other.split(".")[1]
    status, location = get(port, b"/c/" + mutated.encode())
    if mutated == token:  # the "mutation" changed nothing: a valid click
        state["valid_sent"] += 1
        assert status == 302
        return
    assert status is not None and 400 <= status < 500
    assert location is None


@HYP
@given(
    which=st.integers(0, 4),
    headers=st.lists(
        st.tuples(
            st.sampled_from([b"User-Agent", b"X-Forwarded-For", b"Cookie", b"Referer", b"X-Y"]),
            st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        ),
        max_size=5,
    ),
    query=st.text(url_chars, max_size=50),
)
def test_valid_tokens_with_any_headers_redirect_only_to_their_landing(
    server, which, headers, query
):
    _, port, tokens, state = server
    target = b"/c/" + tokens[which].encode() + (b"?" + query.encode() if query else b"")
    status, location = get(port, target, headers)
    assert status is not None and status < 500
    if status == 302:
        state["valid_sent"] += 1
        assert location == LANDINGS[which].encode()
    else:  # a header the HTTP parser refuses (e.g. a bare control byte): no event, a 4xx
        assert 400 <= status < 500


@HYP
@given(blob=st.binary(min_size=1, max_size=2000))
def test_raw_bytes_never_5xx(server, blob):
    _, port, _, _ = server
    status, location = raw_request(port, blob, half_close=True)
    assert status is None or status < 500
    assert location is None
