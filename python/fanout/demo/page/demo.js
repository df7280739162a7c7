// fanout demo page: watch a mountpoint with the real janus.js (Streaming plugin API).
//
// Query parameters: mountpoint=<id> watches at once; transport=http|ws picks the
// Janus API transport; ws_port=<port> overrides the WebSocket port; janus=<url> (for
// transport=http) talks to another Janus HTTP API, e.g. janus=http://127.0.0.1:8088/janus;
// ice_transport_policy=relay makes the browser reach the server only through the TURN
// servers the server hands out (config.js's iceServers). In a cluster, mountpoint=<id> first
// asks /cluster/placement which node to talk to (demo.placement), and asks again when that
// node fails (demo.reconnects).
// window.fanoutDemo exposes the state to people and to tests: state ("connecting",
// "ready", "watching", "playing", "stopped", "error"), firstFrameMs (from the watch
// request to the first decoded frame), stats() (figures from getStats), hangup(), and the
// data channel: dataChannels (labels of open channels) and dataMessages (what janus.js's
// ondata delivered, in order; binary messages as "hex:<bytes in hex>"); messages: every plugin
// message janus.js's onmessage delivered (the Streaming plugin's events), in order.
"use strict";

const params = new URLSearchParams(location.search);
const config = window.fanoutDemoConfig || { janusPath: "/janus", websocketPort: null, iceServers: [] };
const elements = {
  mountpoints: document.getElementById("mountpoints"),
  transport: document.getElementById("transport"),
  watch: document.getElementById("watch"),
  stop: document.getElementById("stop"),
  status: document.getElementById("status"),
  video: document.getElementById("video"),
  figures: document.getElementById("figures"),
  data: document.getElementById("data"),
};

const demo = {
  state: "connecting",
  error: null,
  mountpoints: [],
  firstFrameMs: null,
  timings: {},  // ms from the watch request: offer, answered, ice, webrtcup, track, frame
  offeredIceUfrags: [],
  dataChannels: [],
  dataMessages: [],
  messages: [],
  stats: readStats,
  selectedPair: readSelectedPair,
  hangup: hangup,
  restartIce: restartIce,
};
window.fanoutDemo = demo;

let janus = null;
let streaming = null;
let watchStartedAt = null;
let remoteStream = null;
let watchedMountpoint = null;

function setState(state, detail) {
  demo.state = state;
  elements.status.textContent = detail ? `${state}: ${detail}` : state;
  elements.watch.disabled = !(state === "ready" || state === "stopped");
  elements.stop.disabled = !(state === "watching" || state === "playing");
}

function fail(message) {
  demo.error = String(message);
  setState("error", demo.error);
  reconnectThroughPlacement();
}

// In a cluster, a node that fails (killed, unreachable) is left: placement again, every
// RECONNECT_DELAY_MS, and watch on the node it chooses (the dead one leaves placement
// within its node_ttl). demo.reconnects counts the attempts.
const RECONNECT_DELAY_MS = 250;
const MAX_RECONNECTS = 60;
const AVOID_LOST_NODE_ATTEMPTS = 10;
let reconnectsInARow = 0;

function reconnectThroughPlacement() {
  if (!config.clustered || !params.get("mountpoint") || params.has("janus") || reconnectsInARow >= MAX_RECONNECTS) {
    return;
  }
  reconnectsInARow += 1;
  demo.reconnects = (demo.reconnects || 0) + 1;
  // Placement leaves the lost node out, for a few attempts: it may stay in the view for a TTL.
  demo.lostNodes = reconnectsInARow <= AVOID_LOST_NODE_ATTEMPTS && demo.placement && !demo.placement.local
    ? [demo.placement.node] : [];
  if (streaming) {
    streaming.hangup(false);
    streaming = null;
  }
  setTimeout(() => connect(elements.transport.value), RECONNECT_DELAY_MS);
}

function serverUrl(transport) {
  if (transport === "ws") {
    const port = params.get("ws_port") || config.websocketPort;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.hostname}:${port}/`;
  }
  return params.get("janus") || `${location.protocol}//${location.host}${config.janusPath}`;
}

