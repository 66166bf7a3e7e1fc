// Wire types of the server's REST API and WebSocket events (see the API reference).

export interface User {
  id: number;
  email: string;
  username: string;
  avatar_url: string | null;
}

export interface Preferences {
  theme: "light" | "dark" | "system";
  language: string;
  notifications_enabled: boolean;
}

export interface Profile extends User {
  created_at: string;
  preferences: Preferences;
}

export interface AuthResponse {
  token: string;
  user: User;
  expires_at: string;
}

export interface Workspace {
  id: number;
  name: string;
  description: string | null;
  member_count: number;
  role: string;
}

export interface LastMessage {
  id: number;
  content: string;
  sender: { id: number; username: string };
  created_at: string;
}

export interface Chat {
  id: number;
  workspace_id: number;
  name: string;
  type: "channel" | "direct" | string;
  description: string | null;
  is_private: boolean;
  member_count: number;
  unread_count: number;
  last_message: LastMessage | null;
  /** The caller's role in the chat (owner, admin, member). */
  role?: string | null;
}

export interface Reaction {
  emoji: string;
  count: number;
  users: number[];
}

export interface Message {
  id: number;
  chat_id: number;
  sender_id: number;
  sender: { id: number; username: string; avatar_url: string | null };
  content: string;
  created_at: string;
  updated_at: string;
  reactions: Reaction[];
  idempotency_key?: string;
}

export interface Member {
  id: number;
  username: string;
  status: "online" | "offline" | string;
  role: string;
}

export interface SearchResult {
  message_id: number;
  chat_id: number;
  chat_name: string;
  content: string;
  sender: { id: number; username: string };
  created_at: string;
  score: number;
}

export interface ServerFrame {
  type: string;
  id?: string;
  data?: Record<string, unknown>;
}
