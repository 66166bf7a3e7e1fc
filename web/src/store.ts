// The client's state and the one place events are applied: workspaces, chats (unread counts,
// last message), each chat's messages (deduplicated by id, ordered by id = the chat's commit
// order), pending sends, typing and presence. REST pages and live events merge through
// `upsert`, so a message is never shown twice, out of order, or resurrected after deletion.
import { reactive } from "vue";
import { del, get, post, put } from "./api";
import * as rt from "./realtime";
import { session } from "./session";
import type { Chat, Member, Message, Reaction, ServerFrame, Workspace } from "./types";

export const PAGE = 50;

export interface Pending {
  key: string;
  chat_id: number;
  content: string;
  failed: boolean;
}

export interface ChatLog {
  messages: Message[];
  hasMore: boolean;
  loading: boolean;
  loaded: boolean;
  deleted: Set<number>;
}

export const state = reactive({
  workspaces: [] as Workspace[],
  workspaceId: null as number | null,
  chats: [] as Chat[],
  chatId: null as number | null,
  logs: {} as Record<number, ChatLog>,
  pending: [] as Pending[],
  members: {} as Record<number, Member>,
  typing: {} as Record<number, Record<number, { username: string; until: number }>>,
  error: "",
});

export function reset() {
  state.workspaces = [];
  state.workspaceId = null;
  state.chats = [];
  state.chatId = null;
  state.logs = {};
  state.pending = [];
  state.members = {};
  state.typing = {};
  state.error = "";
}

function log(chatId: number): ChatLog {
  let l = state.logs[chatId];
  if (!l) {
    l = { messages: [], hasMore: true, loading: false, loaded: false, deleted: new Set() };
    state.logs[chatId] = l;
  }
  return state.logs[chatId];
}

/** Inserts or replaces a message, keeping the list sorted by id and unique. */
export function upsert(m: Message) {
  const l = log(m.chat_id);
  if (l.deleted.has(m.id)) return;
  if (m.idempotency_key) {
    state.pending = state.pending.filter((p) => p.key !== m.idempotency_key);
  } else if (m.sender_id === session.user?.id) {
    // Events carry no idempotency key (it is the sender's own): the event of a message this
    // tab sent replaces the first pending entry with the same chat and text.
    const i = state.pending.findIndex((p) => p.chat_id === m.chat_id && p.content === m.content && !p.failed);
    if (i >= 0) state.pending.splice(i, 1);
  }
  const list = l.messages;
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].id < m.id) lo = mid + 1;
    else hi = mid;
  }
  if (list[lo]?.id === m.id) {
    // Keep the newer version (a REST page fetched before an edit must not undo it).
    if (Date.parse(m.updated_at) >= Date.parse(list[lo].updated_at)) list[lo] = m;
  } else {
    list.splice(lo, 0, m);
  }
}

function removeMessage(chatId: number, id: number) {
  const l = log(chatId);
  l.deleted.add(id);
  l.messages = l.messages.filter((m) => m.id !== id);
}

// ---- loading ----

export async function loadWorkspaces() {
  const r = await get<{ workspaces: Workspace[] }>("/api/workspaces?limit=100&sort=name&order=asc");
  state.workspaces = r.workspaces;
}

export async function selectWorkspace(id: number) {
  if (state.workspaceId !== id) {
    state.workspaceId = id;
    state.chats = [];
    state.members = {};
  }
  await Promise.all([loadChats(), loadMembers()]);
}

let chatsRequest = 0;
/** The chat list; of overlapping calls only the last one's answer is applied. */
export async function loadChats() {
  const ws = state.workspaceId;
  if (ws === null) return;
  const seq = ++chatsRequest;
  const r = await get<{ chats: Chat[] }>(`/api/chats?workspace_id=${ws}&limit=100`);
  if (state.workspaceId !== ws || seq !== chatsRequest) return;
  if (state.chatId !== null) {
    const open = r.chats.find((c) => c.id === state.chatId);
    if (open) open.unread_count = 0;
  }
  state.chats = r.chats;
}

