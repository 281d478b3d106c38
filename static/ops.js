// The voicebot operator page: live sessions with their transcripts, recently ended sessions, and the last
// hour's latencies and live counts drawn as inline SVG. Plain JavaScript, no build step, no chart library.

import { fetchWithKey } from "./api-key.js";

// How often the sessions and the hour are read again, and a shown transcript of a live session.
const REFRESH_MS = 2000;
const STATE_LABELS = {
  starting: "starting",
  initializing: "starting",
  idle: "idle",
  listening: "listening",
  thinking: "thinking",
  speaking: "speaking",
  ended: "ended",
};
const SVG = "http://www.w3.org/2000/svg";
// The plots are drawn in CSS pixels at the width they are shown, so their text is the page's size; these
// are their height and the margins around the drawing area, for the axes' labels and the legend.
const PLOT = { height: 170, left: 64, right: 16, top: 24, bottom: 26 };

const el = {
  status: document.getElementById("status"),
  liveCount: document.getElementById("live-count"),
  live: document.querySelector("#live-sessions tbody"),
  noLive: document.getElementById("no-live"),
  ended: document.querySelector("#ended-sessions tbody"),
  noEnded: document.getElementById("no-ended"),
  firstWord: document.getElementById("plot-first-word"),
  turn: document.getElementById("plot-turn"),
  liveSessions: document.getElementById("plot-live"),
};

/** The server's clock minus this browser's, in seconds, so durations tick from the server's start times. */
let clockOffset = 0;
/** Live sessions by session id, as last listed: their rows and start times. */
const liveRows = new Map();
/** Ended sessions by session id: their rows. */
const endedRows = new Map();
/** Transcripts shown, by session id: the row that holds it, its list and the room to read it from. */
const transcripts = new Map();

function showStatus(kind, message) {
  el.status.dataset.kind = kind;
  el.status.textContent = message;
}

/** An error the page can explain to a person. */
class PageError extends Error {}

async function getJson(path) {
  let response;
  try {
    response = await fetchWithKey(path, { method: "GET", headers: {} }, showStatus);
  } catch {
    throw new PageError("The voicebot server cannot be reached. Trying again…");
  }
  const payload = await response.json().catch(() => null);
  if (!response.ok) {
    const reason = payload?.error?.message ?? `the server answered ${response.status}`;
    throw new PageError(`${path}: ${reason}`);
  }
  return payload;
}

function serverNow() {
  return Date.now() / 1000 + clockOffset;
}

