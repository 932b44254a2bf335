from clickagg_platform.capture import FUTURE_SKEW_MS, ClientInfo, event_time_for

SALT = b"salt"
TRUSTED = frozenset({"127.0.0.1"})
ISSUED_S = 1_800_000_000
NOW_MS = ISSUED_S * 1000 + 3_600_000


def test_client_time_inside_token_lifetime_is_the_event_time():
    assert event_time_for(NOW_MS - 600_000, ISSUED_S, NOW_MS) == NOW_MS - 600_000


def test_client_time_before_the_link_existed_or_in_the_future_is_ignored():
    assert event_time_for(ISSUED_S * 1000 - 1, ISSUED_S, NOW_MS) == NOW_MS
    assert event_time_for(NOW_MS + FUTURE_SKEW_MS + 1, ISSUED_S, NOW_MS) == NOW_MS
    # small clock skew ahead is clamped to the receive time, never after it
    assert event_time_for(NOW_MS + 1000, ISSUED_S, NOW_MS) == NOW_MS
    assert event_time_for(None, ISSUED_S, NOW_MS) == NOW_MS


def _scope(peer="127.0.0.1", headers=(), query=b""):
    return {"client": (peer, 5555), "headers": list(headers), "query_string": query}


def test_forwarded_for_is_trusted_only_from_trusted_peers():
    via_proxy = ClientInfo(
        _scope(headers=[(b"x-forwarded-for", b"1.2.3.4, 10.0.0.1")]), SALT, TRUSTED
    )
    direct = ClientInfo(_scope(peer="1.2.3.4"), SALT, TRUSTED)
    spoofed = ClientInfo(
        _scope(peer="9.9.9.9", headers=[(b"x-forwarded-for", b"1.2.3.4")]), SALT, TRUSTED
    )
    assert via_proxy.ip_hash == direct.ip_hash != spoofed.ip_hash


def test_hashes_hide_raw_values_and_depend_on_the_salt():
    info = ClientInfo(
        _scope(peer="1.2.3.4", headers=[(b"cookie", b"a=b; ca_uid=user-9")]), SALT, TRUSTED
    )
    other_salt = ClientInfo(
        _scope(peer="1.2.3.4", headers=[(b"cookie", b"ca_uid=user-9")]), b"pepper", TRUSTED
    )
    assert "1.2.3.4" not in info.ip_hash and "user-9" not in info.user_key
    assert info.ip_hash != other_salt.ip_hash


def test_user_key_from_cookie_else_from_ip_and_agent():
    a = ClientInfo(_scope(headers=[(b"cookie", b"ca_uid=u1")]), SALT, TRUSTED)
    b = ClientInfo(
        _scope(headers=[(b"cookie", b"ca_uid=u1"), (b"user-agent", b"X")]), SALT, TRUSTED
    )
    c = ClientInfo(_scope(headers=[(b"user-agent", b"X")]), SALT, TRUSTED)
    assert a.user_key == b.user_key != c.user_key


def test_query_time_parsing_is_lenient():
    assert ClientInfo(_scope(query=b"t=123"), SALT, TRUSTED).client_time == 123
    assert ClientInfo(_scope(query=b"t=abc"), SALT, TRUSTED).client_time is None
    assert ClientInfo(_scope(query=b"x=1"), SALT, TRUSTED).client_time is None
