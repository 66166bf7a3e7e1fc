// Browser suite: two users (alice on a desktop-sized window, bob at phone width) in two
// Chromium contexts against a running server. Usage: node tests/e2e.mjs <base-url>.
// The server restart step prints `@@stop` / `@@start` and waits for `stopped` / `started` on
// stdin (tests/api/browser.rs answers them). FECHATTER_SCREENSHOTS=<dir> also saves the
// screenshots used in the README; FECHATTER_E2E_STANDALONE=1 skips the restart step (for a
// server started by hand: `npm run screenshots`). Exits non-zero on the first failed check.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const base = process.argv[2];
if (!base) {
  console.error("usage: node tests/e2e.mjs <base-url>");
  process.exit(2);
}
const shots = process.env.FECHATTER_SCREENSHOTS;
const started = Date.now();
const TIMEOUT = 15_000;

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function control(command, reply) {
  console.log(`@@${command}`);
  const { value, done } = await stdinLines.next();
  if (done || value.trim() !== reply) throw new Error(`expected "${reply}" from the harness, got ${value}`);
}

let passed = 0;
async function step(name, f) {
  const t = Date.now();
  await f();
  passed += 1;
  console.log(`ok - ${name} (${Date.now() - t} ms)`);
}
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}
async function eventually(what, f, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      if (await f()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}${last ? ` (${last.message})` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
async function shot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `${name}.png`) });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const errors = [];
async function newPage(viewport) {
  const ctx = await browser.newContext({ viewport, baseURL: base });
  const page = await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => errors.push(`${e}`));
  page.on("dialog", (d) => d.accept());
  page.frames_ = [];
  page.on("websocket", (ws) =>
    ws.on("framereceived", (f) => {
      try {
        page.frames_.push(JSON.parse(f.payload).type);
      } catch {
        /* not JSON */
      }
    }),
  );
  return page;
}

const uid = Math.random().toString(36).slice(2, 8);
const alice = { email: `alice-${uid}@example.test`, username: "alice", password: "password-123" };
const bob = { email: `bob-${uid}@example.test`, username: "bob", password: "password-123" };

const A = await newPage({ width: 1200, height: 800 });
const B = await newPage({ width: 390, height: 780 });

const log = (page) => page.getByRole("log");
const messageText = (page, text) => log(page).locator("li[data-message-id] .content", { hasText: text });
const messageItem = (page, text) => log(page).locator("li[data-message-id]").filter({ has: page.locator(".content", { hasText: text }) });
const composer = (page) => page.getByRole("textbox", { name: /^Message / });
const byId = async (page, text) => page.locator(`#msg-${await messageItem(page, text).getAttribute("data-message-id")}`);
const token = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("fechatter.session")).token);

async function register(page, user) {
  await page.goto("/");
  await page.waitForURL(/\/login/);
  await page.getByRole("tab", { name: "Create account" }).click();
  await page.getByLabel("Email").fill(user.email);
  await page.getByLabel("Username").fill(user.username);
  await page.getByLabel("Password").fill(user.password);
  await page.locator("form button[type=submit]").click();
  await page.waitForURL((u) => !u.pathname.startsWith("/login"));
}
async function send(page, text) {
  await composer(page).fill(text);
  await composer(page).press("Enter");
}
async function idsIn(page) {
  return log(page).locator("li[data-message-id]").evaluateAll((els) => els.map((e) => Number(e.dataset.messageId)));
}
async function api(page, method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${await token(page)}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}
function assertOrderedUnique(ids, what) {
  check(new Set(ids).size === ids.length, `${what}: no duplicate message (${ids})`);
  check(ids.every((id, i) => i === 0 || ids[i - 1] < id), `${what}: messages in order (${ids})`);
}

let workspaceId;
let generalUrl;