export async function loadMembers() {
  const ws = state.workspaceId;
  if (ws === null) return;
  const r = await get<{ users: Member[] }>(`/api/users?workspace_id=${ws}&limit=100`);
  if (state.workspaceId !== ws) return;
  const map: Record<number, Member> = {};
  for (const u of r.users) map[u.id] = u;
  state.members = map;
}

/** The newest page of a chat (also its re-fetch after `resync.required` or a fresh connection). */
export async function loadLatest(chatId: number) {
  const r = await get<{ messages: Message[]; has_more: boolean }>(`/api/messages?chat_id=${chatId}&limit=${PAGE}`);
  const l = log(chatId);
  const wasEmpty = l.messages.length === 0;
  r.messages.forEach(upsert);
  if (wasEmpty) l.hasMore = r.has_more;
  l.loaded = true;
}

/** The page before the oldest loaded message; returns how many were added. */
export async function loadOlder(chatId: number): Promise<number> {
  const l = log(chatId);
  if (l.loading || !l.hasMore) return 0;
  const oldest = l.messages[0]?.id;
  l.loading = true;
  try {
    const q = oldest ? `&before_id=${oldest}` : "";
    const r = await get<{ messages: Message[]; has_more: boolean }>(`/api/messages?chat_id=${chatId}&limit=${PAGE}${q}`);
    const before = l.messages.length;
    r.messages.forEach(upsert);
    l.hasMore = r.has_more;
    l.loaded = true;
    return l.messages.length - before;
  } finally {
    l.loading = false;
  }
}

export async function openChat(chatId: number) {
  state.chatId = chatId;
  const l = log(chatId);
  if (!l.loaded) await loadLatest(chatId);
  markRead(chatId);
}

let readTimer: number | undefined;
export function markRead(chatId: number) {
  const chat = state.chats.find((c) => c.id === chatId);
  if (chat) chat.unread_count = 0;
  clearTimeout(readTimer);
  readTimer = window.setTimeout(() => {
    const last = log(chatId).messages.at(-1);
    if (last) void post(`/api/chats/${chatId}/read`, { message_id: last.id }).catch(() => {});
  }, 300);
}

// ---- actions ----

