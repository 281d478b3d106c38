// The voicebot test page: pick an agent, talk to it through LiveKit, read the transcript.
// Plain JavaScript on the vendored livekit-client UMD build (window.LivekitClient); no build step.

import { fetchWithKey } from "./api-key.js";

const LK = window.LivekitClient;

const TRANSCRIPTION_TOPIC = "lk.transcription";
const AGENT_STATE_ATTRIBUTE = "lk.agent.state";
const STATE_LABELS = {
  initializing: "starting",
  idle: "idle",
  listening: "listening",
  thinking: "thinking",
  speaking: "speaking",
};
// RMS above which a frame counts as voice. The meters show the same numbers scaled up.
const VOICE_RMS = 0.01;
const METER_GAIN = 4;
// The agent's sound must follow this much quiet to count as the start of a reply.
const AGENT_QUIET_MS = 400;
// The levels are read this often, each reading the newest ANALYSER_SIZE samples. A reading that holds voice
// also says where in those samples the voice starts or ends, so the latencies are timed to the sample, not
// to the reading: timing them by the reading, as the page first did, moved each end by up to one interval.
const LEVEL_INTERVAL_MS = 20;
const ANALYSER_SIZE = 2048;
// How often the agent's audio path is read from WebRTC's statistics (network, jitter buffer, playout).
const STATS_INTERVAL_MS = 1000;

const el = {
  agent: document.getElementById("agent"),
  description: document.getElementById("agent-description"),
  connect: document.getElementById("connect"),
  disconnect: document.getElementById("disconnect"),
  status: document.getElementById("status"),
  agentState: document.getElementById("agent-state"),
  micLevel: document.getElementById("mic-level"),
  agentLevel: document.getElementById("agent-level"),
  latency: document.getElementById("latency"),
  greetingLatency: document.getElementById("greeting-latency"),
  mediaStats: document.getElementById("media-stats"),
  transcript: document.getElementById("transcript"),
};

/** The call in progress, or null between calls. */
let call = null;
let agents = [];

function showStatus(kind, message) {
  el.status.dataset.kind = kind;
  el.status.textContent = message;
}

function setControls({ connecting = false } = {}) {
  const inCall = call !== null;
  el.connect.disabled = connecting || inCall || agents.length === 0;
  el.disconnect.disabled = !inCall;
  el.agent.disabled = connecting || inCall || agents.length === 0;
}

function setAgentState(state) {
  el.agentState.dataset.state = state;
  el.agentState.textContent = STATE_LABELS[state] ?? state;
}

/** An error the page can explain to a person. */
class PageError extends Error {}

async function apiRequest(method, path, body) {
  let response;
  try {
    response = await fetchWithKey(
      path,
      {
        method,
        headers: body === undefined ? {} : { "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      },
      showStatus,
    );
  } catch {
    throw new PageError("The voicebot server cannot be reached. Is it running?");
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // An answer that is not JSON is explained below by its status alone.
  }
  if (response.ok) {
    return payload;
  }
  if (response.status === 503 && payload?.error?.code === "at_capacity") {
    const wait = Number(response.headers.get("Retry-After")) || 5;
    throw new PageError(`All agents are busy right now. Please try again in ${wait} seconds.`);
  }
  const reason = payload?.error?.message ?? `the server answered ${response.status}`;
  throw new PageError(`The call could not start: ${reason}`);
}

async function loadAgents() {
  try {
    const payload = await apiRequest("GET", "/api/agents");
    agents = payload.agents;
  } catch (error) {
    el.agent.replaceChildren(new Option("No agents", ""));
    showStatus("error", messageOf(error, "The agents could not be loaded."));
    return;
  }
  el.agent.replaceChildren(...agents.map((a) => new Option(a.name, a.id)));
  if (agents.length === 0) {
    el.agent.replaceChildren(new Option("No agents", ""));
    showStatus("warning", "No agents are defined in config.toml.");
  } else {
    showStatus("info", "Pick an agent and press Connect.");
  }
  describeAgent();
  setControls();
}

function describeAgent() {
  const agent = agents.find((a) => a.id === el.agent.value);
  el.description.textContent = agent?.description ?? "";
}

function messageOf(error, fallback) {
  return error instanceof PageError ? error.message : fallback;
}

function microphoneMessage(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was refused. Allow the microphone for this page in the browser's site settings, then press Connect again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one, then press Connect again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone could not be opened: another program may be using it.";
    default:
      return "The microphone could not be opened.";
  }
}

async function openMicrophone() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new PageError("This browser allows the microphone only on https:// pages or on localhost.");
  }
  try {
    return await LK.createLocalAudioTrack({ echoCancellation: true, noiseSuppression: true, autoGainControl: true });
  } catch (error) {
    throw new PageError(microphoneMessage(error));
  }
}

