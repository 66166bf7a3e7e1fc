// Entry point: restores the session, wires the real-time connection to the store, mounts the app.
import { createApp, watch } from "vue";
import App from "./App.vue";
import { router } from "./router";
import { onSessionEnd, restore, session, signOut } from "./session";
import * as rt from "./realtime";
import { applyEvent, reset, resync } from "./store";
import "./style.css";

function startRealtime() {
  rt.connect({
    token: () => session.token,
    event: applyEvent,
    // A fresh connection (not a resume) may have missed events: re-fetch what is shown.
    ready: (resumed) => {
      if (!resumed) void resync();
    },
    revoked: () => signOut("Your session was revoked. Please sign in again."),
  });
}

onSessionEnd(() => {
  rt.disconnect();
  reset();
  void router.push({ name: "login" });
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
