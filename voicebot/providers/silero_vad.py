"""Silero VAD for every session at once: all streams' 32 ms windows judged in one ONNX call per tick."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.resources
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnxruntime
import structlog
from livekit import rtc
from livekit.agents import vad

# The model file ships in the plugin's package. Importing it registers the plugin, which livekit-agents
# allows on the main thread only: so here, when this module is imported, not when the model loads.
from livekit.plugins.silero import resources as silero_resources

log = structlog.get_logger(__name__)

SAMPLE_RATE = 16000
"""The only rate the model judges here (it also knows 8 kHz, which nothing in voicebot sends)."""
WINDOW = 512
"""Samples per inference at 16 kHz: 32 ms."""
CONTEXT = 64
"""Samples of the previous window the model sees in front of each new one."""
STATE_SIZE = 128
EXP_ALPHA = 0.35
"""Smoothing of the raw probabilities, as livekit-plugins-silero applies it (its events are the reference)."""
SLOW_INFERENCE_S = 0.2
QUIET_REPORT_S = 1.0
"""Outside speech, one INFERENCE_DONE this often instead of every window (see `every_window`)."""
INT16_MAX = np.iinfo(np.int16).max
_SR = np.array(SAMPLE_RATE, dtype=np.int64)


@contextlib.contextmanager
def _model_file() -> Iterator[str]:
    """The Silero VAD model (MIT) that livekit-plugins-silero ships, as a path onnxruntime can open."""
    resource = importlib.resources.files(silero_resources) / "silero_vad.onnx"
    with importlib.resources.as_file(resource) as path:
        yield str(path)


def load_session() -> onnxruntime.InferenceSession:
    """The model on the CPU with one thread: batching, not threads, is what spreads its cost (blocking)."""
    options = onnxruntime.SessionOptions()
    # A spinning idle thread would burn a core between ticks.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    with _model_file() as path:
        return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=options)


@dataclass
class InferenceCounts:
    """How many ONNX calls a batcher made and how many windows they judged."""

    calls: int = 0
    windows: int = 0


@dataclass
class _Window:
    """One stream's window waiting for its probability."""

    model_input: np.ndarray
    """[CONTEXT + WINDOW] float32: the previous window's tail, then this window."""
    state: np.ndarray
    """[2, 1, STATE_SIZE] float32: the stream's recurrent state before this window."""
    future: asyncio.Future[tuple[float, np.ndarray]]


class WindowBatcher:
    """Runs every window submitted within one tick as one ONNX call in one worker thread.

    A tick opens with the first window pending and closes when every open stream has a window in it, or
    `gather_s` after it opened (at the next loop iteration when `gather_s` is 0), whichever comes first.
    A stream has at most one window in a batch: it awaits each before it submits the next. Windows that
    arrive while a call runs wait for it to end. The results come back to the loop in one callback per batch.
    """

    def __init__(self, session: onnxruntime.InferenceSession, *, gather_s: float = 0.0) -> None:
        self._session = session
        self._gather_s = gather_s
        self.counts = InferenceCounts()
        self._streams = 0
        self._pending: list[_Window] = []
        self._opened_at = 0.0
        self._tick: asyncio.Handle | None = None
        self._running: concurrent.futures.Future[tuple[np.ndarray, np.ndarray]] | None = None
        # Started on the first window, stopped by aclose(); the next window starts a new one.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        """A stream is open for the duration: a tick need not wait once each open stream has a window in."""
        self._streams += 1
        try:
            yield
        finally:
            self._streams -= 1
            self._dispatch_when_due()

    def submit(self, model_input: np.ndarray, state: np.ndarray) -> asyncio.Future[tuple[float, np.ndarray]]:
        """The raw speech probability of one window and the stream's next state, once its batch has run.

        `model_input` and `state` must stay unchanged until the future is done.
        """
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="silero-vad")
        future: asyncio.Future[tuple[float, np.ndarray]] = loop.create_future()
        if not self._pending:
            self._opened_at = loop.time()
        self._pending.append(_Window(model_input, state, future))
        self._dispatch_when_due()
        return future

    def _dispatch_when_due(self) -> None:
        if self._running is not None or not self._pending or self._loop is None:
            return
        if len(self._pending) >= self._streams:
            # Nobody else can join this tick.
            if self._tick is not None:
                self._tick.cancel()
            self._dispatch()
        elif self._tick is None:
            if self._gather_s > 0:
                self._tick = self._loop.call_at(self._opened_at + self._gather_s, self._dispatch)
            else:
                self._tick = self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._tick = None
        batch = [window for window in self._pending if not window.future.done()]
        self._pending = []
        if not batch or self._executor is None:
            return
        loop = self._loop
        assert loop is not None
        self._running = self._executor.submit(
            self._infer, [w.model_input for w in batch], [w.state for w in batch]
        )
        # One hand-off back to the loop for the whole batch.
        self._running.add_done_callback(lambda done: loop.call_soon_threadsafe(self._resolve, batch, done))

    def _infer(self, inputs: list[np.ndarray], states: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One ONNX call for the batch (worker thread): probabilities [B] and states [2, B, STATE_SIZE]."""
        feeds = {"input": np.stack(inputs), "state": np.concatenate(states, axis=1), "sr": _SR}
        output, state = self._session.run(None, feeds)
        return output[:, 0], state

    def _resolve(
        self, batch: list[_Window], done: concurrent.futures.Future[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        if self._running is done:
            self._running = None
        self.counts.calls += 1
        self.counts.windows += len(batch)
        error = done.exception()
        if error is not None:
            for window in batch:
                if not window.future.done():
                    window.future.set_exception(error)
        else:
            probabilities, states = done.result()
            for i, (window, probability) in enumerate(zip(batch, probabilities.tolist(), strict=True)):
                if not window.future.done():
                    window.future.set_result((probability, states[:, i : i + 1]))
        self._dispatch_when_due()

    async def aclose(self) -> None:
        """Stop: windows still pending are cancelled, a call in flight is waited for, the thread ends."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for window in self._pending:
            window.future.cancel()
        self._pending = []
        if self._running is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._running)
            self._running = None
        if self._executor is not None:
            # Its one thread is idle now, so it ends at once; nothing here waits for it.
            self._executor.shutdown(wait=False)
        self._executor = None
        self._loop = None


