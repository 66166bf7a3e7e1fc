// Entry point: restores the session, wires the real-time connection to the store, mounts the app.
import { createApp, watch } from "vue";
import App from "./App.vue";
import { router } from "./router";
import { onSessionEnd, refresh, restore, session, signOut } from "./session";
import * as rt from "./realtime";
import { applyEvent, markRead, reset, resync, state } from "./store";
import "./style.css";

function startRealtime() {
  rt.connect({
    token: () => session.token,
    event: applyEvent,
    // A fresh connection (not a resume) may have missed events: re-fetch what is shown.
    ready: (resumed) => {
      if (!resumed) void resync();
    },
    // 4001: an expired token is refreshed (within the server's refresh window) and the
    // connection resumes; a revoked one cannot be, and the session ends.
    revoked: async () => {
      if (await refresh()) rt.reconnect();
      else signOut("Your session was revoked. Please sign in again.");
    },
  });
}

onSessionEnd(() => {
  rt.disconnect();
  reset();
  void router.push({ name: "login" });
});

// Coming back to the tab reads the open chat.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && state.chatId !== null) markRead(state.chatId);
});

await restore();
watch(
  () => session.token !== null,
  (signedIn, was) => {
    if (signedIn && !was) startRealtime();
  },
  { immediate: true },
);
createApp(App).use(router).mount("#app");
