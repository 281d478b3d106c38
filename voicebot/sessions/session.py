"""One agent in one room: joins it, runs livekit-agents' AgentSession, and leaves when the call is over."""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
from livekit import api, rtc
from livekit.agents import Agent, AgentSession, llm, room_io
from livekit.agents.testing import fake_job_context
from livekit.agents.voice import SpeechHandle
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    CloseEvent,
    ConversationItemAddedEvent,
    ErrorEvent,
    SessionUsageUpdatedEvent,
)
from livekit.agents.voice.io import PlaybackStartedEvent
from opentelemetry.context import Context

from voicebot.agents.pipeline import Pipeline
from voicebot.agents.rules_agent import RulesAgent
from voicebot.agents.spoken_lines import SpokenLines, replies_are_fixed
from voicebot.config import AgentDefinition
from voicebot.errors import LiveKitUnavailable, StateUnavailable
from voicebot.livekit import AGENT_IDENTITY_PREFIX, LiveKitGateway
from voicebot.logs import mask_phone
from voicebot.monitoring.events import (
    Observers,
    ProviderError,
    SessionEnd,
    SessionLabels,
    SessionObserver,
    TurnTiming,
    UsageDeltas,
)
from voicebot.monitoring.tracing import Tracing
from voicebot.sessions.agent_voice import SAMPLE_RATE as VOICE_SAMPLE_RATE
from voicebot.sessions.agent_voice import AgentVoice, caption_from_the_start
from voicebot.sessions.nagle import server_port, turn_off_nagle
from voicebot.sessions.unrecorded import UnrecordedAgentSession
from voicebot.store.base import EndReason, SessionRecord, SessionState, StateStore
from voicebot.store.transcripts import Speaker, TranscriptLine

log = structlog.get_logger(__name__)

# livekit-sip's attribute on a phone participant: dialing, ringing, active, hangup.
SIP_CALL_STATUS = "sip.callStatus"
# End reasons after which a room voicebot made is deleted rather than left to LiveKit's timeouts.
_CLOSES_OWN_ROOM: frozenset[EndReason] = frozenset({"call_ended", "failed", "max_duration", "nobody_joined"})
# How often the server is asked whether it lists the agent's voice yet (usually once or twice).
VOICE_CONFIRM_INTERVAL_S = 0.01
# The store's pool of outbound calls in progress (sip.max_outbound_concurrent), one place per room.
OUTBOUND_CALL_POOL = "outbound_calls"
# Silero's VAD, pocketsphinx and Moonshine all listen at 16 kHz (RoomIO's default is 24 kHz).
LISTEN_SAMPLE_RATE = 16000


# LiveKit's own form for ids (a prefix and base-62 characters): twelve hex digits came out all decimal once in
# ~280 sessions, and the logs' phone-number safety net masked such an id as a number.
_ID_CHARACTERS = string.ascii_letters + string.digits


def new_session_id() -> str:
    """A new session's id: SS_ and twelve random base-62 characters."""
    return "SS_" + "".join(secrets.choice(_ID_CHARACTERS) for _ in range(12))


@dataclass
class SessionInfo:
    """A live session's record, updated as it goes; `record()` is what the store and the API see."""

    session_id: str
    room_name: str
    agent_id: str
    identity: str
    started_at: float
    process_id: str = ""
    """The voicebot process that runs the agent."""
    state: SessionState = "starting"
    ended_at: float | None = None
    end_reason: EndReason | None = None
    error: str | None = None

    def record(self) -> SessionRecord:
        """The session as it is now, for the store and the API."""
        return SessionRecord(**asdict(self))