@dataclass
class _Options:
    min_speech_duration: float
    min_silence_duration: float
    prefix_padding_duration: float
    max_buffered_speech: float
    activation_threshold: float
    deactivation_threshold: float
    every_window: bool


class BatchedSileroVAD(vad.VAD):
    """Silero VAD whose streams share one batcher: the events of livekit-plugins-silero's VAD, batched.

    Loading it reads the model (blocking): construct it off the loop. `aclose()` stops the batcher.
    """

    def __init__(
        self,
        *,
        min_speech_duration: float = 0.05,
        min_silence_duration: float = 0.55,
        prefix_padding_duration: float = 0.5,
        max_buffered_speech: float = 60.0,
        activation_threshold: float = 0.5,
        deactivation_threshold: float | None = None,
        gather_s: float = 0.0,
        every_window: bool = False,
        session: onnxruntime.InferenceSession | None = None,
    ) -> None:
        """Options as `silero.VAD.load` takes them; `gather_s` is how long a tick waits for more windows.

        The plugin reports every window (INFERENCE_DONE, 31 a second per stream). Outside speech such a report
        changes nothing for AgentSession once the first has told it the caller is silent: only its metrics
        count them. So by default a quiet window is reported when it follows one that was not, and then
        once every QUIET_REPORT_S; `every_window` reports them all, as the plugin does.
        """
        super().__init__(capabilities=vad.VADCapabilities(update_interval=WINDOW / SAMPLE_RATE))
        if deactivation_threshold is not None and deactivation_threshold <= 0:
            raise ValueError("deactivation_threshold must be greater than 0")
        self._opts = _Options(
            min_speech_duration=min_speech_duration,
            min_silence_duration=min_silence_duration,
            prefix_padding_duration=prefix_padding_duration,
            max_buffered_speech=max_buffered_speech,
            activation_threshold=activation_threshold,
            deactivation_threshold=deactivation_threshold or max(activation_threshold - 0.15, 0.01),
            every_window=every_window,
        )
        self._batcher = WindowBatcher(session or load_session(), gather_s=gather_s)
        self._streams = weakref.WeakSet[BatchedSileroStream]()

    @property
    def model(self) -> str:
        """The model name metrics show."""
        return "silero"

    @property
    def provider(self) -> str:
        """The provider name metrics show."""
        return "ONNX"

    @property
    def min_silence_duration(self) -> float:
        """Silence that ends speech; AgentSession checks it against its turn detector's needs."""
        return self._opts.min_silence_duration

    @property
    def inference_counts(self) -> InferenceCounts:
        """ONNX calls made and windows judged so far."""
        return self._batcher.counts

    def stream(
        self,
        *,
        owner: vad.VAD | None = None,
        on_boundary: Callable[[vad.VADEvent], None] | None = None,
    ) -> BatchedSileroStream:
        """A stream of VAD events for the frames pushed to it.

        `owner` is the VAD its metrics are emitted on (this one unless a session's own wraps it);
        `on_boundary` is also given each START_OF_SPEECH and END_OF_SPEECH as it is sent.
        """
        stream = BatchedSileroStream(owner or self, self._opts, self._batcher, on_boundary)
        self._streams.add(stream)
        return stream

    def update_options(
        self,
        *,
        min_speech_duration: float | None = None,
        min_silence_duration: float | None = None,
        prefix_padding_duration: float | None = None,
        max_buffered_speech: float | None = None,
        activation_threshold: float | None = None,
        deactivation_threshold: float | None = None,
    ) -> None:
        """Change options for this VAD and its open streams, from their next window on."""
        old_max = self._opts.max_buffered_speech
        if min_speech_duration is not None:
            self._opts.min_speech_duration = min_speech_duration
        if min_silence_duration is not None:
            self._opts.min_silence_duration = min_silence_duration
        if prefix_padding_duration is not None:
            self._opts.prefix_padding_duration = prefix_padding_duration
        if max_buffered_speech is not None:
            self._opts.max_buffered_speech = max_buffered_speech
        if activation_threshold is not None:
            self._opts.activation_threshold = activation_threshold
        if deactivation_threshold is not None:
            self._opts.deactivation_threshold = deactivation_threshold
        for stream in self._streams:
            stream._resize_speech_buffer(grown=self._opts.max_buffered_speech > old_max)

    async def aclose(self) -> None:
        """Stop the batcher; the next window starts it again."""
        await self._batcher.aclose()


