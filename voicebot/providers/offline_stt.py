"""What the offline recognisers share: a VAD segment in, one final transcript out, traced as stt_request."""

from __future__ import annotations

from typing import Never

import structlog
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.language import LanguageCode
from livekit.agents.telemetry import trace_types, tracer
from livekit.agents.types import NOT_GIVEN, NotGivenOr

AUDIO_DURATION = "lk.stt.audio_duration"
"""Seconds of speech one stt_request recognised."""

log = structlog.get_logger(__name__)


class OfflineSTT(stt.STT[Never]):
    """A recogniser of whole segments (livekit-agents cuts them with the session's VAD), run on this machine.

    Subclasses say how a segment becomes text; the transcript never leaves debug logs or the span's opt-in.
    """

    def __init__(self, language: str) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._language = language

    async def recognise(self, frame: rtc.AudioFrame) -> tuple[str, float, float]:
        """Text, confidence and seconds of audio of one segment; CPU work goes to the subclass's threads."""
        raise NotImplementedError

    @property
    def _span_attributes(self) -> dict[str, str]:
        return {
            trace_types.ATTR_GEN_AI_REQUEST_MODEL: self.model,
            trace_types.ATTR_GEN_AI_PROVIDER_NAME: self.provider,
        }

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = utils.merge_frames(buffer)
        # livekit-agents traces its LLM and TTS requests but not STT ones; this span is their STT kin,
        # through the same tracer (a no-op unless voicebot exports traces). The text stays out of it.
        with tracer.start_as_current_span("stt_request", attributes=self._span_attributes) as span:
            text, confidence, audio_s = await self.recognise(frame)
            span.set_attributes({AUDIO_DURATION: audio_s, trace_types.ATTR_TRANSCRIPT_CONFIDENCE: confidence})
        log.debug(
            "stt_recognised",
            provider=self.provider,
            text=text,
            confidence=round(confidence, 3),
            audio_s=audio_s,
        )
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[
                stt.SpeechData(
                    language=LanguageCode(language if isinstance(language, str) else self._language),
                    text=text,
                    confidence=confidence,
                )
            ],
        )
