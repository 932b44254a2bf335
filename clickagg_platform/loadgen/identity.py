"""Who a click appears to come from: client IP, User-Agent and user id.

The per-click form (`identity`, used to render requests) and the vectorized IP key (`ip_key`,
used to count clicks per IP and minute) live side by side because they must agree on which
clicks share an IP.
"""

from __future__ import annotations

import numpy as np

from clickagg_platform.loadgen.rules import BOT_USER_AGENTS, NORMAL_USER_AGENTS
from clickagg_platform.loadgen.schedule import KIND_BOT_UA, KIND_BURST


def _ip(first: int, second: int, n: int) -> str:
    """IPv4 address number `n` of the network starting at first.second.0.0."""
    return f"{first}.{second + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def identity(kind: int, user: int, unique_index: int) -> tuple[str, str, str]:
    """(ip, user agent, user id) of a click; stable per ordinary user, fresh per burst click.

    Keep in sync with `ip_key`, which counts the same IPs vectorized.
    """
    if kind == KIND_BURST:
        ua = NORMAL_USER_AGENTS[user % len(NORMAL_USER_AGENTS)]
        return _ip(198, 18, user % (1 << 17)), ua, f"x{user:05d}-{unique_index:08d}"
    if kind == KIND_BOT_UA:
        ua = BOT_USER_AGENTS[user % len(BOT_USER_AGENTS)]
        return _ip(100, 64, (user + 1) % (1 << 22)), ua, f"b{user:08d}"
    ua = NORMAL_USER_AGENTS[user % len(NORMAL_USER_AGENTS)]
    return _ip(10, 0, (user + 1) % (1 << 24)), ua, f"u{user:08d}"


def ip_key(kind: np.ndarray, user: np.ndarray) -> np.ndarray:
    """An integer per distinct client IP (mirrors `identity`), for vectorized counting."""
    normal = (user + 1) % (1 << 24)
    bot = (1 << 25) + (user + 1) % (1 << 22)
    burst = (1 << 26) + user % (1 << 17)
    return np.where(kind == KIND_BURST, burst, np.where(kind == KIND_BOT_UA, bot, normal))