function newKey(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Shows the message at once as pending; the response or the event (whichever comes first)
 *  replaces it with the stored message; a retry reuses the key, so it is never stored twice. */
export async function sendMessage(chatId: number, content: string, retry?: Pending) {
  const p = retry ?? { key: newKey(), chat_id: chatId, content, failed: false };
  if (retry) {
    const existing = state.pending.find((x) => x.key === retry.key);
    if (existing) existing.failed = false;
  } else {
    state.pending.push(p);
  }
  try {
    const m = await post<Message>("/api/messages", { chat_id: chatId, content: p.content, idempotency_key: p.key });
    state.pending = state.pending.filter((x) => x.key !== p.key);
    upsert(m);
    markRead(chatId);
  } catch (e) {
    const existing = state.pending.find((x) => x.key === p.key);
    if (existing) existing.failed = true;
    throw e;
  }
}

export async function editMessage(m: Message, content: string) {
  upsert(await put<Message>(`/api/messages/${m.id}`, { content }));
}

export async function deleteMessage(m: Message) {
  await del(`/api/messages/${m.id}`);
  removeMessage(m.chat_id, m.id);
}

export async function toggleReaction(m: Message, emoji: string) {
  const me = session.user?.id;
  const mine = m.reactions.find((r) => r.emoji === emoji)?.users.includes(me ?? -1);
  const r = mine
    ? await del<{ reactions: Reaction[] }>(`/api/messages/${m.id}/reactions/${encodeURIComponent(emoji)}`)
    : await post<{ reactions: Reaction[] }>(`/api/messages/${m.id}/reactions`, { emoji });
  if (r && Array.isArray(r.reactions)) setReactions(m.chat_id, m.id, r.reactions);
}

function setReactions(chatId: number, id: number, reactions: Reaction[]) {
  const m = log(chatId).messages.find((x) => x.id === id);
  if (m) m.reactions = reactions;
}

// ---- typing ----

let typingSentAt = 0;
let typingChat: number | null = null;
export function typing(chatId: number, active: boolean) {
  const now = Date.now();
  if (active) {
    if (typingChat === chatId && now - typingSentAt < 3000) return;
    typingChat = chatId;
    typingSentAt = now;
    rt.send({ type: "typing.start", chat_id: chatId });
  } else if (typingChat !== null) {
    rt.send({ type: "typing.stop", chat_id: typingChat });
    typingChat = null;
    typingSentAt = 0;
  }
}

export function typers(chatId: number): string[] {
  const now = Date.now();
  return Object.values(state.typing[chatId] ?? {})
    .filter((t) => t.until > now)
    .map((t) => t.username);
}

// ---- events ----

function bumpChat(m: Message) {
  const chat = state.chats.find((c) => c.id === m.chat_id);
  if (!chat) {
    if (m.chat_id) void loadChats();
    return;
  }
  if (!chat.last_message || chat.last_message.id <= m.id) {
    chat.last_message = { id: m.id, content: m.content, sender: m.sender, created_at: m.created_at };
  }
  const visible = state.chatId === m.chat_id && document.visibilityState === "visible";
  if (m.sender_id !== session.user?.id) {
    if (visible) markRead(m.chat_id);
    else chat.unread_count += 1;
  }
  state.chats = [chat, ...state.chats.filter((c) => c !== chat)];
}

export function applyEvent(f: ServerFrame) {
  const d = (f.data ?? {}) as Record<string, any>;
  switch (f.type) {
    case "message.created": {
      const m = d.message as Message;
      const known = state.logs[m.chat_id]?.messages.some((x) => x.id === m.id);
      upsert(m);
      if (!known) bumpChat(m);
      clearTyping(m.chat_id, m.sender_id);
      break;
    }
    case "message.updated":
      upsert(d.message as Message);
      break;
    case "message.deleted":
      removeMessage(d.chat_id, d.message_id);
      break;
    case "reaction.added":
    case "reaction.removed":
      setReactions(d.chat_id, d.message_id, d.reactions);
      break;
    case "chat.member_joined":
    case "chat.member_left":
      if (d.user_id !== session.user?.id && !state.members[d.user_id]) void loadMembers();
      {
        const chat = state.chats.find((c) => c.id === d.chat_id);
        if (chat && d.user_id !== session.user?.id) chat.member_count = Math.max(0, chat.member_count + (f.type === "chat.member_joined" ? 1 : -1));
      }
      if (d.user_id === session.user?.id) {
        void loadChats();
        if (f.type === "chat.member_left" && state.chatId === d.chat_id) state.chatId = null;
      }
      break;
    case "typing.start":
      if (d.user_id !== session.user?.id) {
        state.typing[d.chat_id] = { ...(state.typing[d.chat_id] ?? {}), [d.user_id]: { username: d.username, until: Date.now() + 6000 } };
      }
      break;
    case "typing.stop":
      clearTyping(d.chat_id, d.user_id);
      break;
    case "presence.update": {
      const u = state.members[d.user_id];
      if (u) u.status = d.status;
      else void loadMembers();
      break;
    }
    case "resync.required":
      void resync(d.chat_id);
      break;
  }
}

function clearTyping(chatId: number, userId: number) {
  const t = state.typing[chatId];
  if (t && t[userId]) {
    const { [userId]: _gone, ...rest } = t;
    state.typing[chatId] = rest;
  }
}

/** Re-fetches one chat (or every loaded one) from its newest page: what was loaded may have a
 *  gap, so it is dropped (the deleted-id set stays, so nothing deleted comes back). */
export async function resync(chatId?: number) {
  const ids = (chatId ? [chatId] : Object.keys(state.logs).map(Number)).filter((id) => state.logs[id]?.loaded);
  for (const id of ids) {
    state.logs[id].messages = [];
    state.logs[id].hasMore = true;
  }
  await Promise.all(ids.map((id) => loadLatest(id).catch(() => {})));
  await loadChats().catch(() => {});
  await loadMembers().catch(() => {});
}
