// Client routes (the server answers every non-API path with index.html): sign-in, invite
// links, and /w/<workspace>/c/<chat>. Signed-out visitors are sent to sign-in and come back.
import { createRouter, createWebHistory } from "vue-router";
import { session } from "./session";
import SignIn from "./components/SignIn.vue";
import ChatView from "./components/ChatView.vue";
import InviteAccept from "./components/InviteAccept.vue";

export const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: "/login", name: "login", component: SignIn, meta: { public: true } },
    { path: "/invite/:code", name: "invite", component: InviteAccept },
    { path: "/", name: "home", component: ChatView },
    { path: "/w/:ws", name: "workspace", component: ChatView },
    { path: "/w/:ws/c/:chat", name: "chat", component: ChatView },
    { path: "/:rest(.*)*", redirect: "/" },
  ],
});

router.beforeEach((to) => {
  if (!to.meta.public && !session.token) {
    return { name: "login", query: to.fullPath !== "/" ? { next: to.fullPath } : {} };
  }
  if (to.name === "login" && session.token) return { name: "home" };
  return true;
});
