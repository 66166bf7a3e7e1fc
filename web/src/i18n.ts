// A tiny translation table for the interface (English and Chinese), keyed by the user's
// `preferences.language`; unknown languages and keys fall back to English.
import { ref } from "vue";

const en = {
  signIn: "Sign in",
  register: "Create account",
  email: "Email",
  password: "Password",
  username: "Username",
  signOut: "Sign out",
  workspace: "Workspace",
  newWorkspace: "New workspace",
  channels: "Channels",
  people: "People",
  newChannel: "New channel",
  browse: "Join a channel",
  invite: "Invite people",
  search: "Search messages",
  profile: "Profile and preferences",
  send: "Send",
  reconnecting: "Reconnecting…",
  connecting: "Connecting…",
  live: "Connected",
  loadOlder: "Load older messages",
  noMore: "Beginning of the conversation",
  edit: "Edit",
  delete: "Delete",
  save: "Save",
  cancel: "Cancel",
  react: "React",
  edited: "edited",
  pending: "sending…",
  failed: "not sent",
  retry: "Retry",
  theme: "Theme",
  language: "Language",
  pickChat: "Pick a channel or a person to start chatting.",
  typing: "typing…",
  menu: "Menu",
};
type Key = keyof typeof en;

const zh: Partial<Record<Key, string>> = {
  signIn: "登录",
  register: "注册",
  email: "邮箱",
  password: "密码",
  username: "用户名",
  signOut: "退出",
  workspace: "工作区",
  newWorkspace: "新建工作区",
  channels: "频道",
  people: "成员",
  newChannel: "新建频道",
  browse: "加入频道",
  invite: "邀请成员",
  search: "搜索消息",
  profile: "个人资料与偏好",
  send: "发送",
  reconnecting: "正在重新连接…",
  connecting: "正在连接…",
  live: "已连接",
  loadOlder: "加载更早的消息",
  noMore: "会话开始",
  edit: "编辑",
  delete: "删除",
  save: "保存",
  cancel: "取消",
  react: "表情",
  edited: "已编辑",
  pending: "发送中…",
  failed: "未发送",
  retry: "重试",
  theme: "主题",
  language: "语言",
  pickChat: "选择一个频道或成员开始聊天。",
  typing: "正在输入…",
  menu: "菜单",
};

export const language = ref("en");
const tables: Record<string, Partial<Record<Key, string>>> = { en, zh };

export function t(key: Key): string {
  return tables[language.value.split(/[-_]/)[0]]?.[key] ?? en[key];
}

export function applyPreferences(theme: string, lang: string) {
  language.value = lang || "en";
  document.documentElement.lang = language.value;
  const dark = theme === "dark" || (theme === "system" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.theme = dark ? "dark" : "light";
}