/**
 * An analyser's newest samples: their level as RMS in 0..1, and how many milliseconds before the newest
 * sample the first and the last sample louder than VOICE_RMS lie (null when none is).
 */
function readLevel({ analyser, buffer }) {
  analyser.getFloatTimeDomainData(buffer);
  let sum = 0;
  let first = -1;
  let last = -1;
  for (let i = 0; i < buffer.length; i++) {
    const sample = buffer[i];
    sum += sample * sample;
    if (Math.abs(sample) > VOICE_RMS) {
      if (first < 0) {
        first = i;
      }
      last = i;
    }
  }
  const msBefore = (i) => (i < 0 ? null : ((buffer.length - 1 - i) * 1000) / analyser.context.sampleRate);
  return { rms: Math.sqrt(sum / buffer.length), firstAgoMs: msBefore(first), lastAgoMs: msBefore(last) };
}

function analyserFor(audioContext, mediaStreamTrack) {
  const source = audioContext.createMediaStreamSource(new MediaStream([mediaStreamTrack]));
  const analyser = audioContext.createAnalyser();
  analyser.fftSize = ANALYSER_SIZE;
  source.connect(analyser);
  return { analyser, buffer: new Float32Array(analyser.fftSize) };
}

/** A latency on an output: its text, and its number of ms in data-ms for anything that reads the page. */
function showLatency(output, ms) {
  output.value = `${ms} ms`;
  output.dataset.ms = String(ms);
}

function clearLatency(output) {
  output.value = "–";
  for (const key of Object.keys(output.dataset)) {
    delete output.dataset[key];
  }
}

/** Wall-clock milliseconds of a performance.now() time, to line the page's times up with the server's. */
function epochMs(pageMs) {
  return Math.round(performance.timeOrigin + pageMs);
}

const NO_AUDIO_YET = { jitterDelay: 0, jitterTarget: 0, emitted: 0, playoutDelay: 0, playoutSamples: 0 };

/** The agent's audio path as WebRTC's statistics describe it, from the receiver of its track. */
class AudioPathStats {
  constructor() {
    this.previous = null;
  }

  /** Numbers in ms over the time since the last reading (call-long averages on the first), or null. */
  read(report) {
    let inbound = null;
    let playout = null;
    let pair = null;
    const byId = new Map();
    report.forEach((stat) => {
      byId.set(stat.id, stat);
      if (stat.type === "inbound-rtp" && stat.kind === "audio") {
        inbound = stat;
      }
    });
    if (inbound === null) {
      return null;
    }
    playout = byId.get(inbound.playoutId) ?? null;
    const transport = byId.get(inbound.transportId);
    pair = byId.get(transport?.selectedCandidatePairId) ?? null;
    const now = {
      jitterDelay: inbound.jitterBufferDelay ?? 0,
      jitterTarget: inbound.jitterBufferTargetDelay ?? 0,
      emitted: inbound.jitterBufferEmittedCount ?? 0,
      playoutDelay: playout?.totalPlayoutDelay ?? 0,
      playoutSamples: playout?.totalSamplesCount ?? 0,
    };
    const before = this.previous ?? NO_AUDIO_YET;
    this.previous = now;
    const per = (delay, count) => (count > 0 ? Math.round((delay * 1000) / count) : null);
    const emitted = now.emitted - before.emitted;
    return {
      rttMs: pair?.currentRoundTripTime === undefined ? null : Math.round(pair.currentRoundTripTime * 1000),
      jitterBufferMs: per(now.jitterDelay - before.jitterDelay, emitted),
      jitterTargetMs: per(now.jitterTarget - before.jitterTarget, emitted),
      playoutMs: per(now.playoutDelay - before.playoutDelay, now.playoutSamples - before.playoutSamples),
      packetsReceived: inbound.packetsReceived ?? 0,
    };
  }
}

/**
 * One call: the room, the microphone, the meters and the latencies.
 *
 * Latencies are measured here, in the page, as the person lives them. The greeting's: from pressing Connect
 * to the agent's first sound. Each turn's: from the last sample of the microphone louder than VOICE_RMS to
 * the first such sample of the agent's reply after it. Both ends are read from the same AudioContext, so
 * whatever delay it adds to the samples it shows the page cancels out of a turn's latency.
 */