try {
  await step("sign-in page is served and accessible", async () => {
    await A.goto("/");
    await A.waitForURL(/\/login/);
    await A.getByRole("heading", { name: "Fechatter" }).waitFor();
    await shot(A, "sign-in");
  });

  await step("alice registers, creates a workspace and a channel", async () => {
    await register(A, alice);
    await A.getByText("Create a workspace to start.").waitFor();
    await A.getByRole("button", { name: "New workspace" }).click();
    await A.getByRole("dialog").getByLabel("Name").fill("Acme");
    await A.getByRole("button", { name: "Create workspace" }).click();
    await A.waitForURL(/\/w\/\d+$/);
    workspaceId = Number(new URL(A.url()).pathname.split("/")[2]);
    await A.getByRole("button", { name: "New channel" }).click();
    await A.getByRole("dialog").getByLabel("Name").fill("general");
    await A.getByRole("button", { name: "Create channel" }).click();
    await A.waitForURL(/\/c\/\d+$/);
    generalUrl = new URL(A.url()).pathname;
    await A.getByRole("heading", { name: "#general" }).waitFor();
  });

  let inviteLink;
  await step("alice invites bob by email", async () => {
    await A.getByRole("button", { name: "Invite people" }).click();
    await A.getByRole("dialog").getByLabel(/^Email/).fill(bob.email);
    await A.getByRole("button", { name: "Create invite link" }).click();
    inviteLink = await A.getByTestId("invite-link").getAttribute("href");
    check(/\/invite\/[A-Z0-9]{16}$/.test(inviteLink), `invite link ${inviteLink}`);
    await A.getByRole("dialog").getByRole("button", { name: "Close" }).click();
  });

  await step("bob registers at phone width, accepts the invite and joins #general", async () => {
    await register(B, bob);
    await B.goto(new URL(inviteLink).pathname);
    await B.getByRole("button", { name: "Accept invite" }).click();
    await B.waitForURL(new RegExp(`/w/${workspaceId}$`));
    await B.getByRole("button", { name: "Menu" }).click();
    await B.getByRole("button", { name: "Join a channel" }).click();
    await B.getByRole("dialog").getByLabel("Channel name").fill("general");
    await B.getByRole("button", { name: "Find" }).click();
    await B.getByRole("button", { name: "Join general" }).click();
    await B.waitForURL(new RegExp(`${generalUrl}$`));
    await B.getByRole("heading", { name: "#general" }).waitFor();
  });

  await step("presence: alice sees bob online", async () => {
    await A.getByTestId("presence-bob").and(A.locator('[data-status="online"]')).waitFor();
  });

  await step("alice's message shows as pending, then once, confirmed; bob gets it live", async () => {
    // Hold the send request so the pending state is observable.
    let release;
    const held = new Promise((r) => (release = r));
    await A.route("**/api/messages", async (route) => {
      if (route.request().method() === "POST") await held;
      await route.continue();
    });
    await send(A, "hello bob");
    await log(A).locator('li.pending[data-pending="sending"]', { hasText: "hello bob" }).waitFor();
    release();
    await messageText(A, "hello bob").waitFor();
    await eventually("pending entry gone", async () => (await log(A).locator("li.pending").count()) === 0);
    check((await messageText(A, "hello bob").count()) === 1, "alice sees her message once");
    await A.unroute("**/api/messages");
    await messageText(B, "hello bob").waitFor();
    check((await messageText(B, "hello bob").count()) === 1, "bob sees it once");
  });

  await step("bob replies live and alice sees it", async () => {
    await send(B, "hi alice");
    await messageText(A, "hi alice").waitFor();
    assertOrderedUnique(await idsIn(A), "alice's log");
  });

  await step("typing indicator shows on the other side", async () => {
    await composer(B).pressSequentially("typing here", { delay: 20 });
    await A.getByTestId("typing").getByText("bob typing…").waitFor();
    await composer(B).fill("");
    await composer(B).blur();
    await eventually("typing indicator cleared", async () => !(await A.getByTestId("typing").innerText()).includes("bob"));
  });

  await step("edit appears on the other side", async () => {
    const mine = await byId(A, "hello bob");
    await mine.hover();
    await mine.getByRole("button", { name: "Edit" }).click();
    await mine.getByRole("textbox", { name: "Edit message" }).fill("hello bob, edited");
    await mine.getByRole("textbox", { name: "Edit message" }).press("Enter");
    await messageText(B, "hello bob, edited").waitFor();
    await messageItem(B, "hello bob, edited").getByText("(edited)").waitFor();
  });

  await step("a reaction appears on the other side", async () => {
    const theirs = messageItem(B, "hello bob, edited");
    await theirs.getByRole("button", { name: "React", exact: true }).click();
    await theirs.getByRole("button", { name: "React 👍" }).click();
    await messageItem(A, "hello bob, edited").getByRole("button", { name: "👍 1" }).waitFor();
  });

  await step("delete removes the message on the other side", async () => {
    await send(A, "this will be deleted");
    await messageText(B, "this will be deleted").waitFor();
    const mine = messageItem(A, "this will be deleted");
    await mine.hover();
    await mine.getByRole("button", { name: "Delete" }).click();
    await messageText(B, "this will be deleted").waitFor({ state: "detached" });
    await messageText(A, "this will be deleted").waitFor({ state: "detached" });
  });

  const evil = `<img src=x onerror="window.__xss=1"> <b>bold?</b>`;
  await step("markup in a message renders as text", async () => {
    await send(A, evil);
    await messageText(B, "<img src=x").waitFor();
    check((await messageText(B, "<img src=x").innerText()) === evil, "bob sees the literal text");
    check((await log(B).locator("img, b").count()) === 0, "no element was created from the content");
    check((await B.evaluate(() => window.__xss)) === undefined, "no script ran");
    await shot(A, "chat");
    await shot(B, "chat-phone");
  });

  await step("search finds a message, highlights it safely and jumps to it", async () => {
    await A.getByRole("button", { name: "Search messages" }).click();
    const box = A.getByRole("searchbox", { name: "Search messages" });
    await box.fill("onerror");
    await box.press("Enter");
    const results = A.getByRole("list", { name: "Search results" });
    await results.locator("mark").first().waitFor();
    check((await results.locator("img, b").count()) === 0, "search result markup is text");
    check((await results.innerText()).includes("<img src=x"), "escaped text shown literally");
    await box.fill("hello");
    await box.press("Enter");
    await results.locator("mark", { hasText: /^hello$/i }).first().waitFor();
    await shot(A, "search");
    await results.getByRole("button").filter({ hasText: "edited" }).click();
    await A.locator("li.flash", { hasText: "hello bob, edited" }).waitFor();
  });

  await step("scroll-back loads older messages in order", async () => {
    const chat = await api(A, "POST", "/api/chats", { workspace_id: workspaceId, name: "history", type: "channel", is_private: false });
    for (let batch = 0; batch < 3; batch++) {
      const operations = Array.from({ length: 40 }, (_, i) => ({
        method: "POST",
        path: "/api/messages",
        body: { chat_id: chat.id, content: `history ${batch * 40 + i + 1}` },
      }));
      const r = await api(A, "POST", "/api/batch", { operations });
      check(r.results.every((x) => x.status === 201), "history seeded");
    }
    await A.goto(`/w/${workspaceId}/c/${chat.id}`);
    await messageText(A, "history 120").waitFor();
    check((await messageText(A, /^history 1$/).count()) === 0, "oldest not loaded yet");
    await eventually("history 1 loaded by scrolling up", async () => {
      await log(A).evaluate((el) => (el.scrollTop = 0));
      return (await messageText(A, /^history 1$/).count()) === 1;
    });
    const texts = await log(A).locator("li[data-message-id] .content").allInnerTexts();
    check(texts.join("|") === Array.from({ length: 120 }, (_, i) => `history ${i + 1}`).join("|"), "all 120, in order, once");
    await A.goto(generalUrl);
    await messageText(A, "hi alice").waitFor();
  });

  await step("unread counts and last message for a chat not open; a direct message", async () => {
    const random = await api(A, "POST", "/api/chats", { workspace_id: workspaceId, name: "random", type: "channel", is_private: false });
    await api(B, "POST", `/api/chats/${random.id}/join`, {});
    await api(A, "POST", "/api/messages", { chat_id: random.id, content: "unread one" });
    await api(A, "POST", "/api/messages", { chat_id: random.id, content: "unread two" });
    // Bob's sidebar is a closed drawer at phone width: hidden, but in the accessibility tree
    // once opened.
    const link = B.getByRole("link", { name: "# random, 2 unread", includeHidden: true });
    await link.waitFor({ state: "attached" });
    await B.locator(".chat-list .last", { hasText: "alice: unread two" }).waitFor({ state: "attached" });
    await A.getByRole("button", { name: /^Message bob/ }).click();
    await A.waitForURL((u) => /\/c\/\d+$/.test(u.pathname) && u.pathname !== generalUrl);
    await A.getByRole("heading", { name: "alice, bob" }).waitFor();
    await send(A, "a direct hello");
    await messageText(A, "a direct hello").waitFor();
    await B.locator(".chat-list .last", { hasText: "alice: a direct hello" }).waitFor({ state: "attached" });
    await B.getByRole("button", { name: "Menu" }).click();
    await B.getByRole("link", { name: "# random, 2 unread" }).click();
    await messageText(B, "unread two").waitFor();
    await B.getByRole("link", { name: "# random", exact: true, includeHidden: true }).waitFor({ state: "attached" });
    await B.goto(generalUrl);
    await messageText(B, "hi alice").waitFor();
    await A.goto(generalUrl);
    await messageText(A, "hi alice").waitFor();
  });

  await step("the token is refreshed before it expires", async () => {
    if (!process.env.FECHATTER_E2E_SHORT_TOKENS) return;
    const first = await token(A);
    await eventually("a new token", async () => (await token(A)) !== first, 20_000);
    await send(A, "with a refreshed token");
    await messageText(B, "with a refreshed token").waitFor();
  });

  await step("a server restart mid-conversation loses nothing", async () => {
    if (process.env.FECHATTER_E2E_STANDALONE === "1") return;
    await A.getByTestId("connection-status").getByText("Connected").waitFor();
    await B.getByTestId("connection-status").getByText("Connected").waitFor();
    await control("stop", "stopped");
    await A.getByTestId("connection-status").getByText("Reconnecting…").waitFor();
    await B.getByTestId("connection-status").getByText("Reconnecting…").waitFor();
    await B.context().setOffline(true);
    await control("start", "started");
    // Sent before bob's page reconnects: it gets it by resuming from its last event id.
    await api(A, "POST", "/api/messages", { chat_id: Number(generalUrl.split("/").pop()), content: "sent during the reconnect" });
    await B.context().setOffline(false);
    await A.getByTestId("connection-status").getByText("Connected").waitFor();
    await B.getByTestId("connection-status").getByText("Connected").waitFor();
    await send(A, "after the restart");
    await send(B, "bob after the restart");
    for (const page of [A, B]) {
      for (const text of ["sent during the reconnect", "after the restart", "bob after the restart"]) {
        await messageText(page, text).first().waitFor();
        check((await messageText(page, new RegExp(`^${text}$`)).count()) === 1, `${text} shown once`);
      }
      assertOrderedUnique(await idsIn(page), "log after restart");
    }
  });

  await step("a gap larger than the replay budget: resync.required re-fetches the chat", async () => {
    if (process.env.FECHATTER_E2E_STANDALONE === "1") return;
    await A.getByTestId("connection-status").getByText("Connected").waitFor();
    await B.getByTestId("connection-status").getByText("Connected").waitFor();
    await control("stop", "stopped");
    await B.getByTestId("connection-status").getByText("Reconnecting…").waitFor();
    // Bob stays offline until the burst is stored, so he must resume across the whole gap.
    await B.context().setOffline(true);
    await control("start", "started");
    const chat_id = Number(generalUrl.split("/").pop());
    const operations = Array.from({ length: 30 }, (_, i) => ({
      method: "POST",
      path: "/api/messages",
      body: { chat_id, content: `burst ${i + 1}` },
    }));
    await api(A, "POST", "/api/batch", { operations });
    await B.context().setOffline(false);
    await eventually("bob's page told to resync", async () => B.frames_.includes("resync.required"));
    for (const page of [A, B]) {
      await messageText(page, /^burst 30$/).waitFor();
      const texts = await log(page).locator("li[data-message-id] .content").allInnerTexts();
      const bursts = texts.filter((t) => t.startsWith("burst "));
      check(bursts.join("|") === Array.from({ length: 30 }, (_, i) => `burst ${i + 1}`).join("|"), "30 bursts in order, once");
      assertOrderedUnique(await idsIn(page), "log after resync");
    }
  });

  await step("preferences: dark theme and Chinese apply at once", async () => {
    await A.getByRole("button", { name: "Profile and preferences" }).click();
    const dialog = A.getByRole("dialog");
    await dialog.getByLabel("Theme").selectOption("dark");
    await dialog.getByLabel("Language").selectOption("zh");
    await dialog.getByRole("button", { name: "Save" }).click();
    await A.waitForFunction(() => document.documentElement.dataset.theme === "dark" && document.documentElement.lang === "zh");
    await A.getByRole("button", { name: "退出" }).waitFor();
    await A.getByRole("button", { name: "个人资料与偏好" }).click();
    await dialog.getByLabel("语言").selectOption("en");
    await dialog.getByRole("button", { name: "保存" }).click();
    await A.getByRole("button", { name: "Sign out" }).waitFor();
    await shot(A, "chat-dark");
    await A.getByRole("button", { name: "Profile and preferences" }).click();
    await dialog.getByLabel("Theme").selectOption("light");
    await dialog.getByRole("button", { name: "Save" }).click();
    await A.waitForFunction(() => document.documentElement.dataset.theme === "light");
  });

  await step("a private channel: alice adds bob, who sees it appear", async () => {
    await A.getByRole("button", { name: "New channel" }).click();
    const dialog = A.getByRole("dialog");
    await dialog.getByLabel("Name").fill("secret");
    await dialog.getByRole("checkbox", { name: /Private/ }).check();
    await dialog.getByRole("button", { name: "Create channel" }).click();
    await A.getByRole("heading", { name: "#secret" }).waitFor();
    await A.getByRole("button", { name: "Add people" }).click();
    await A.getByRole("dialog").getByLabel("Person").selectOption({ label: "bob" });
    await A.getByRole("dialog").getByRole("button", { name: "Add" }).click();
    await B.getByRole("link", { name: "# secret", includeHidden: true }).waitFor({ state: "attached" });
    await send(A, "just between us");
    await B.getByRole("link", { name: "# secret, 1 unread", includeHidden: true }).waitFor({ state: "attached" });
  });

  await step("workspaces: create a second one and switch back", async () => {
    await A.getByRole("button", { name: "New workspace" }).click();
    await A.getByRole("dialog").getByLabel("Name").fill("Side project");
    await A.getByRole("button", { name: "Create workspace" }).click();
    await A.waitForURL((u) => /^\/w\/\d+$/.test(u.pathname) && u.pathname !== `/w/${workspaceId}`);
    await A.getByText("Pick a channel or a person to start chatting.").waitFor();
    await A.getByLabel("Workspace", { exact: true }).selectOption({ label: "Acme" });
    await A.waitForURL(new RegExp(`/w/${workspaceId}$`));
    await A.getByRole("link", { name: "# general" }).waitFor();
  });

  await step("a revoked token signs the user out cleanly", async () => {
    await api(B, "PUT", "/api/auth/change-password", { current_password: bob.password, new_password: "password-456" });
    await send(B, "with a revoked token");
    await B.waitForURL(/\/login/);
    await B.getByRole("alert").getByText(/session/i).waitFor();
  });

  check(errors.length === 0, `no page errors: ${errors.join("; ")}`);
  console.log(`${passed} passed, 0 failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
} catch (e) {
  console.log(`not ok - ${e.stack ?? e}`);
  for (const [who, page] of [["alice", A], ["bob", B]]) {
    const list = await page.locator(".chat-list").innerText().catch(() => "?");
    console.log(`${who}'s chats: ${list.replace(/\n/g, " | ")}`);
  }
  await A.screenshot({ path: "/tmp/fechatter-e2e-alice.png" }).catch(() => {});
  await B.screenshot({ path: "/tmp/fechatter-e2e-bob.png" }).catch(() => {});
  console.log("screenshots of the failure: /tmp/fechatter-e2e-alice.png, /tmp/fechatter-e2e-bob.png");
  if (errors.length) console.log(`page errors: ${errors.join("; ")}`);
  console.log(`${passed} passed, 1 failed`);
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