function formatDuration(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

function formatTime(unixSeconds) {
  return new Date((unixSeconds - clockOffset) * 1000).toLocaleTimeString([], { hour12: false });
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function formatMs(seconds) {
  return `${Math.round(seconds * 1000)} ms`;
}

function cell(className, text = "") {
  const td = document.createElement("td");
  td.className = className;
  td.textContent = text;
  return td;
}

function transcriptButton(sessionId, room) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "expander";
  button.textContent = "Transcript";
  button.setAttribute("aria-expanded", String(transcripts.has(sessionId)));
  button.addEventListener("click", () => toggleTranscript(sessionId, room, button));
  const td = cell("actions");
  td.append(button);
  return td;
}

/** Puts `rows` into `tbody` in this order, moving only what is out of place (a moved button loses focus). */
function placeRows(tbody, rows) {
  const wanted = [];
  for (const row of rows) {
    wanted.push(row);
    const shown = transcripts.get(row.dataset.session);
    if (shown) {
      wanted.push(shown.row);
    }
  }
  wanted.forEach((row, index) => {
    if (tbody.children[index] !== row) {
      tbody.insertBefore(row, tbody.children[index] ?? null);
    }
  });
  while (tbody.children.length > wanted.length) {
    tbody.lastElementChild.remove();
  }
}

function renderLive(sessions, endedIds) {
  // A session the hour lists as ended is ended, whichever answer came first.
  const live = sessions.filter((s) => !endedIds.has(s.session_id));
  const rows = live.map((session) => {
    let entry = liveRows.get(session.session_id);
    if (!entry) {
      const row = document.createElement("tr");
      row.dataset.session = session.session_id;
      row.dataset.room = session.room_name;
      const state = document.createElement("span");
      state.className = "state";
      const stateCell = cell("state-cell");
      stateCell.append(state);
      row.append(
        cell("room", session.room_name),
        cell("agent", session.agent_id),
        stateCell,
        cell("duration"),
        transcriptButton(session.session_id, session.room_name),
      );
      entry = { row, state, duration: row.querySelector(".duration"), startedAt: session.started_at };
      liveRows.set(session.session_id, entry);
    }
    entry.state.dataset.state = session.state;
    entry.state.textContent = STATE_LABELS[session.state] ?? session.state;
    entry.duration.textContent = formatDuration(serverNow() - entry.startedAt);
    return entry.row;
  });
  const ids = new Set(live.map((s) => s.session_id));
  for (const id of liveRows.keys()) {
    if (!ids.has(id)) {
      liveRows.delete(id);
    }
  }
  placeRows(el.live, rows);
  el.noLive.hidden = live.length > 0;
  el.liveCount.textContent = `(${live.length})`;
}

function tickDurations() {
  for (const entry of liveRows.values()) {
    entry.duration.textContent = formatDuration(serverNow() - entry.startedAt);
  }
}

function renderEnded(ended) {
  const rows = ended.map((session) => {
    let row = endedRows.get(session.session_id);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.session = session.session_id;
      row.dataset.room = session.room_name;
      const reason = cell("reason");
      const code = document.createElement("span");
      code.className = "reason-code";
      code.dataset.reason = session.end_reason;
      code.textContent = session.end_reason;
      reason.append(code);
      if (session.error) {
        reason.append(` ${session.error}`);
      }
      row.append(
        cell("ended-at", formatTime(session.ended_at)),
        cell("room", session.room_name),
        cell("agent", session.agent_id),
        cell("duration", formatDuration(session.duration_s)),
        reason,
        transcriptButton(session.session_id, session.room_name),
      );
      endedRows.set(session.session_id, row);
    }
    return row;
  });
  const ids = new Set(ended.map((s) => s.session_id));
  for (const id of endedRows.keys()) {
    if (!ids.has(id)) {
      endedRows.delete(id);
    }
  }
  placeRows(el.ended, rows);
  el.noEnded.hidden = ended.length > 0;
}

function toggleTranscript(sessionId, room, button) {
  const shown = transcripts.get(sessionId);
  // The same session may have a button in both tables for a moment; each says the same.
  const buttons = () => document.querySelectorAll(`tr[data-session="${CSS.escape(sessionId)}"] .expander`);
  if (shown) {
    transcripts.delete(sessionId);
    shown.row.remove();
    buttons().forEach((b) => b.setAttribute("aria-expanded", "false"));
    return;
  }
  const row = document.createElement("tr");
  row.className = "transcript-row";
  row.dataset.session = `${sessionId}:transcript`;
  const td = document.createElement("td");
  td.colSpan = 6;
  const list = document.createElement("ol");
  list.className = "transcript";
  list.setAttribute("aria-label", `Transcript of ${room}`);
  list.setAttribute("aria-live", "polite");
  td.append(list);
  row.append(td);
  const entry = { row, list, room, done: false };
  transcripts.set(sessionId, entry);
  button.closest("tr").after(row);
  buttons().forEach((b) => b.setAttribute("aria-expanded", "true"));
  readTranscript(entry);
}

