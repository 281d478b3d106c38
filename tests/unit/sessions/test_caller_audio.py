"""The caller's audio comes in at the models' rate, with gain control where no client SDK applied it."""

from __future__ import annotations

from voicebot.sessions.session import LISTEN_SAMPLE_RATE, caller_audio


def test_a_phone_callers_audio_gets_gain_control_and_a_client_sdks_does_not() -> None:
    """LiveKit's client SDKs publish microphones with WebRTC's gain control on; livekit-sip's audio is the
    phone network's. Not given, livekit-agents turns it on for every caller without noise cancellation."""
    assert caller_audio(phone_call=True).auto_gain_control is True
    assert caller_audio(phone_call=False).auto_gain_control is False


def test_every_callers_audio_arrives_at_the_rate_the_vad_and_recognisers_run_at() -> None:
    for phone_call in (True, False):
        assert caller_audio(phone_call=phone_call).sample_rate == LISTEN_SAMPLE_RATE == 16000
