// MouthMap's web view: plain JavaScript, no build step, no external asset.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: null, selected: null, source: null, pinned: false };

// The token: from the address's fragment (scripts/demo prints such a link;
// a fragment never reaches a server or its logs), else this tab's storage.
(function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("mouthmap-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("mouthmap-token");
})();

function status(text) { $("status").textContent = text; }

function withToken(path) {
  if (!state.token) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(state.token);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["authorization"] = "Bearer " + state.token;
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) {
    $("token-form").hidden = false;
    status("this gateway needs its API token");
    throw new Error("unauthorized");
  }
  return r;
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("mouthmap-token", state.token);
  $("token-form").hidden = true;
  refresh();
});

function renderStreams(streams) {
  const ul = $("streams");
  ul.textContent = "";
  if (!streams.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No stream yet: publish one over RTMP, start one from a URL or upload a file.";
    ul.appendChild(li);
    return;
  }
  for (const s of streams) {
    const li = document.createElement("li");
    li.dataset.id = s.id;
    if (s.id === state.selected) li.classList.add("selected");
    const name = document.createElement("span");
    name.textContent = s.id;
    const badge = document.createElement("span");
    badge.className = "badge" + (s.live ? "" : " ended");
    badge.textContent = s.live ? "live" : "ended";
    li.append(name, badge);
    li.addEventListener("click", () => { state.pinned = true; select(s.id); });
    ul.appendChild(li);
  }
}

async function refresh() {
  try {
    const r = await api("/v1/streams");
    const body = await r.json();
    const streams = body.streams || [];
    // Streams ingest runs that no stage has passed on yet.
    const known = new Set(streams.map((s) => s.id));
    for (const s of (body.ingest && body.ingest.active) || []) {
      if (!known.has(s.id)) streams.push({ id: s.id, live: true });
    }
    renderStreams(streams);
    if (!state.pinned) {
      const live = streams.find((s) => s.live);
      if (live && live.id !== state.selected) select(live.id);
    }
    status(streams.filter((s) => s.live).length + " live");
  } catch (e) {
    if (e.message !== "unauthorized") status("gateway unreachable: " + e.message);
  }
}

function showTranscript(t) {
  if (!t) return;
  const final = t.kind === "final";
  const text = t.text || "";
  const stable = final ? text : (t.stable_prefix || "");
  $("stable").textContent = stable;
  $("unstable").textContent = text.startsWith(stable) ? text.slice(stable.length) : text;
  $("transcript").classList.toggle("final", final);
  if (final) {
    // The list refreshes every two seconds; the selected stream ended now.
    const badge = document.querySelector('#streams li.selected .badge');
    if (badge) { badge.textContent = "ended"; badge.classList.add("ended"); }
  }
  $("state").textContent = final ? (t.cancelled ? "final (cancelled)" : "final") : "live";
  $("latency").textContent = t.latency_ms ? Math.round(t.latency_ms) + " ms" : "-";
  $("model").textContent = t.model ? t.model + " " + (t.model_version || "") : (t.model_version || "-");
  if (t.no_face) $("unstable").textContent = "(no face in view)";
}

function showMouth(id, frame, face) {
  const img = $("mouth");
  img.src = withToken("/v1/streams/" + encodeURIComponent(id) + "/mouth.png?frame=" + frame);
  img.dataset.frame = frame;
  $("mouth-caption").textContent = "frame " + frame + (face ? "" : " (no face)");
}

function select(id) {
  if (state.source) state.source.close();
  state.selected = id;
  $("stream-title").textContent = id;
  $("view").hidden = false;
  $("stable").textContent = "";
  $("unstable").textContent = "";
  $("transcript").classList.remove("final");
  $("state").textContent = "waiting";
  for (const li of document.querySelectorAll("#streams li")) {
    li.classList.toggle("selected", li.dataset.id === id);
  }
  const es = new EventSource(withToken("/v1/streams/" + encodeURIComponent(id) + "/events"));
  state.source = es;
  es.addEventListener("snapshot", (e) => {
    const snap = JSON.parse(e.data);
    if (snap.stream) {
      showTranscript(snap.stream.transcript);
      $("frames").textContent = snap.stream.frames;
    }
    if (snap.crop_frame != null) showMouth(id, snap.crop_frame, true);
  });
  es.addEventListener("started", () => { $("state").textContent = "live"; });
  for (const kind of ["partial", "final"]) {
    es.addEventListener(kind, (e) => showTranscript(JSON.parse(e.data)));
  }
  es.addEventListener("mouth", (e) => {
    const m = JSON.parse(e.data);
    showMouth(id, m.frame, m.face);
    $("frames").textContent = m.frame + 1;
  });
  es.onerror = () => status("event feed interrupted; reconnecting");
}

$("start-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await api("/v1/streams", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ source: $("source").value.trim() }),
  });
  const body = await r.json();
  if (!r.ok) { status("not started: " + (body.error || r.status)); return; }
  state.pinned = true;
  select(body.id);
  refresh();
});

$("upload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const grammar = $("grid").checked ? "&grammar=grid" : "";
  status("uploading " + file.name);
  const r = await api("/v1/transcriptions?stream=true" + grammar, { method: "POST", body: file });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    status("upload refused: " + (body.error || r.status));
    return;
  }
  const id = r.headers.get("x-mouthmap-stream-id");
  if (id) { state.pinned = true; select(id); }
  // The partials arrive on the event feed too; reading the body to its
  // end keeps the upload alive until its final.
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let rest = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    rest += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = rest.indexOf("\n")) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (!line.trim()) continue;
      const msg = JSON.parse(line);
      if (msg.error) status("upload failed: " + msg.error);
      else if (!id) showTranscript(msg);
    }
  }
  status("upload done");
});

const wanted = new URLSearchParams(location.search).get("stream");
if (wanted) { state.pinned = true; select(wanted); }
refresh();
setInterval(refresh, 2000);