async function readTranscript(entry) {
  let payload;
  try {
    payload = await getJson(`/api/sessions/${encodeURIComponent(entry.room)}/transcript`);
  } catch (error) {
    const item = document.createElement("li");
    item.className = "hint";
    item.textContent = error instanceof PageError ? error.message : "The transcript could not be read.";
    entry.list.replaceChildren(item);
    return;
  }
  entry.list.replaceChildren(
    ...payload.lines.map((line) => {
      const item = document.createElement("li");
      item.dataset.speaker = line.speaker;
      const time = document.createElement("time");
      time.textContent = formatTime(line.at);
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = line.speaker === "agent" ? "Agent" : "Caller";
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = line.text;
      item.append(time, who, text);
      return item;
    }),
  );
  if (payload.lines.length === 0) {
    const item = document.createElement("li");
    item.className = "hint";
    item.textContent = "Nothing said yet.";
    entry.list.replaceChildren(item);
  }
  // An ended session's transcript does not change any more.
  entry.done = !payload.live;
}

// Plots.

function svg(name, attributes = {}, text = undefined) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) {
    node.setAttribute(key, String(value));
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value`. */
function niceCeiling(value) {
  if (value <= 0) {
    return 1;
  }
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) {
      return step * power;
    }
  }
  return 10 * power;
}

/** A plot's frame: `root` sized to its shown width, with grid lines, labels and scales for `buckets`. */
function frame(root, buckets, top, label) {
  const width = Math.max(280, Math.round(root.getBoundingClientRect().width) || 640);
  const { height, left, right, bottom } = PLOT;
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.replaceChildren();
  const innerWidth = width - left - right;
  const innerHeight = height - PLOT.top - bottom;
  const step = innerWidth / buckets.length;
  const x = (index) => left + (index + 0.5) * step;
  const y = (value) => PLOT.top + innerHeight * (1 - value / top);
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    root.append(
      svg("line", { class: "grid", x1: left, x2: width - right, y1: y(value), y2: y(value) }),
      svg("text", { class: "tick", x: left - 8, y: y(value) + 4, "text-anchor": "end" }, label(value)),
    );
  }
  // Minutes ago, every quarter of an hour (every half on a narrow screen), "now" at the newest minute.
  for (const ago of innerWidth < 450 ? [60, 30, 0] : [60, 45, 30, 15, 0]) {
    const index = Math.min(buckets.length - 1, buckets.length - ago);
    root.append(
      svg(
        "text",
        { class: "tick", x: x(index), y: height - 6, "text-anchor": ago === 0 ? "end" : "middle" },
        ago === 0 ? "now" : `−${ago} min`,
      ),
    );
  }
  return { x, y, step, width };
}

function legend(root, width) {
  let at = width - PLOT.right;
  for (const percentile of ["p95", "p50"]) {
    const label = svg("text", { class: "tick", x: at, y: 12, "text-anchor": "end" }, percentile);
    root.append(label);
    at -= 8 + percentile.length * 7;
    root.append(svg("line", { class: `series ${percentile}`, x1: at - 22, x2: at, y1: 8, y2: 8 }));
    at -= 34;
  }
}

function latencyLabel(seconds) {
  return seconds >= 1 ? `${Number(seconds.toFixed(2))} s` : `${Math.round(seconds * 1000)} ms`;
}

function minuteName(bucket) {
  return new Date((bucket.start - clockOffset) * 1000).toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  });
}

function emptyNote(root, width, text) {
  const x = (PLOT.left + width - PLOT.right) / 2;
  root.append(svg("text", { class: "empty", x, y: PLOT.height / 2, "text-anchor": "middle" }, text));
}

/** p50 and p95 per minute as lines with a point for each minute that has samples; gaps where none. */
function drawLatency(figure, buckets, key, hour) {
  const root = figure.querySelector("svg");
  const highest = Math.max(0, ...buckets.map((b) => b[key].p95 ?? 0));
  const top = highest > 0 ? niceCeiling(highest * 1000) / 1000 : 1;
  const { x, y, width } = frame(root, buckets, top, latencyLabel);
  legend(root, width);
  for (const percentile of ["p50", "p95"]) {
    let run = [];
    const runs = [run];
    buckets.forEach((bucket, index) => {
      const value = bucket[key][percentile];
      if (value === null) {
        run = [];
        runs.push(run);
      } else {
        run.push([index, value]);
      }
    });
    for (const points of runs.filter((r) => r.length > 1)) {
      const path = points.map(([index, value]) => `${x(index).toFixed(1)},${y(value).toFixed(1)}`).join(" ");
      root.append(svg("polyline", { class: `series ${percentile}`, points: path }));
    }
    buckets.forEach((bucket, index) => {
      const stats = bucket[key];
      const value = stats[percentile];
      if (value !== null) {
        const point = svg("circle", {
          class: `point ${percentile}`,
          cx: x(index).toFixed(1),
          cy: y(value).toFixed(1),
          r: 4,
          "data-ms": Math.round(value * 1000),
        });
        point.append(
          svg("title", {}, `${minuteName(bucket)}: ${percentile} ${formatMs(value)} (${plural(stats.count, "sample")})`),
        );
        root.append(point);
      }
    });
  }
  if (hour.count === 0) {
    emptyNote(root, width, "No samples in the last hour");
  }
  figure.querySelector(".summary").textContent =
    hour.count === 0
      ? ""
      : `· the hour: p50 ${formatMs(hour.p50)}, p95 ${formatMs(hour.p95)} (${plural(hour.count, "sample")})`;
}

/** The most live sessions in each minute, one bar a minute. */
function drawLive(figure, buckets, liveNow) {
  const root = figure.querySelector("svg");
  const highest = Math.max(0, ...buckets.map((b) => b.live_sessions));
  const top = Math.max(1, niceCeiling(highest));
  const { x, y, step, width } = frame(root, buckets, top, (value) =>
    Number.isInteger(value) ? String(value) : "",
  );
  buckets.forEach((bucket, index) => {
    if (bucket.live_sessions > 0) {
      const bar = svg("rect", {
        class: "bar",
        x: (x(index) - step * 0.4).toFixed(1),
        y: y(bucket.live_sessions).toFixed(1),
        width: (step * 0.8).toFixed(1),
        height: (y(0) - y(bucket.live_sessions)).toFixed(1),
        "data-sessions": bucket.live_sessions,
      });
      bar.append(svg("title", {}, `${minuteName(bucket)}: ${bucket.live_sessions} at most`));
      root.append(bar);
    }
  });
  if (highest === 0) {
    emptyNote(root, width, "No sessions in the last hour");
  }
  figure.querySelector(".summary").textContent = `· now ${liveNow}, the most in a minute ${highest}`;
}

/** The last history read, to draw again at a new width. */
let lastHistory = null;

function renderHistory(history) {
  lastHistory = history;
  drawLatency(el.firstWord, history.buckets, "first_word", history.hour.first_word);
  drawLatency(el.turn, history.buckets, "turn", history.hour.turn);
  drawLive(el.liveSessions, history.buckets, history.live_sessions);
}

// The refresh loop: one round at a time, the next REFRESH_MS after the last one ended.

async function refresh() {
  const [sessions, history] = await Promise.all([getJson("/api/sessions"), getJson("/api/ops/history")]);
  clockOffset = history.now - Date.now() / 1000;
  const ended = new Set(history.ended.map((s) => s.session_id));
  renderEnded(history.ended);
  renderLive(sessions.sessions, ended);
  renderHistory(history);
  for (const [id, entry] of transcripts) {
    if (!liveRows.has(id) && !endedRows.has(id)) {
      // Listed nowhere any more (ended in another process, or past the last ended ones kept).
      transcripts.delete(id);
      entry.row.remove();
    } else if (!entry.done) {
      await readTranscript(entry);
    }
  }
}

async function run() {
  for (;;) {
    try {
      await refresh();
      showStatus("ok", `Updated ${new Date().toLocaleTimeString([], { hour12: false })}.`);
    } catch (error) {
      showStatus("error", error instanceof PageError ? error.message : "The page could not be updated.");
      if (!(error instanceof PageError)) {
        console.error(error);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
  }
}

setInterval(tickDurations, 1000);
window.addEventListener("resize", () => {
  if (lastHistory !== null) {
    renderHistory(lastHistory);
  }
});
run();
