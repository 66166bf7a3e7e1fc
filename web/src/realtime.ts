// The WebSocket client of the real-time protocol: auth frame (with `last_event_id` to resume),
// reconnect with exponential backoff and jitter (status "reconnecting" meanwhile), typing frames.
// Close 4001 (invalid or revoked token) ends the session instead of reconnecting.
import { ref } from "vue";
import type { ServerFrame } from "./types";

export type Status = "offline" | "connecting" | "live" | "reconnecting";

export const status = ref<Status>("offline");

interface Handlers {
  token: () => string | null;
  /** Called for every server event (auth.success included, with `resumed`). */
  event: (frame: ServerFrame) => void;
  /** The connection is subscribed; `resumed` when it replayed from `last_event_id`. */
  ready: (resumed: boolean) => void;
  revoked: () => void | Promise<void>;
}

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 10_000;
const PING_MS = 20_000;

let handlers: Handlers | null = null;
let ws: WebSocket | null = null;
let lastEventId: string | null = null;
let attempt = 0;
let retryTimer: number | undefined;
let pingTimer: number | undefined;
let wanted = false;

export function connect(h: Handlers) {
  handlers = h;
  wanted = true;
  open();
}

export function disconnect() {
  wanted = false;
  clearTimeout(retryTimer);
  clearInterval(pingTimer);
  lastEventId = null;
  attempt = 0;
  if (ws) {
    ws.onclose = null;
    ws.close(1000);
    ws = null;
  }
  status.value = "offline";
}

function open() {
  const token = handlers?.token();
  if (!wanted || !token) return;
  status.value = attempt === 0 && lastEventId === null ? "connecting" : "reconnecting";
  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
  const sock = new WebSocket(url);
  ws = sock;
  sock.onopen = () => {
    const frame: Record<string, string> = { type: "auth", token: `Bearer ${token}` };
    if (lastEventId) frame.last_event_id = lastEventId;
    sock.send(JSON.stringify(frame));
  };
  sock.onmessage = (ev) => {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(String(ev.data));
    } catch {
      return;
    }
    if (frame.type === "auth.success") {
      const resumed = lastEventId !== null;
      attempt = 0;
      status.value = "live";
      clearInterval(pingTimer);
      pingTimer = window.setInterval(() => send({ type: "ping" }), PING_MS);
      handlers?.ready(resumed);
    }
    if (frame.id) lastEventId = frame.id;
    handlers?.event(frame);
  };
  sock.onclose = (ev) => {
    clearInterval(pingTimer);
    if (ws === sock) ws = null;
    if (!wanted) return;
    if (ev.code === 4001) {
      status.value = "offline";
      void handlers?.revoked();
      return;
    }
    retry();
  };
}

export function send(frame: Record<string, unknown>) {
  if (ws && ws.readyState === WebSocket.OPEN && status.value === "live") {
    ws.send(JSON.stringify(frame));
  }
}

/** Opens the connection again (after a token refresh), after the usual backoff delay. */
export function reconnect() {
  if (wanted && !ws) retry();
}

function retry() {
  status.value = "reconnecting";
  const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  attempt += 1;
  clearTimeout(retryTimer);
  retryTimer = window.setTimeout(open, delay / 2 + Math.random() * (delay / 2));
}

/** Forgets the resume position (the next connection starts fresh; the caller refetches). */
export function forgetPosition() {
  lastEventId = null;
}
