"""The agent's voice paced by one thread for the whole process, so that nothing is encoded while it is silent.

livekit's native audio source with a queue (RoomIO's, 200 ms) hands WebRTC 10 ms from a native timer, and once
the queue has been empty for 100 ms it hands it silence instead, every 10 ms for the rest of the call: each
session's Opus encoder and that timer kept working through every pause, ~3% of a core per session here
(`AudioEncoderQue` and `AudioSourceCapt` threads, an idle published voice measured alone). With no queue
(`queue_size_ms=0`) the source passes each 10 ms chunk straight to the encoder and sends nothing between
them, so the pacing is ours: one thread, not the event loop (a busy loop must not break up the agent's
speech), hands every speaking session's next chunk to the SDK on time and sleeps while nobody speaks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from contextlib import suppress

import numpy as np
import structlog
from livekit import rtc

# The SDK's own request path (its version pinned by requirements.lock): what AudioSource.capture_frame sends,
# without waiting on the event loop for the reply of each 10 ms.
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2 as proto_ffi
from numpy.typing import NDArray

log = structlog.get_logger(__name__)

CHUNK_S = 0.01
"""WebRTC takes audio in 10 ms chunks; the source with no queue rejects anything else."""
QUEUE_S = 0.2
"""How far the agent's audio may run ahead of real time before capture_frame waits: RoomIO's queue."""
KEEP_SENT = 32
"""Chunks handed to the SDK stay referenced this long (0.32 s): it reads them from our memory."""
MAX_LATE_S = 0.2
"""A source this far behind its schedule (a stalled process) restarts it rather than bursting to catch up."""


class PacedAudioSource(rtc.AudioSource):
    """An audio source with no native queue, fed in real time by the process's `VoicePacer`.

    Keeps `rtc.AudioSource`'s contract as RoomIO's audio output uses it: `capture_frame` returns once the
    frame is queued and waits while more than `QUEUE_S` is, `queued_duration`, `clear_queue` and
    `wait_for_playout`.
    """

    def __init__(self, sample_rate: int, num_channels: int, pacer: VoicePacer | None = None) -> None:
        super().__init__(sample_rate, num_channels, queue_size_ms=0)
        self._pacer = pacer or VoicePacer.shared()
        self._chunk_samples = sample_rate // 100 * num_channels
        self._chunks: deque[NDArray[np.int16]] = deque()
        self._sent: deque[NDArray[np.int16]] = deque(maxlen=KEEP_SENT)
        self._lock = threading.Lock()
        self._room_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self.next_due = 0.0
        """When the pacer hands over the next chunk (time.monotonic()); 0 while nothing is queued."""
        self._closed = False

    @property
    def queued_duration(self) -> float:
        """Audio captured and not yet handed to WebRTC, in seconds."""
        return len(self._chunks) * CHUNK_S

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Queue `frame` to be sent in real time; wait while more than `QUEUE_S` is queued."""
        if frame.samples_per_channel == 0 or self._closed:
            return
        # A copy: the frame is sent after this returns, and its producer may reuse it.
        samples = np.frombuffer(frame.data, dtype=np.int16).copy()
        # Frames come in whole 10 ms but for a stream's tail, which gets silence to the next 10 ms.
        tail = len(samples) % self._chunk_samples
        if tail:
            samples = np.concatenate([samples, np.zeros(self._chunk_samples - tail, dtype=np.int16)])
        with self._lock:
            self._chunks.extend(np.split(samples, len(samples) // self._chunk_samples))
            waiter = None
            if self.queued_duration > QUEUE_S:
                waiter = self._room_waiter = self._loop.create_future()
        self._pacer.wake(self)
        if waiter is not None:
            await waiter

    def clear_queue(self) -> None:
        """Drop what is queued (on either thread): an interrupted agent stops after the chunk being sent."""
        with self._lock:
            self._chunks.clear()
            self._release(drained=True)

    async def wait_for_playout(self) -> None:
        """Return once everything captured has been handed to WebRTC."""
        with self._lock:
            if not self._chunks:
                return
            if self._drain_waiter is None:
                self._drain_waiter = self._loop.create_future()
            waiter = self._drain_waiter
        await asyncio.shield(waiter)

    async def aclose(self) -> None:
        """Stop being paced, then release the native source."""
        self._pacer.forget(self)
        with self._lock:
            self._closed = True
            self._chunks.clear()
            self._release(drained=True)
        await super().aclose()

    def send_due(self, now: float) -> bool:
        """Hand WebRTC every chunk due by `now` (on the pacer's thread); False once nothing is queued."""
        with self._lock:
            if self._closed:
                return False
            if now - self.next_due > MAX_LATE_S:
                self.next_due = now
            while self._chunks and self.next_due <= now:
                chunk = self._chunks.popleft()
                self._send(chunk)
                self.next_due += CHUNK_S
            self._release(drained=not self._chunks)
            return bool(self._chunks)

    def _send(self, chunk: NDArray[np.int16]) -> None:
        request = proto_ffi.FfiRequest()
        capture = request.capture_audio_frame
        capture.source_handle = self._ffi_handle.handle
        capture.buffer.data_ptr = chunk.ctypes.data
        capture.buffer.sample_rate = self.sample_rate
        capture.buffer.num_channels = self.num_channels
        capture.buffer.samples_per_channel = len(chunk) // self.num_channels
        # The reply to the request carries no error for this source (checked when the chunk is captured);
        # nobody waits for it, as nobody would for a queue's silence.
        FfiClient.instance.request(request)
        self._sent.append(chunk)

    def _release(self, *, drained: bool) -> None:
        """Wake capture_frame when there is room again, wait_for_playout when all is sent (lock held)."""
        if self._room_waiter is not None and self.queued_duration <= QUEUE_S:
            self._resolve(self._room_waiter)
            self._room_waiter = None
        if drained and self._drain_waiter is not None:
            self._resolve(self._drain_waiter)
            self._drain_waiter = None

    def _resolve(self, waiter: asyncio.Future[None]) -> None:
        def resolve() -> None:
            if not waiter.done():
                waiter.set_result(None)

        if threading.get_ident() != self._pacer.thread_id:
            resolve()
            return
        # A loop that has closed has nobody waiting on it.
        with suppress(RuntimeError):
            self._loop.call_soon_threadsafe(resolve)


class VoicePacer:
    """One thread that hands each speaking source its next 10 ms when it is due, and sleeps otherwise."""

    _shared: VoicePacer | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        self._active: set[PacedAudioSource] = set()
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self.thread_id: int | None = None
        self._thread = threading.Thread(target=self._run, name="voicebot-voice-pacer", daemon=True)
        self._thread.start()

    @classmethod
    def shared(cls) -> VoicePacer:
        """The process's pacer, started the first time it is asked for."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def wake(self, source: PacedAudioSource) -> None:
        """`source` has audio queued: pace it, starting now if it was idle."""
        with self._lock:
            if source not in self._active:
                source.next_due = time.monotonic()
                self._active.add(source)
        self._wakeup.set()

    def forget(self, source: PacedAudioSource) -> None:
        """Stop pacing `source` (it is closing)."""
        with self._lock:
            self._active.discard(source)

    def _run(self) -> None:
        self.thread_id = threading.get_ident()
        while True:
            with self._lock:
                active = list(self._active)
            if not active:
                self._wakeup.wait()
                self._wakeup.clear()
                continue
            now = time.monotonic()
            for source in active:
                try:
                    speaking = source.send_due(now)
                except Exception:
                    # One source's failure must not silence every session's voice.
                    log.exception("voice_chunk_not_sent")
                    source.clear_queue()
                    speaking = False
                if not speaking:
                    with self._lock:
                        # Unless more audio came in meanwhile, the source goes quiet.
                        if not source.queued_duration:
                            self._active.discard(source)
            with self._lock:
                due = min((source.next_due for source in self._active), default=None)
            if due is not None:
                self._wakeup.wait(max(0.0, due - time.monotonic()))
                self._wakeup.clear()
