// The signed-in session: token and user kept in localStorage, refreshed before expiry, ended
// cleanly (state cleared, socket closed, back to sign-in) on sign-out, a 401 or a revoked token.
import { reactive } from "vue";
import { ApiError, api, configureApi } from "./api";
import type { AuthResponse, User } from "./types";

const KEY = "fechatter.session";

export const session = reactive({
  token: null as string | null,
  expiresAt: 0,
  user: null as User | null,
  notice: "" as string,
});

const endListeners: (() => void)[] = [];
let refreshTimer: number | undefined;

export function onSessionEnd(f: () => void) {
  endListeners.push(f);
}

function persist() {
  if (session.token && session.user) {
    localStorage.setItem(KEY, JSON.stringify({ token: session.token, expiresAt: session.expiresAt, user: session.user }));
  } else {
    localStorage.removeItem(KEY);
  }
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session.token) return;
  const left = session.expiresAt - Date.now();
  // Refresh at 80% of the remaining lifetime, at least a minute before expiry.
  const at = Math.max(0, Math.min(left * 0.8, left - 60_000));
  refreshTimer = window.setTimeout(() => void refresh(), Math.min(at, 2 ** 31 - 1));
}

const RETRY_MS = 10_000;

/** Trades the token for a fresh one. `false` only when the server refused it (then the API
 *  hook has signed out); an unreachable server keeps the session and retries shortly. */
export async function refresh(): Promise<boolean> {
  if (!session.token) return false;
  try {
    const r = await api<{ token: string; expires_at: string }>("POST", "/api/auth/refresh", {}, session.token);
    session.token = r.token;
    session.expiresAt = Date.parse(r.expires_at);
    persist();
    scheduleRefresh();
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return false;
    clearTimeout(refreshTimer);
    refreshTimer = window.setTimeout(() => void refresh(), RETRY_MS);
    return session.token !== null;
  }
}

export function start(r: AuthResponse) {
  session.token = r.token;
  session.expiresAt = Date.parse(r.expires_at);
  session.user = r.user;
  session.notice = "";
  persist();
  scheduleRefresh();
}

export function signOut(notice = "") {
  clearTimeout(refreshTimer);
  const was = session.token !== null;
  session.token = null;
  session.user = null;
  session.expiresAt = 0;
  session.notice = notice;
  persist();
  if (was) endListeners.forEach((f) => f());
}

/// Restores a saved session; an expired token is refreshed (the server allows it within its
/// refresh window), and one that cannot be is dropped.
export async function restore(): Promise<void> {
  configureApi({
    token: () => session.token,
    unauthorized: () => signOut("Your session has ended. Please sign in again."),
  });
  const raw = localStorage.getItem(KEY);
  if (!raw) return;
  try {
    const saved = JSON.parse(raw);
    session.token = saved.token;
    session.expiresAt = saved.expiresAt;
    session.user = saved.user;
  } catch {
    localStorage.removeItem(KEY);
    return;
  }
  if (session.expiresAt - Date.now() < 60_000 && !(await refresh())) {
    signOut("Your session has expired. Please sign in again.");
    return;
  }
  scheduleRefresh();
}

export function setUser(u: User) {
  session.user = u;
  persist();
}