class _Samples:
    """int16 samples appended at the back and taken from the front, in one reused array."""

    def __init__(self, capacity: int) -> None:
        self._buffer = np.empty(capacity, dtype=np.int16)
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def push(self, samples: np.ndarray) -> None:
        count = len(samples)
        if self._end + count > len(self._buffer):
            held = self._end - self._start
            if held + count > len(self._buffer):
                grown = np.empty(max(2 * len(self._buffer), held + count), dtype=np.int16)
                grown[:held] = self._buffer[self._start : self._end]
                self._buffer = grown
            else:
                self._buffer[:held] = self._buffer[self._start : self._end]
            self._start, self._end = 0, held
        self._buffer[self._end : self._end + count] = samples
        self._end += count

    def take(self, count: int) -> np.ndarray:
        """Up to `count` samples from the front: a view, valid until the next push."""
        taken = self._buffer[self._start : min(self._start + count, self._end)]
        self._start += len(taken)
        if self._start == self._end:
            self._start = self._end = 0
        return taken

    def clear(self) -> None:
        self._start = self._end = 0


class BatchedSileroStream(vad.VADStream):
    """One session's VAD: its frames cut into windows for the shared batcher, and the speech state machine.

    16 kHz frames are copied once into the window; other rates are resampled to 16 kHz for the model,
    while the speech buffer and the events' frames keep the input's rate.
    """

    def __init__(
        self,
        owner: vad.VAD,
        opts: _Options,
        batcher: WindowBatcher,
        on_boundary: Callable[[vad.VADEvent], None] | None = None,
    ) -> None:
        super().__init__(owner)
        self._opts = opts
        self._batcher = batcher
        self._on_boundary = on_boundary
        self._input_rate = 0
        self._resampler: rtc.AudioResampler | None = None
        self._to_judge = _Samples(4 * WINDOW)
        """Samples at 16 kHz not yet in a window."""
        self._heard = self._to_judge
        """Samples at the input rate not yet in the speech buffer: the same queue when no resampling."""
        self._speech_buffer = np.empty(0, dtype=np.int16)
        self._speech_index = 0
        self._speech_buffer_full = False
        self._prefix_samples = 0
        self._model_input = np.zeros(CONTEXT + WINDOW, dtype=np.float32)
        self._state = np.zeros((2, 1, STATE_SIZE), dtype=np.float32)
        self._reset()

    def _reset(self) -> None:
        """Forget everything heard: a flush is a hard segment boundary."""
        self._model_input.fill(0)
        self._state = np.zeros((2, 1, STATE_SIZE), dtype=np.float32)
        self._filtered: float | None = None
        self._speech_index = 0
        self._speech_buffer_full = False
        self._speaking = False
        self._speech_duration = 0.0
        self._silence_duration = 0.0
        self._current_sample = 0
        self._timestamp = 0.0
        self._raw_speech = 0.0
        self._raw_silence = 0.0
        self._copy_fraction = 0.0
        self._extra_inference_time = 0.0
        self._quiet_reported_at: float | None = None
        """When the last INFERENCE_DONE sent was of a quiet window, its timestamp; None when it was not."""
        self._to_judge.clear()
        self._heard.clear()
        if self._resampler is not None:
            self._resampler = self._new_resampler()

    def _new_resampler(self) -> rtc.AudioResampler:
        return rtc.AudioResampler(
            input_rate=self._input_rate,
            output_rate=SAMPLE_RATE,
            # Detection does not need a good resampler, and QUICK is what the plugin uses.
            quality=rtc.AudioResamplerQuality.QUICK,
        )

    def _start(self, sample_rate: int) -> None:
        """Set up for the first frame's rate, which every later frame must keep."""
        self._input_rate = sample_rate
        self._resize_speech_buffer(grown=False)
        if sample_rate != SAMPLE_RATE:
            self._resampler = self._new_resampler()
            self._heard = _Samples(4 * WINDOW * sample_rate // SAMPLE_RATE + 1)

    def _resize_speech_buffer(self, *, grown: bool) -> None:
        if not self._input_rate:
            return
        self._prefix_samples = int(self._opts.prefix_padding_duration * self._input_rate)
        size = int(self._opts.max_buffered_speech * self._input_rate) + self._prefix_samples
        if size != len(self._speech_buffer):
            resized = np.zeros(size, dtype=np.int16)
            kept = min(size, len(self._speech_buffer))
            resized[:kept] = self._speech_buffer[:kept]
            self._speech_buffer = resized
            self._speech_index = min(self._speech_index, size)
        if grown:
            self._speech_buffer_full = False

    async def _main_task(self) -> None:
        with self._batcher.attached():
            await self._listen()

    async def _listen(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, vad.VADStream._FlushSentinel):
                self._reset()
                continue
            if not self._input_rate:
                self._start(item.sample_rate)
            elif item.sample_rate != self._input_rate:
                log.error("vad_frame_rate_changed", rate=self._input_rate, frame_rate=item.sample_rate)
                continue
            # Mono, as room audio is (so is the plugin's assumption).
            samples = np.frombuffer(item.data, dtype=np.int16)
            if self._resampler is None:
                self._to_judge.push(samples)
            else:
                self._heard.push(samples)
                for resampled in self._resampler.push(item):
                    self._to_judge.push(np.frombuffer(resampled.data, dtype=np.int16))
            while len(self._to_judge) >= WINDOW:
                await self._judge_window()

    async def _judge_window(self) -> None:
        started = time.perf_counter()
        window = self._to_judge.take(WINDOW)
        np.divide(window, INT16_MAX, out=self._model_input[CONTEXT:], dtype=np.float32)
        # The input samples this window stands for; at another rate, fractions carry over so nothing drifts.
        to_copy = WINDOW * self._input_rate / SAMPLE_RATE + self._copy_fraction
        to_copy_int = int(to_copy)
        self._copy_fraction = to_copy - to_copy_int
        heard = window if self._heard is self._to_judge else self._heard.take(to_copy_int)
        room = len(self._speech_buffer) - self._speech_index
        copied = min(len(heard), room)
        if copied > 0:
            self._speech_buffer[self._speech_index : self._speech_index + copied] = heard[:copied]
            self._speech_index += copied
        elif not self._speech_buffer_full:
            self._speech_buffer_full = True
            log.warning("vad_speech_buffer_filled", max_buffered_speech_s=self._opts.max_buffered_speech)

        raw, self._state = await self._batcher.submit(self._model_input, self._state)
        self._model_input[:CONTEXT] = self._model_input[-CONTEXT:]
        if self._filtered is None:
            self._filtered = raw
        else:
            self._filtered = EXP_ALPHA * self._filtered + (1 - EXP_ALPHA) * raw
        probability = self._filtered
        self._on_probability(probability, heard, time.perf_counter() - started)

    def _on_probability(self, probability: float, heard: np.ndarray, inference_duration: float) -> None:
        """The speech state machine of livekit-plugins-silero, one window at a time."""
        opts = self._opts
        window_duration = WINDOW / SAMPLE_RATE
        self._current_sample += WINDOW
        self._timestamp += window_duration
        self._extra_inference_time = max(
            0.0, self._extra_inference_time + inference_duration - window_duration
        )
        if inference_duration > SLOW_INFERENCE_S:
            log.warning("vad_inference_lagged", delay_s=round(self._extra_inference_time, 3))

        if self._speaking:
            self._speech_duration += window_duration
        else:
            self._silence_duration += window_duration
        if self._should_report():
            self._send(
                vad.VADEventType.INFERENCE_DONE,
                probability=probability,
                inference_duration=inference_duration,
                frames=[
                    rtc.AudioFrame(
                        data=heard.tobytes(),
                        sample_rate=self._input_rate,
                        num_channels=1,
                        samples_per_channel=len(heard),
                    )
                ],
                raw_accumulated_silence=self._raw_silence,
                raw_accumulated_speech=self._raw_speech,
            )

        if probability >= opts.activation_threshold or (
            self._speaking and probability > opts.deactivation_threshold
        ):
            self._raw_speech += window_duration
            self._raw_silence = 0.0
            if not self._speaking and self._raw_speech >= opts.min_speech_duration:
                self._speaking = True
                self._silence_duration = 0.0
                self._speech_duration = self._raw_speech
                self._send(vad.VADEventType.START_OF_SPEECH, frames=[self._speech()])
        else:
            self._raw_silence += window_duration
            self._raw_speech = 0.0
            if not self._speaking:
                self._keep_prefix_only()
            if self._speaking and self._raw_silence >= opts.min_silence_duration:
                self._speaking = False
                self._silence_duration = self._raw_silence
                self._send(
                    vad.VADEventType.END_OF_SPEECH,
                    speech_duration=max(0.0, self._speech_duration - self._raw_silence),
                    frames=[self._speech()],
                )
                self._speech_duration = 0.0
                self._keep_prefix_only()

    def _should_report(self) -> bool:
        """Whether this window's INFERENCE_DONE is sent (see BatchedSileroVAD's `every_window`)."""
        quiet = not self._speaking and self._raw_speech == 0.0
        if self._opts.every_window or not quiet:
            self._quiet_reported_at = None
            return True
        last = self._quiet_reported_at
        if last is not None and self._timestamp - last < QUIET_REPORT_S - 1e-9:
            return False
        self._quiet_reported_at = self._timestamp
        return True

    def _send(
        self,
        kind: vad.VADEventType,
        *,
        frames: list[rtc.AudioFrame],
        speech_duration: float | None = None,
        probability: float = 0.0,
        inference_duration: float = 0.0,
        raw_accumulated_silence: float = 0.0,
        raw_accumulated_speech: float = 0.0,
    ) -> None:
        event = vad.VADEvent(
            type=kind,
            samples_index=self._current_sample,
            timestamp=self._timestamp,
            silence_duration=self._silence_duration,
            speech_duration=self._speech_duration if speech_duration is None else speech_duration,
            frames=frames,
            probability=probability,
            inference_duration=inference_duration,
            speaking=self._speaking,
            raw_accumulated_silence=raw_accumulated_silence,
            raw_accumulated_speech=raw_accumulated_speech,
        )
        self._event_ch.send_nowait(event)
        if self._on_boundary is not None and kind is not vad.VADEventType.INFERENCE_DONE:
            self._on_boundary(event)

    def _speech(self) -> rtc.AudioFrame:
        """The speech buffer so far (prefix padding, then speech), copied."""
        return rtc.AudioFrame(
            data=self._speech_buffer[: self._speech_index].tobytes(),
            sample_rate=self._input_rate,
            num_channels=1,
            samples_per_channel=self._speech_index,
        )

    def _keep_prefix_only(self) -> None:
        """Outside speech, the buffer keeps only the last prefix padding's worth, moved to its front."""
        if self._speech_index <= self._prefix_samples:
            return
        start = self._speech_index - self._prefix_samples
        self._speech_buffer[: self._prefix_samples] = self._speech_buffer[start : self._speech_index]
        self._speech_buffer_full = False
        self._speech_index = self._prefix_samples
