"""A whole conversation turn through livekit-agents' real AgentSession, with scripted audio, VAD, STT and TTS.

The LLM is voicebot's own rules engine. The session is configured the way voicebot's runtime configures
it (VAD turn detection, endpointing from the agent's turn settings), with shorter delays so a turn takes
a fraction of a second; the fakes in tests/fakes.py play the caller and the speaker in real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from livekit.agents import (
    Agent,
    AgentSession,
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    UserStateChangedEvent,
    llm,
)
from livekit.agents.voice.events import AgentState, UserState

from tests.fakes import RealTimeAudioOutput, ScriptedAudioInput, ScriptedSTT, ToneTTS, ToneVAD, Utterance
from voicebot.agents.pipeline import Pipeline
from voicebot.config import AgentDefinition, Rule, TurnSettings
from voicebot.providers.rules_llm import RulesLLM
from voicebot.sessions.session import new_agent_session

HOURS = Rule(reply="We open at nine.", phrases=("opening hours",))
AGENT = AgentDefinition(
    id="reception",
    name="Reception",
    greeting="Hello, this is reception.",
    rules=(HOURS,),
    fallback="Sorry?",
    turn=TurnSettings(vad_min_silence_s=0.05, min_endpointing_delay_s=0.05, max_endpointing_delay_s=1.0),
)
TTS_AUDIO_S = 0.15
TURN_TIMEOUT_S = 5.0
"""How long a scripted turn may take before the test gives up; a turn takes well under a second."""


@dataclass
class Call:
    """A running scripted session and everything it reported, in order."""

    session: AgentSession[None]
    stt: ScriptedSTT
    tts: ToneTTS
    speaker: RealTimeAudioOutput
    agent_states: list[AgentState] = field(default_factory=list)
    """The agent's state before the first change, then its new state at every change."""
    user_states: list[UserState] = field(default_factory=list)
    """The caller's new state at every change."""
    timeline: list[tuple[str, str]] = field(default_factory=list)
    """Both, interleaved as they happened: ("agent", new state) or ("user", new state)."""
    items: list[tuple[str, ...]] = field(default_factory=list)
    """Conversation items added: (role, text) for a message, (type,) for anything else."""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def listen(self) -> None:
        """Record the session's state changes and conversation items from now on."""
        self.session.on("agent_state_changed", self._on_agent_state)
        self.session.on("user_state_changed", self._on_user_state)
        self.session.on("conversation_item_added", self._on_item)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition` holds; it is checked after every recorded event."""
        async with asyncio.timeout(TURN_TIMEOUT_S):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_until_listening_after_speaking(self) -> None:
        """Return once the agent has finished speaking and listens again."""
        await self.wait_until(lambda: self.agent_states[-2:] == ["speaking", "listening"])

    def _on_agent_state(self, event: AgentStateChangedEvent) -> None:
        if not self.agent_states:
            self.agent_states.append(event.old_state)
        self.agent_states.append(event.new_state)
        self.timeline.append(("agent", event.new_state))
        self._changed.set()

    def _on_user_state(self, event: UserStateChangedEvent) -> None:
        self.user_states.append(event.new_state)
        self.timeline.append(("user", event.new_state))
        self._changed.set()

    def _on_item(self, event: ConversationItemAddedEvent) -> None:
        item = event.item
        if isinstance(item, llm.ChatMessage):
            self.items.append((item.role, item.text_content or ""))
        else:
            self.items.append((item.type,))
        self._changed.set()


@asynccontextmanager
async def scripted_call(agent: AgentDefinition, utterances: Sequence[Utterance] = ()) -> AsyncIterator[Call]:
    """A started session of `agent` whose caller says `utterances`; closed on exit."""
    turn = agent.turn
    speech_to_text = ScriptedSTT(utterances)
    text_to_speech = ToneTTS(audio_s=TTS_AUDIO_S)
    speaker = RealTimeAudioOutput()
    pipeline = Pipeline(
        stt=speech_to_text,
        llm=RulesLLM(agent),
        tts=text_to_speech,
        vad=ToneVAD(min_silence_s=turn.vad_min_silence_s),
    )
    # The very AgentSession settings the runtime uses, around scripted models.
    session = new_agent_session(agent, pipeline, max_provider_errors=3)
    call = Call(session=session, stt=speech_to_text, tts=text_to_speech, speaker=speaker)
    call.listen()
    session.input.audio = ScriptedAudioInput(utterances)
    session.output.audio = speaker
    await session.start(Agent(instructions=agent.instructions))
    try:
        yield call
    finally:
        await session.aclose()


async def test_a_turn_goes_listening_thinking_speaking_listening() -> None:
    said = "What are your opening hours?"

    async with scripted_call(AGENT, [Utterance(start_s=0.1, end_s=0.4, transcript=said)]) as call:
        await call.wait_until_listening_after_speaking()

    # start() takes the agent from initializing to listening. The turn is committed once VAD has heard
    # 50 ms of silence, the STT has transcribed the speech VAD cut out and the endpointing delay has
    # passed: the agent thinks. It speaks when the speaker starts playing the reply's first frame, and
    # listens again only once the speaker reports the reply played out, not when the TTS is done.
    assert call.agent_states == ["initializing", "listening", "thinking", "speaking", "listening"]
    # VAD: speaking 30 ms into the tone, listening 50 ms after it stops.
    assert call.user_states == ["speaking", "listening"]
    # The agent thinks only once the caller has stopped: the turn ends on VAD's end of speech.
    assert call.timeline == [
        ("agent", "listening"),
        ("user", "speaking"),
        ("user", "listening"),
        ("agent", "thinking"),
        ("agent", "speaking"),
        ("agent", "listening"),
    ]
    # The session records its first agent as a handoff before anything is said.
    assert call.items == [("agent_handoff",), ("user", said), ("assistant", HOURS.reply)]
    assert call.tts.spoken == [HOURS.reply]
    # The STT was given the speech VAD cut out: the 0.3 s utterance and the silence that ended it.
    assert call.stt.heard_s == [pytest.approx(0.3 + AGENT.turn.vad_min_silence_s, abs=0.01)]
    assert_played_out_once(call.speaker)


async def test_listeners_get_every_event_while_the_session_keeps_none() -> None:
    said = "What are your opening hours?"

    async with scripted_call(AGENT, [Utterance(start_s=0.1, end_s=0.4, transcript=said)]) as call:
        await call.wait_until_listening_after_speaking()
        # livekit-agents' own AgentSession keeps every event it emits for a session report (its private
        # list, read by JobContext.make_session_report); voicebot's keeps none, so a long call does not grow.
        kept = list(call.session._recorded_events)

    assert call.agent_states == ["initializing", "listening", "thinking", "speaking", "listening"]
    assert call.items == [("agent_handoff",), ("user", said), ("assistant", HOURS.reply)]
    assert kept == []


async def test_an_unmatched_utterance_gets_the_fallback() -> None:
    said = "Is the weather nice today?"

    async with scripted_call(AGENT, [Utterance(start_s=0.1, end_s=0.4, transcript=said)]) as call:
        await call.wait_until_listening_after_speaking()

    assert call.agent_states == ["initializing", "listening", "thinking", "speaking", "listening"]
    assert call.user_states == ["speaking", "listening"]
    assert call.items == [("agent_handoff",), ("user", said), ("assistant", AGENT.fallback)]
    assert call.tts.spoken == [AGENT.fallback]


async def test_the_greeting_is_spoken_before_the_agent_listens() -> None:
    async with scripted_call(AGENT) as call:
        call.session.say(AGENT.greeting)
        await call.wait_until_listening_after_speaking()

    # say() needs no reply from the LLM, so the agent goes from listening straight to speaking.
    assert call.agent_states == ["initializing", "listening", "speaking", "listening"]
    assert call.user_states == []
    assert call.items == [("agent_handoff",), ("assistant", AGENT.greeting)]
    assert call.tts.spoken == [AGENT.greeting]
    assert_played_out_once(call.speaker)


def assert_played_out_once(speaker: RealTimeAudioOutput) -> None:
    """The speaker played one reply to its end, uninterrupted."""
    [finished] = speaker.finished
    assert not finished.interrupted
    # A little more than the TTS made: each livekit-agents audio emitter the reply passes through (the TTS
    # stream's, then the sentence adapter's) closes it with a 10 ms silent marker.
    assert finished.playback_position >= TTS_AUDIO_S