// In a cluster, the node that placement chooses for the mountpoint asked for (demo.placement).
async function placedServerUrl(transport) {
  const wanted = params.get("mountpoint");
  if (!config.clustered || !wanted || params.has("janus")) {
    return serverUrl(transport);
  }
  const lost = demo.lostNodes && demo.lostNodes.length ? `&avoid=${encodeURIComponent(demo.lostNodes.join(","))}` : "";
  const response = await fetch(`/cluster/placement?mountpoint=${encodeURIComponent(wanted)}${lost}`);
  if (!response.ok) {
    throw new Error(`placement: ${response.status} ${await response.text()}`);
  }
  demo.placement = await response.json();
  const placed = demo.placement;
  return transport === "ws" && placed.websocket_url ? placed.websocket_url : placed.janus_url;
}

function connect(transport) {
  Janus.init({
    debug: params.has("debug") ? "all" : false,
    callback: () => {
      placedServerUrl(transport).then((server) => {
        janus = new Janus({
          server: server,
          iceServers: config.iceServers || [],
          iceTransportPolicy: params.get("ice_transport_policy") || undefined,
          success: attachStreaming,
          error: fail,
          destroyed: () => setState("stopped", "session destroyed"),
        });
      }, fail);
    },
  });
}

function attachStreaming() {
  janus.attach({
    plugin: "janus.plugin.streaming",
    opaqueId: "fanout-demo-" + Janus.randomString(8),
    success: (handle) => {
      streaming = handle;
      listMountpoints();
    },
    error: fail,
    onmessage: onMessage,
    onremotetrack: onRemoteTrack,
    iceState: (state) => (state === "connected" || state === "completed") && mark("ice"),
    webrtcState: (up) => up && mark("webrtcup"),
    ondataopen: (label) => demo.dataChannels.push(label),
    ondata: onData,
    oncleanup: () => {
      remoteStream = null;
      elements.video.srcObject = null;
    },
  });
}

function listMountpoints() {
  streaming.send({
    message: { request: "list" },
    success: (result) => {
      demo.mountpoints = (result && result.list) || [];
      elements.mountpoints.replaceChildren(
        ...demo.mountpoints.map((mountpoint) => {
          const option = document.createElement("option");
          option.value = mountpoint.id;
          option.textContent = `${mountpoint.id}: ${mountpoint.description}`;
          return option;
        })
      );
      setState("ready");
      const wanted = params.get("mountpoint");
      if (wanted) {
        elements.mountpoints.value = wanted;
        watch(Number(wanted));
      }
    },
    error: fail,
  });
}

function mark(phase) {
  if (watchStartedAt !== null && !(phase in demo.timings)) {
    demo.timings[phase] = Math.round(performance.now() - watchStartedAt);
  }
}

function watch(mountpointId) {
  watchedMountpoint = mountpointId;
  watchStartedAt = performance.now();
  demo.firstFrameMs = null;
  demo.timings = {};
  setState("watching", `mountpoint ${mountpointId}`);
  streaming.send({ message: { request: "watch", id: mountpointId }, error: fail });
}

function onMessage(message, jsep) {
  demo.messages.push(message);
  if (message.error) {
    fail(`${message.error_code}: ${message.error}`);
    return;
  }
  const status = message.result && message.result.status;
  if (status === "stopped") {
    setState("stopped");
    streaming.hangup();
  }
  if (jsep) {
    mark("offer");
    const ufrag = /a=ice-ufrag:(\S+)/.exec(jsep.sdp);
    if (ufrag) demo.offeredIceUfrags.push(ufrag[1]);
    // As Janus's own streaming demo: ask for a data channel when the offer has one.
    const tracks = jsep.sdp.includes("m=application") ? { tracks: [{ type: "data" }] } : {};
    streaming.createAnswer({
      jsep: jsep,
      ...tracks,
      success: (answer) => {
        mark("answered");
        streaming.send({ message: { request: "start" }, jsep: answer });
      },
      error: fail,
    });
  }
}

function onData(data) {
  const message = typeof data === "string"
    ? data
    : "hex:" + Array.from(new Uint8Array(data), (byte) => byte.toString(16).padStart(2, "0")).join("");
  demo.dataMessages.push(message);
  if (elements.data) elements.data.textContent = message;
}

function onRemoteTrack(track, mid, added) {
  if (!remoteStream) {
    remoteStream = new MediaStream();
    elements.video.srcObject = remoteStream;
  }
  if (added) {
    remoteStream.addTrack(track);
    if (track.kind === "video") {
      mark("track");
      waitForFirstFrame();
    }
  } else {
    remoteStream.removeTrack(track);
  }
}