class Call {
  constructor(audioContext, microphone, connectPressedAt) {
    this.audioContext = audioContext;
    this.microphone = microphone;
    this.connectPressedAt = connectPressedAt;
    this.room = new LK.Room();
    this.roomName = null;
    this.micSid = null;
    this.agentIdentity = null;
    this.mic = analyserFor(audioContext, microphone.mediaStreamTrack);
    this.agentAudio = null;
    this.agentTrack = null;
    this.agentStats = new AudioPathStats();
    this.audioElements = [];
    this.lastVoiceAt = null;
    this.lastVoicePolledAt = null;
    this.userSpokeSinceReply = false;
    this.agentQuietSince = performance.now();
    this.greetingHeard = false;
    this.firstAgentLine = null;
    this.lines = new Map();
    /** Latencies measured before the agent's line they belong to arrived. */
    this.unplacedLatencies = [];
    this.lastUserLine = null;
    this.ended = false;
    this.timer = setInterval(() => this.measure(), LEVEL_INTERVAL_MS);
    this.statsTimer = setInterval(() => {
      this.readStats().catch(() => {
        // A reading cut by a disconnect is simply missing; the next call starts afresh.
      });
    }, STATS_INTERVAL_MS);
  }

  async start(agentId) {
    const access = await apiRequest("POST", "/api/livekit/create-room", { agent_id: agentId });
    this.roomName = access.room_name;
    this.listen();
    showStatus("info", "Joining the room…");
    try {
      await this.room.connect(access.livekit_url, access.access_token);
    } catch {
      throw new PageError("The LiveKit server could not be reached, so the call could not start.");
    }
    const publication = await this.room.localParticipant.publishTrack(this.microphone);
    this.micSid = publication.trackSid;
    await this.room.startAudio();
    const agent = [...this.room.remoteParticipants.values()].find((p) => p.isAgent);
    if (agent) {
      this.agentJoined(agent);
    } else {
      showStatus("info", "Connected. Waiting for the agent…");
    }
  }

  listen() {
    const E = LK.RoomEvent;
    this.room
      .on(E.ParticipantConnected, (p) => p.isAgent && this.agentJoined(p))
      .on(E.ParticipantDisconnected, (p) => {
        if (p.identity === this.agentIdentity) {
          showStatus("warning", "The agent left the call.");
          setAgentState("disconnected");
        }
      })
      .on(E.ParticipantAttributesChanged, (_changed, p) => {
        if (p.identity === this.agentIdentity) {
          this.showAgentState(p);
        }
      })
      .on(E.TrackSubscribed, (track, _pub, p) => {
        if (track.kind === LK.Track.Kind.Audio) {
          this.playAgentAudio(track, p);
        }
      })
      // The signalling link alone may drop first (SignalReconnecting); either way the person waits.
      .on(E.SignalReconnecting, () => showStatus("warning", "The connection was lost. Reconnecting…"))
      .on(E.Reconnecting, () => showStatus("warning", "The connection was lost. Reconnecting…"))
      .on(E.Reconnected, () => showStatus("ok", "Reconnected."))
      .on(E.AudioPlaybackStatusChanged, () => {
        if (!this.room.canPlaybackAudio) {
          showStatus("warning", "The browser blocked the agent's audio. Press Disconnect and Connect again.");
        }
      })
      .on(E.Disconnected, (reason) => this.disconnected(reason));
    this.room.registerTextStreamHandler(TRANSCRIPTION_TOPIC, (reader, sender) => {
      this.readTranscription(reader, sender).catch(() => {
        // A stream cut by a disconnect keeps the text it had; nothing to tell the person.
      });
    });
  }

  agentJoined(participant) {
    this.agentIdentity = participant.identity;
    showStatus("ok", `Connected to ${participant.name || "the agent"}. Speak when you are ready.`);
    this.showAgentState(participant);
  }

  showAgentState(participant) {
    setAgentState(participant.attributes[AGENT_STATE_ATTRIBUTE] ?? "initializing");
  }

  playAgentAudio(track, participant) {
    // Chrome feeds a remote WebRTC track to Web Audio only while a media element plays it.
    const audio = track.attach();
    audio.hidden = true;
    document.body.append(audio);
    this.audioElements.push(audio);
    if (participant.isAgent) {
      this.agentAudio = analyserFor(this.audioContext, track.mediaStreamTrack);
      this.agentTrack = track;
    }
  }

