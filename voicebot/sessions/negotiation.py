"""When to publish the agent's voice so that livekit-server offers it to the people in the room at once.

livekit-server renegotiates a participant's subscriber connection at most once per 150 ms
(`negotiationFrequency`, pkg/rtc/transport.go): a change asked for within 150 ms of that connection's last
negotiation waits a full 150 ms, one asked for later waits 10 ms. A participant's join is its first
negotiation. So an agent sent into a room just after a person joined (job-notification right after they
connected, or a phone call whose caller livekit-sip has just brought in) published its voice ~100 ms into that
window, and the person's subscription to it waited out the 150 ms: 165-180 ms from the publish to the person's
subscription instead of 25-45 ms, the greeting heard ~100 ms later than if the voice had been published a
little later. Measured with a listening client that asked for the agent as soon as it had connected, 14
trials each: greeting heard at p50 318-331 ms publishing at once, 228-232 ms holding the publish until 150 ms
after the person's join; held to 120 ms after it, 11 of 14 trials still waited out the window.
"""

from __future__ import annotations

from collections.abc import Iterable

# livekit-server's negotiationFrequency. Our publish reaches the server's negotiation ~10 ms after we ask,
# which is the margin (publishing from 135 ms on, 1 trial in 14 still waited).
NEGOTIATION_INTERVAL_S = 0.15


def publish_delay(joined_at_s: Iterable[float], now_s: float) -> float:
    """Seconds to hold the agent's voice back, given when the others in the room joined (server wall clock,
    seconds) and the time now: until the newest join's negotiation window has passed, 0 when it has."""
    newest = max(joined_at_s, default=None)
    if newest is None:
        return 0.0
    # A join "in the future" is the two clocks disagreeing: never hold longer than one window.
    return min(max(newest + NEGOTIATION_INTERVAL_S - now_s, 0.0), NEGOTIATION_INTERVAL_S)
