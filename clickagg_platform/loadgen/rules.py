"""The fraud and lateness definitions the ground truth uses, shared with the stream.

Fraud-like traffic is generated so its ground truth is unambiguous:
- bot user agents: a User-Agent containing one of `BOT_UA_MARKERS` (case-insensitive) -> reason
  "bot_ua". Normal browser UAs never contain a marker.
- IP bursts: dedicated burst IPs (198.18.0.0/15) send *only* bursts of at least
  `BURST_MIN_CLICKS` (twice `IP_RATE_THRESHOLD`) clicks, each burst inside a single event-time
  minute -> every click from a burst IP is fraud-like, reason "ip_rate". Ordinary users come
  from a pool large enough that no ordinary IP gets near the threshold in any minute (the ground
  truth reports the observed maximum as a check).
"""

from __future__ import annotations

# --- fraud rule constants, shared with the stream's fraud rules (also written to the manifest)
BOT_UA_MARKERS: tuple[str, ...] = (
    "bot",
    "spider",
    "crawler",
    "headlesschrome",
    "python-requests",
    "curl",
)
IP_RATE_THRESHOLD = 20  # more than this many clicks from one IP in one window is fraud-like
IP_RATE_WINDOW_S = 60  # the window: one UTC event-time minute
BURST_MIN_CLICKS = 2 * IP_RATE_THRESHOLD
BURST_MAX_CLICKS = 5 * IP_RATE_THRESHOLD
BURST_SPAN_MS = (1_500, 4_000)  # one burst is sent within this many ms (or the whole run)
BURST_IP_NETWORK = "198.18.0.0/15"  # only burst traffic comes from here
NORMAL_IP_NETWORK = "10.0.0.0/8"
BOT_UA_IP_NETWORK = "100.64.0.0/10"

# --- lateness classes of the ground truth (receive time minus event time)
LATE_THRESHOLD_MS = 60_000
VERY_LATE_THRESHOLD_MS = 600_000
CLIENT_TIME_MAX_AHEAD_MS = 5_000  # capture honours t only if t <= receive time + this
# t = scheduled send time minus this margin, and nothing is sent before its scheduled time, so
# t <= the capture's receive time even with a little clock skew between generator and capture
# (the capture records min(t, received_at): a t in its future would not survive verbatim).
CLOCK_MARGIN_MS = 250

REASON_BOT_UA = "bot_ua"
REASON_IP_RATE = "ip_rate"

NORMAL_USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
    "NewsReaderApp/5.2.1 (iPhone; iOS 17.4; Scale/3.00)",
)
BOT_USER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.0.0 Safari/537.36",
    "python-requests/2.31.0",
    "curl/8.5.0",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "crawler4j (https://github.com/yasserg/crawler4j/)",
)


def is_bot_user_agent(user_agent: str) -> bool:
    """The bot-UA rule, shared with the stream: a case-insensitive marker substring."""
    lowered = user_agent.lower()
    return any(marker in lowered for marker in BOT_UA_MARKERS)


def fraud_rules() -> dict:
    """The fraud definition the ground truth uses, written to the manifest for the stream."""
    return {
        "bot_ua_markers": list(BOT_UA_MARKERS),
        "bot_ua_rule": "User-Agent contains any marker, case-insensitive -> reason bot_ua",
        "ip_rate_threshold": IP_RATE_THRESHOLD,
        "ip_rate_window_s": IP_RATE_WINDOW_S,
        "ip_rate_rule": (
            f"more than {IP_RATE_THRESHOLD} clicks from one client IP in one UTC event-time "
            "minute -> reason ip_rate. The generator sends such traffic only from dedicated "
            f"burst IPs ({BURST_IP_NETWORK}) that send nothing but bursts of >= "
            f"{BURST_MIN_CLICKS} clicks, each inside one event-time minute, so the ground truth "
            "marks every click from a burst IP as fraud-like (all of them, not only those past "
            "the threshold); ordinary IPs never exceed the threshold"
        ),
        "precedence": "bot_ua before ip_rate (a click has exactly one reason)",
        "burst_ip_network": BURST_IP_NETWORK,
        "normal_ip_network": NORMAL_IP_NETWORK,
        "bot_ua_ip_network": BOT_UA_IP_NETWORK,
        "burst_min_clicks": BURST_MIN_CLICKS,
        "fraud_is_billable": False,
        "duplicate_of_fraud_is_billable": False,
    }