  measure() {
    const now = performance.now();
    const mic = readLevel(this.mic);
    el.micLevel.value = Math.min(1, mic.rms * METER_GAIN);
    if (mic.rms > VOICE_RMS) {
      this.lastVoiceAt = now - mic.lastAgoMs;
      this.lastVoicePolledAt = now;
      this.userSpokeSinceReply = true;
    }
    if (!this.agentAudio) {
      return;
    }
    const agent = readLevel(this.agentAudio);
    el.agentLevel.value = Math.min(1, agent.rms * METER_GAIN);
    el.agentLevel.dataset.peak = String(Math.max(Number(el.agentLevel.dataset.peak), agent.rms));
    if (agent.rms <= VOICE_RMS) {
      this.agentQuietSince ??= now;
      return;
    }
    const replyStarts = this.agentQuietSince !== null && now - this.agentQuietSince >= AGENT_QUIET_MS;
    this.agentQuietSince = null;
    const soundAt = now - agent.firstAgoMs;
    if (!this.greetingHeard) {
      // The first sound of the call is the greeting, whatever the person said before it.
      this.greetingHeard = true;
      this.userSpokeSinceReply = false;
      const greetingMs = Math.max(0, Math.round(soundAt - this.connectPressedAt));
      showLatency(el.greetingLatency, greetingMs);
      this.placeLatency(greetingMs);
      return;
    }
    if (replyStarts && this.userSpokeSinceReply && this.lastVoiceAt !== null) {
      const latencyMs = Math.max(0, Math.round(soundAt - this.lastVoiceAt));
      showLatency(el.latency, latencyMs);
      // When each end was, on the wall clock (to line the turn up with the server's own times), and the
      // same turn timed by the readings alone, the page's first method.
      el.latency.dataset.voiceEndedAt = String(epochMs(this.lastVoiceAt));
      el.latency.dataset.replyAt = String(epochMs(soundAt));
      el.latency.dataset.byReadingMs = String(Math.round(now - this.lastVoicePolledAt));
      this.userSpokeSinceReply = false;
      this.placeLatency(latencyMs);
    }
  }

  /** Show a latency on the agent's line it belongs to: the newest one since the person last spoke. */
  placeLatency(ms) {
    const lines = [...this.lines.values()];
    const newest = lines.findLast((line) => line.dataset.speaker === "agent");
    const current =
      newest !== undefined &&
      newest.dataset.ms === undefined &&
      (this.lastUserLine === null || lines.indexOf(newest) > lines.indexOf(this.lastUserLine));
    if (current) {
      this.labelLine(newest, ms);
    } else {
      this.unplacedLatencies.push(ms);
    }
  }

  labelLine(line, ms) {
    line.dataset.ms = String(ms);
    const badge = document.createElement("span");
    badge.className = "latency";
    badge.title =
      line === this.firstAgentLine
        ? "From pressing Connect to the greeting's first sound"
        : "From the end of your speech to this reply's first sound";
    badge.textContent = `${ms} ms`;
    line.querySelector("time").after(badge);
  }

  async readStats() {
    const report = await this.agentTrack?.getRTCStatsReport();
    if (!report || this.ended) {
      return;
    }
    const stats = this.agentStats.read(report);
    if (stats === null) {
      return;
    }
    const parts = [];
    const data = el.mediaStats.dataset;
    for (const [key, label] of [
      ["rttMs", "round trip"],
      ["jitterBufferMs", "jitter buffer"],
      ["playoutMs", "playout"],
    ]) {
      if (stats[key] !== null) {
        parts.push(`${label} ${stats[key]} ms`);
        data[key] = String(stats[key]);
      }
    }
    if (stats.jitterTargetMs !== null) {
      data.jitterTargetMs = String(stats.jitterTargetMs);
    }
    data.packetsReceived = String(stats.packetsReceived);
    data.at = String(epochMs(performance.now()));
    el.mediaStats.value = parts.join(" · ") || "–";
  }

  async readTranscription(reader, sender) {
    const attributes = reader.info.attributes ?? {};
    const trackSid = attributes["lk.transcribed_track_id"];
    const segmentId = attributes["lk.segment_id"] ?? reader.info.id;
    const mine = sender.identity === this.room.localParticipant.identity || (trackSid && trackSid === this.micSid);
    const line = this.lineFor(segmentId, mine ? "you" : "agent");
    line.dataset.final = attributes["lk.transcription_final"] === "false" ? "false" : "true";
    // Each stream carries its segment from the start, so its own text replaces what an earlier
    // (interim) stream of the same segment showed.
    let text = "";
    for await (const chunk of reader) {
      text += chunk;
      line.querySelector(".text").textContent = text;
      el.transcript.scrollTop = el.transcript.scrollHeight;
    }
    if (!mine) {
      // The agent's text arrives as one stream per segment, complete when the stream closes.
      line.dataset.final = "true";
    }
  }