function waitForFirstFrame() {
  const onFrame = () => {
    if (demo.firstFrameMs === null && watchStartedAt !== null) {
      demo.firstFrameMs = Math.round(performance.now() - watchStartedAt);
      mark("frame");
    }
    reconnectsInARow = 0;
    setState("playing", `first frame after ${demo.firstFrameMs} ms`);
  };
  if ("requestVideoFrameCallback" in elements.video) {
    elements.video.requestVideoFrameCallback(onFrame);
  } else {
    elements.video.addEventListener("loadeddata", onFrame, { once: true });
  }
  elements.video.play().catch(() => {});
}

async function readStats() {
  const figures = {
    framesDecoded: 0, frameWidth: 0, frameHeight: 0, framesPerSecond: 0,
    videoPacketsReceived: 0, audioPacketsReceived: 0, packetsLost: 0, videoPacketsLost: 0, audioPacketsLost: 0,
    jitterMs: 0, freezeCount: 0, totalFreezesDurationMs: 0,
  };
  const pc = streaming && streaming.webrtcStuff && streaming.webrtcStuff.pc;
  if (!pc) return figures;
  const report = await pc.getStats();
  report.forEach((entry) => {
    if (entry.type !== "inbound-rtp") return;
    figures.packetsLost += entry.packetsLost || 0;
    if (entry.kind === "video") {
      figures.framesDecoded = entry.framesDecoded || 0;
      figures.frameWidth = entry.frameWidth || 0;
      figures.frameHeight = entry.frameHeight || 0;
      figures.framesPerSecond = entry.framesPerSecond || 0;
      figures.videoPacketsReceived = entry.packetsReceived || 0;
      figures.jitterMs = Math.round((entry.jitter || 0) * 1000);
      figures.videoPacketsLost = entry.packetsLost || 0;
      figures.freezeCount = entry.freezeCount || 0;
      figures.totalFreezesDurationMs = Math.round((entry.totalFreezesDuration || 0) * 1000);
    } else if (entry.kind === "audio") {
      figures.audioPacketsReceived = entry.packetsReceived || 0;
      figures.audioPacketsLost = entry.packetsLost || 0;
    }
  });
  return figures;
}

// The selected ICE candidate pair as getStats reports it (id, state, requests and responses,
// and each end's candidate: type, protocol, address, port; relayProtocol for a relay candidate).
async function readSelectedPair() {
  const pc = streaming && streaming.webrtcStuff && streaming.webrtcStuff.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  let selected = null;
  report.forEach((entry) => {
    if (entry.type === "transport" && entry.selectedCandidatePairId) {
      const pair = report.get(entry.selectedCandidatePairId);
      const candidate = (id) => {
        const found = report.get(id);
        return found ? {
          candidateType: found.candidateType, protocol: found.protocol, address: found.address,
          port: found.port, relayProtocol: found.relayProtocol || null,
        } : null;
      };
      selected = {
        id: pair.id, state: pair.state, requestsSent: pair.requestsSent,
        responsesReceived: pair.responsesReceived, iceState: entry.iceState,
        local: candidate(pair.localCandidateId), remote: candidate(pair.remoteCandidateId),
      };
    }
  });
  return selected;
}

// ICE restart, as the Streaming plugin offers it: watch again with restart: true.
function restartIce() {
  if (streaming && watchedMountpoint !== null) {
    streaming.send({ message: { request: "watch", id: watchedMountpoint, restart: true } });
  }
}

function hangup() {
  if (streaming) streaming.send({ message: { request: "stop" } });
}

async function showFigures() {
  if (demo.state === "playing") {
    const figures = await readStats();
    elements.figures.textContent =
      `${figures.frameWidth}x${figures.frameHeight} at ${figures.framesPerSecond || 0} fps, ` +
      `${figures.framesDecoded} frames decoded, ${figures.packetsLost} packets lost, ` +
      `jitter ${figures.jitterMs} ms`;
  }
}

elements.watch.addEventListener("click", () => watch(Number(elements.mountpoints.value)));
elements.stop.addEventListener("click", hangup);
elements.transport.addEventListener("change", () => {
  const next = new URLSearchParams(location.search);
  next.set("transport", elements.transport.value);
  next.delete("mountpoint");
  location.search = next.toString();
});
elements.transport.value = params.get("transport") === "ws" ? "ws" : "http";
setInterval(showFigures, 1000);
connect(elements.transport.value);