@dataclass
class _Ending:
    """The first reason the session should end wins; later ones are ignored."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    reason: EndReason | None = None
    error: str | None = None

    def set(self, reason: EndReason, error: str | None = None) -> None:
        if self.reason is None:
            self.reason, self.error = reason, error
            self.event.set()


class RoomSession:
    """Runs one agent in one room from join to leave; `run()` is the task the supervisor owns."""

    def __init__(
        self,
        agent: AgentDefinition,
        room_name: str,
        *,
        livekit: LiveKitGateway,
        pipeline: Pipeline,
        state: StateStore,
        owns_room: bool,
        phone_call: bool = False,
        history: Sequence[TranscriptLine] = (),
        process_id: str = "",
        retention_s: float = 3600,
        max_provider_errors: int = 3,
        max_duration_s: float = 1800,
        unjoined_timeout_s: float | None = None,
        observer: SessionObserver | None = None,
        requested_at: float | None = None,
        lines: SpokenLines | None = None,
        tracing: Tracing | None = None,
        trace_parent: Context | None = None,
    ) -> None:
        self.agent = agent
        self.info = SessionInfo(
            session_id=new_session_id(),
            room_name=room_name,
            agent_id=agent.id,
            identity=f"{AGENT_IDENTITY_PREFIX}{agent.id}-{secrets.token_hex(3)}",
            started_at=time.time(),
            process_id=process_id,
        )
        self._livekit = livekit
        self._pipeline = pipeline
        self._state = state
        self._history = list(history)
        self._retention_s = retention_s
        self._owns_room = owns_room
        self._phone_call = phone_call
        self._max_provider_errors = max_provider_errors
        self._max_duration_s = max_duration_s
        self._unjoined_timeout_s = unjoined_timeout_s
        self._voice_published = asyncio.Event()
        """Set once the server has accepted the agent's voice, or the session has ended without it."""
        self._call_answered = asyncio.Event()
        self._person_arrived = asyncio.Event()
        self._ending = _Ending()
        self._pending: set[asyncio.Task[None]] = set()
        self._job_cleanup: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._log = log.bind(room=room_name, agent=agent.id, session=self.info.session_id)
        self._observer = observer or Observers()
        self._lines = lines or SpokenLines(sample_rate=VOICE_SAMPLE_RATE)
        self.labels = SessionLabels(
            session_id=self.info.session_id,
            room_name=room_name,
            agent_id=agent.id,
            phone_call=phone_call,
            requested_at=time.monotonic() if requested_at is None else requested_at,
        )
        self._usage = UsageDeltas()
        self._last_user_metrics: llm.MetricsReport | None = None
        self._spoke = False
        self._tracing = tracing or Tracing.off()
        self._trace_parent = trace_parent

    def stop(self, reason: EndReason = "stopped") -> None:
        """Ask the session to end; `run()` returns once it has left the room."""
        self._ending.set(reason)

    async def run(self) -> SessionInfo:
        """Join, converse, leave. Never raises for a failure inside the session: it is recorded."""
        # One trace per session: livekit-agents' spans (agent_session, turns, model requests) nest in this.
        with self._tracing.session(self.labels, self._trace_parent):
            return await self._run()

    async def _run(self) -> SessionInfo:
        room = rtc.Room()
        session: AgentSession[None] | None = None
        # Recorded before joining: whoever sees the agent in the room must also find its session listed.
        self._spawn(self._state.save_session(self.info.record()))
        self._observer.session_started(self.labels)
        loop = asyncio.get_running_loop()
        # However the call goes, it does not go on for ever (a runaway call costs money on a trunk).
        timers = [loop.call_later(self._max_duration_s, self._ending.set, "max_duration")]
        if self._unjoined_timeout_s is not None:
            # LiveKit would keep the room (and the agent, which it does not count) for empty_timeout_s.
            timers.append(loop.call_later(self._unjoined_timeout_s, self._nobody_joined))
        voice: AgentVoice | None = None
        try:
            # One peer connection for both directions: the one that joining connects also carries the
            # agent's voice, so publishing it needs no second ICE and DTLS handshake (~20 ms sooner here).
            with self._tracing.join():
                await room.connect(
                    self._livekit.url, self._token(), rtc.RoomOptions(single_peer_connection=True)
                )
            self._log.info("agent_joined", identity=self.info.identity, **self._pipeline.description)
            self._observer.agent_joined(self.labels, self._since_requested())
            voice = AgentVoice(room, published=self._voice_published)
            voice.output.on("playback_started", self._on_playback_started)
            held_s = voice.publish(
                lambda exc: self._ending.set("failed", f"publishing the agent's voice: {exc}")
            )
            if held_s > 0:
                self._log.debug("voice_publish_held", hold_ms=round(held_s * 1000, 1))
            # The SDK's signalling socket holds a request back for the server's delayed ACK (up to 40 ms)
            # under Nagle; the voice's AddTrack was one. Off in a thread: the scan grows with the open fds.
            sockets = await asyncio.to_thread(turn_off_nagle, server_port(self._livekit.url))
            self._log.debug("signalling_nagle_off", sockets=sockets)
            # A subscriber to the agent's voice is someone who can hear it, and the server tells us at once.
            voice.heard.add_done_callback(self._on_heard)
            self._watch_room(room)
            with fake_job_context(
                room=room, job_id=self.info.session_id, agent_identity=self.info.identity
            ) as job_ctx:
                # We stand in for the worker, so we run the clean-up it runs when a job ends.
                self._job_cleanup = job_ctx._on_cleanup
                session = self._agent_session()
                # Given an audio output, RoomIO publishes none of its own (it would wait for a participant).
                session.output.audio = voice.output
                await session.start(
                    agent=self._agent(),
                    room=room,
                    # Hosting would stream every session event (states, transcripts, usage) to everyone in
                    # the room as bytes no client of ours reads: at 6 sessions it cost voicebot 4-13 points
                    # of a core, and livekit-server and the clients more (an A/B of bench/density's measure).
                    session_host=False,
                    # Ending the session is ours to decide (last human gone), not the first caller's.
                    room_options=room_io.RoomOptions(
                        close_on_disconnect=False,
                        # Text on lk.chat would reach the LLM unheard and unchecked by the voice path;
                        # an agent takes it only when its config says text_input = true.
                        text_input=self.agent.text_input,
                        # The rate the VAD and the offline recognisers run at: the SDK's native stream
                        # resamples once, instead of Silero resampling every window in Python. Gain control
                        # stays on (livekit-agents' default): a client of the Python SDK publishes its audio
                        # as it is, and without it pocketsphinx heard "where" for "where are you" in three
                        # of five runs of tests/e2e/test_cluster.py, and five of five with it.
                        audio_input=room_io.AudioInputOptions(sample_rate=LISTEN_SAMPLE_RATE),
                    ),
                )
                caption_from_the_start(session)
                self._listen_for_digits(room, session)
                # A session that takes over a conversation carries on; it does not greet again.
                if self.agent.greeting and not self._history and await self._ready_to_greet():
                    self._greet(session, self.agent.greeting)
                await self._ending.event.wait()
        except asyncio.CancelledError:
            self._ending.set("shutdown")
            raise
        except Exception as exc:
            self._ending.set("failed", f"{type(exc).__name__}: {exc}")
            self._log.exception("session_failed")
        finally:
            for timer in timers:
                timer.cancel()
            await self._leave(room, session, voice)
        return self.info

    async def voice_listed(self) -> bool:
        """Wait until the server lists the agent's voice to whoever joins; False if the session ended first
        or the server cannot be asked (the voice is published all the same)."""
        # The SDK reports the track published when the server has accepted it, a few ms before the server
        # lists it to a client that joins: only the server's own word makes that join find it.
        await self._voice_published.wait()
        try:
            while self.info.state != "ended":
                if await self._livekit.has_audio_track(self.info.room_name, self.info.identity):
                    return True
                await asyncio.sleep(VOICE_CONFIRM_INTERVAL_S)
        except LiveKitUnavailable as exc:
            self._log.warning("voice_not_confirmed", reason=str(exc))
        return False

    def _agent(self) -> Agent:
        if replies_are_fixed(self.agent):
            return RulesAgent(self.agent, self._lines, self._pipeline.tts, self._chat_context())
        return Agent(instructions=self.agent.instructions, chat_ctx=self._chat_context())

    def _greet(self, session: AgentSession[None], text: str) -> None:
        session.say(text, audio=self._lines.audio(self.agent.id, text, self._pipeline.tts))

    def _since_requested(self) -> float:
        return time.monotonic() - self.labels.requested_at

    def _on_playback_started(self, _event: PlaybackStartedEvent) -> None:
        # The first frame the agent sends is its first word (the greeting, or a first reply without one).
        if not self._spoke:
            self._spoke = True
            self._observer.first_word(self.labels, self._since_requested())

    def _on_heard(self, heard: asyncio.Future[None]) -> None:
        if not heard.cancelled():
            # Also when the agent's first frame may go out: livekit-agents holds frames until this.
            self._log.info("voice_subscribed")
        self._person_arrived.set()

    def _nobody_joined(self) -> None:
        if not self._person_arrived.is_set():
            self._ending.set("nobody_joined")

    def _chat_context(self) -> llm.ChatContext:
        """The conversation so far, when this session takes over a room whose agent was lost."""
        context = llm.ChatContext.empty()
        for line in self._history:
            if not line.text.startswith("[pressed"):
                context.add_message(role="user" if line.speaker == "user" else "assistant", content=line.text)
        return context

    async def _ready_to_greet(self) -> bool:
        """True once someone can hear the greeting: in a web room when a person is in it, on a phone call
        when it is answered; False if the session ends first (nothing is synthesised for nobody)."""
        ready = self._call_answered if self._phone_call else self._person_arrived
        arrived = asyncio.ensure_future(ready.wait())
        ended = asyncio.ensure_future(self._ending.event.wait())
        try:
            await asyncio.wait({arrived, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            arrived.cancel()
            ended.cancel()
        if ready.is_set() and self._phone_call:
            self._log.info("call_answered")
        return ready.is_set() and not self._ending.event.is_set()

    def _listen_for_digits(self, room: rtc.Room, session: AgentSession[None]) -> None:
        def on_digit(event: rtc.SipDTMF) -> None:
            # Key presses can be a PIN or an account number: the log says that one came, never which.
            self._log.info("dtmf_received", digits=1)
            self._observer.dtmf_received(self.labels)
            line = TranscriptLine("user", f"[pressed {event.digit}]", time.time())
            self._spawn(self._state.append(self.info.room_name, line))
            rule = next((r for r in self.agent.rules if event.digit in r.digits), None)
            if rule is None:
                return
            # A key press is a deliberate choice: it cuts off whatever the agent was saying.
            session.interrupt(force=True)
            speech = session.say(rule.reply)
            if rule.end_call:
                self._spawn(self._end_after(speech))

        room.on("sip_dtmf_received", on_digit)

    async def _end_after(self, speech: SpeechHandle) -> None:
        await speech
        self._ending.set("call_ended")

    def _token(self) -> str:
        grants = api.VideoGrants(
            room_join=True,
            room=self.info.room_name,
            agent=True,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
            # The agent's state (listening, thinking, speaking) travels as participant attributes.
            can_update_own_metadata=True,
        )
        return self._livekit.token(
            self.info.identity, grants, ttl_s=24 * 3600, kind="agent", name=self.agent.name
        )

    def _agent_session(self) -> AgentSession[None]:
        session = new_agent_session(self.agent, self._pipeline, max_provider_errors=self._max_provider_errors)
        session.on("agent_state_changed", self._on_agent_state)
        session.on("user_state_changed", lambda e: self._log.debug("user_state_changed", state=e.new_state))
        session.on("conversation_item_added", self._on_conversation_item)
        session.on("error", self._on_error)
        session.on("session_usage_updated", self._on_usage)
        session.on("close", self._on_close)
        return session

    def _watch_room(self, room: rtc.Room) -> None:
        # Agents do not count as participants: a room with only its agent closes after the room's
        # empty_timeout (room_closed), unless unjoined_timeout_s gives up on it sooner (nobody_joined).
        room.on("disconnected", lambda reason: self._ending.set("room_closed"))
        room.on("participant_disconnected", lambda _p: self._check_humans(room))
        # A phone call is answered when livekit-sip marks its participant active; greeting earlier
        # would play into a line that is still ringing.
        room.on("participant_connected", self._on_participant)
        room.on("participant_attributes_changed", lambda _changed, p: self._check_call_status(p))
        for participant in room.remote_participants.values():
            self._on_participant(participant)

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self._person_arrived.set()
        self._check_call_status(participant)

    def _check_call_status(self, participant: rtc.Participant) -> None:
        if participant.attributes.get(SIP_CALL_STATUS) == "active":
            self._call_answered.set()

    def _check_humans(self, room: rtc.Room) -> None:
        if not _humans(room):
            self._ending.set("participants_left")

    def _on_agent_state(self, event: AgentStateChangedEvent) -> None:
        if self.info.state == "ended":
            # Closing the AgentSession may still report a state; the record must keep saying "ended".
            return
        self.info.state = event.new_state
        self._spawn(self._state.save_session(self.info.record()))
        self._log.debug("agent_state_changed", state=event.new_state)

    def _on_conversation_item(self, event: ConversationItemAddedEvent) -> None:
        item = event.item
        if item.type != "message" or item.role not in ("user", "assistant"):
            return
        text = item.text_content
        if not text:
            return
        speaker: Speaker = "user" if item.role == "user" else "agent"
        # livekit-agents' per-turn latencies (transcription, end of turn, ttft, ttfb, e2e) ride on the line.
        metrics = {key: round(value, 4) for key, value in item.metrics.items() if isinstance(value, float)}
        line = TranscriptLine(speaker, text, event.created_at, metrics)
        self._spawn(self._state.append(self.info.room_name, line))
        if speaker == "user":
            self._last_user_metrics = item.metrics
        elif self._last_user_metrics is not None:
            # A reply to the caller; the greeting and key-press replies answer no spoken turn.
            self._observer.turn_measured(
                self.labels, TurnTiming.from_reports(self._last_user_metrics, item.metrics)
            )
            self._last_user_metrics = None
        if speaker == "agent" and self._ends_call(text):
            self._ending.set("call_ended")

    def _ends_call(self, reply: str) -> bool:
        check: Callable[[str], bool] | None = getattr(self._pipeline.llm, "ends_call", None)
        return bool(check and check(reply))

    def _on_error(self, event: ErrorEvent) -> None:
        recoverable = getattr(event.error, "recoverable", True)
        self._log.warning(
            "session_error",
            error=str(event.error),
            source=type(event.source).__name__,
            recoverable=recoverable,
        )
        cause = getattr(event.error, "error", event.error)
        provider = getattr(event.source, "provider", type(event.source).__name__)
        self._observer.provider_failed(
            self.labels,
            ProviderError(provider=str(provider), kind=type(cause).__name__, recoverable=recoverable),
        )

    def _on_usage(self, event: SessionUsageUpdatedEvent) -> None:
        for usage in self._usage.update(event.usage):
            self._observer.usage(self.labels, usage)

    def _on_close(self, event: CloseEvent) -> None:
        if event.error is not None:
            self._ending.set("failed", str(event.error.error))
        else:
            self._ending.set("stopped")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # Event handlers are synchronous; their writes are awaited before the session reports its end.
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _leave(
        self, room: rtc.Room, session: AgentSession[None] | None, voice: AgentVoice | None = None
    ) -> None:
        info = self.info
        info.end_reason = self._ending.reason or "stopped"
        info.error = self._ending.error
        info.state = "ended"
        info.ended_at = time.time()
        # Whoever waits for the voice must not wait for a session that is over.
        self._voice_published.set()
        try:
            if session is not None:
                await session.aclose()
            if voice is not None:
                await voice.aclose()
            if info.end_reason in ("call_ended", "max_duration"):
                await self._hang_up(room)
            await room.disconnect()
            if self._pending:
                await asyncio.gather(*self._pending, return_exceptions=True)
            if self._job_cleanup is not None:
                await self._job_cleanup()
            if self._owns_room and info.end_reason in _CLOSES_OWN_ROOM:
                # Nobody else will use a room we made for this call; after max_duration that also
                # disconnects the people in it, so the call really ends.
                await self._livekit.delete_room(info.room_name)
        except Exception:
            self._log.exception("session_cleanup_failed")
        finally:
            await self._state.close(info.room_name, self._retention_s)
            await self._state.end_session(info.record(), self._retention_s)
            await self._give_up_lease()
            await self._give_up_outbound_place()
        duration = round(info.ended_at - info.started_at, 3)
        self._observer.session_ended(self.labels, SessionEnd(info.end_reason, duration, info.error))
        if info.end_reason == "failed":
            self._log.error("session_ended", reason=info.end_reason, error=info.error, duration_s=duration)
        else:
            self._log.info("session_ended", reason=info.end_reason, duration_s=duration)

    async def _give_up_lease(self) -> None:
        # The room's place under the cluster's limit is free again. During a Redis outage the lease
        # simply lapses; a stopped session must not wait for Redis.
        try:
            await self._state.release(self.info.room_name, self.info.process_id)
        except StateUnavailable:
            self._log.warning("lease_not_released")

    async def _give_up_outbound_place(self) -> None:
        # Any session may be an outbound call's, also one taken over from another process (which no
        # longer knows it is one): freeing a place never held is a no-op. A lost free lapses by itself.
        try:
            await self._state.free_slot(OUTBOUND_CALL_POOL, self.info.room_name)
        except StateUnavailable:
            self._log.warning("outbound_place_not_freed")

    async def _hang_up(self, room: rtc.Room) -> None:
        """Remove the phone callers: livekit-sip ends their calls with a BYE."""
        # A copy: each removal lets the room's own events run, and one of them drops the caller from the dict.
        for participant in list(room.remote_participants.values()):
            if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
                await self._livekit.remove_participant(self.info.room_name, participant.identity)
                self._log.info("call_hung_up", caller=mask_phone(participant.identity))


def new_agent_session(
    agent: AgentDefinition, pipeline: Pipeline, *, max_provider_errors: int
) -> AgentSession[None]:
    """livekit-agents' AgentSession for an agent definition: its models and turn-taking settings."""
    # Here, not at the top: it loads onnxruntime, which the pipeline has loaded by now anyway.
    from voicebot.agents.listening import session_listening

    turn = agent.turn
    speech_to_text, voice_activity = session_listening(pipeline.stt, pipeline.vad)
    return UnrecordedAgentSession(
        stt=speech_to_text,
        llm=pipeline.llm,
        tts=pipeline.tts,
        vad=voice_activity,
        turn_handling={
            "turn_detection": "vad",
            "endpointing": {
                "min_delay": turn.min_endpointing_delay_s,
                "max_delay": turn.max_endpointing_delay_s,
            },
            # Adaptive interruption uses LiveKit's cloud model; nothing here may leave the machine.
            "interruption": {"enabled": turn.allow_interruptions, "mode": "vad"},
        },
        user_away_timeout=None,
        conn_options=SessionConnectOptions(max_unrecoverable_errors=max_provider_errors),
        # On close livekit waits for a last transcript; a non-streaming STT never sends one.
        session_close_transcript_timeout=2.0 if pipeline.stt.capabilities.streaming else 0.1,
    )


def _humans(room: rtc.Room) -> list[rtc.RemoteParticipant]:
    return [
        p for p in room.remote_participants.values() if p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    ]