  lineFor(segmentId, speaker) {
    let line = this.lines.get(segmentId);
    if (line) {
      return line;
    }
    line = this.newLine(speaker);
    this.lines.set(segmentId, line);
    if (speaker === "you") {
      this.lastUserLine = line;
    } else {
      this.firstAgentLine ??= line;
      const early = this.unplacedLatencies.shift();
      if (early !== undefined) {
        this.labelLine(line, early);
      }
    }
    return line;
  }

  newLine(speaker) {
    const now = new Date();
    const line = document.createElement("li");
    line.dataset.speaker = speaker;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = speaker === "you" ? "You" : "Agent";
    const time = document.createElement("time");
    time.dateTime = now.toISOString();
    time.textContent = now.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    const text = document.createElement("span");
    text.className = "text";
    line.append(who, time, text);
    el.transcript.append(line);
    return line;
  }

  disconnected(reason) {
    const R = LK.DisconnectReason;
    if (reason === R.CLIENT_INITIATED) {
      showStatus("info", "Disconnected. Pick an agent and press Connect to talk again.");
    } else if (reason === R.ROOM_DELETED) {
      showStatus("info", "The agent ended the call.");
    } else {
      showStatus("warning", "The call was cut off and could not reconnect. Press Connect to start a new one.");
    }
    this.release();
  }

  /** Stop everything the call holds: the microphone, the audio, the timer. Safe to call twice. */
  release() {
    if (this.ended) {
      return;
    }
    this.ended = true;
    clearInterval(this.timer);
    clearInterval(this.statsTimer);
    this.microphone.stop();
    for (const audio of this.audioElements) {
      audio.remove();
    }
    this.audioContext.close().catch(() => {});
    el.micLevel.value = 0;
    el.agentLevel.value = 0;
    setAgentState("disconnected");
    if (call === this) {
      call = null;
    }
    setControls();
  }

  async leave() {
    await this.room.disconnect();
    this.release();
  }
}

async function connect() {
  const agentId = el.agent.value;
  if (!agentId) {
    showStatus("warning", "Pick an agent first.");
    return;
  }
  // The greeting's latency counts from here: the person pressed Connect.
  const connectPressedAt = performance.now();
  // Created inside the click, so the browser lets the agent's audio play.
  const audioContext = new AudioContext();
  setControls({ connecting: true });
  showStatus("info", "Opening the microphone…");
  let microphone;
  try {
    microphone = await openMicrophone();
  } catch (error) {
    audioContext.close().catch(() => {});
    showStatus("error", messageOf(error, "The microphone could not be opened."));
    setControls();
    return;
  }
  const attempt = new Call(audioContext, microphone, connectPressedAt);
  call = attempt;
  setControls({ connecting: true });
  el.transcript.replaceChildren();
  clearLatency(el.latency);
  clearLatency(el.greetingLatency);
  clearLatency(el.mediaStats);
  el.agentLevel.dataset.peak = "0";
  try {
    await attempt.start(agentId);
  } catch (error) {
    await attempt.room.disconnect();
    attempt.release();
    if (attempt.roomName) {
      // The room and its agent exist already; ask the server to end them rather than wait for timeouts.
      apiRequest("DELETE", `/api/sessions/${encodeURIComponent(attempt.roomName)}`).catch(() => {});
    }
    showStatus("error", messageOf(error, "The call could not start."));
  }
  setControls();
}

async function disconnect() {
  if (call) {
    el.disconnect.disabled = true;
    await call.leave();
  }
}

el.agent.addEventListener("change", describeAgent);
el.connect.addEventListener("click", () => {
  connect();
});
el.disconnect.addEventListener("click", () => {
  disconnect();
});

if (!LK) {
  showStatus("error", "The LiveKit client library is missing: run `make run` to fetch it.");
} else {
  // The page says what went wrong in words; the SDK's own logs are for debugging: add ?debug to the URL.
  LK.setLogLevel(new URLSearchParams(location.search).has("debug") ? "debug" : "silent");
  loadAgents();
}
