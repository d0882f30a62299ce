// The authkeys dashboard. Plain JavaScript that calls the server's JSON API with the admin
// token, exactly as any other client would. Rules kept throughout:
// - The admin token lives in sessionStorage (this tab only); never in a URL, never logged.
// - A generated key exists only in the one-time panel's inputs and is cleared when the panel
//   is hidden; nothing stores it, so a reload cannot show it again.
// - Every string that comes from the server or the user is rendered with textContent or
//   Text nodes, never parsed as HTML.
// - Lists are fetched a page at a time (PAGE_SIZE rows), never whole: "Load more" follows the
//   server's next_cursor.

const TOKEN_STORAGE_KEY = "authkeys.adminToken";
const DEFAULT_SERVER = "http://127.0.0.1:7373";
const APP_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** Rows per page of a list: the server's default. */
const PAGE_SIZE = 100;
/** A key's tags (API.md, "Key policy"): this shape, at most this many. */
const TAG_PATTERN = /^tag:[a-z0-9][a-z0-9-]{0,62}$/;
const MAX_TAGS = 16;
/** A key's metadata, serialized as JSON, is at most this many bytes. */
const METADATA_MAX_BYTES = 1024;
/** How long a rotated key keeps working: the choices offered, and the API's default. */
const GRACE_CHOICES = [
  ["0", "Stop it now"],
  ["3600", "1 hour"],
  ["86400", "1 day"],
  ["604800", "7 days"],
  ["2592000", "30 days"],
];
const DEFAULT_GRACE = "3600";

const $ = (id) => document.getElementById(id);

const state = {
  apps: [],
  /** The selected app's id, taken from the URL fragment `#/apps/<id>`. */
  appId: null,
  app: null,
  keys: [],
  machines: [],
  /** The selected app's trust policies (loaded only for a token with trust_policies:write). */
  policies: [],
  /** The tags the lists are filtered on (each must match), and the new key's tags. */
  tagFilter: [],
  newTags: [],
  /** What GET /v1/server said: `{version, ephemeral_ttl}`, or null before (or without) it. */
  server: null,
  /**
   * Keys by id, for naming each machine's key: those listed, plus any a machine uses that is
   * not on the loaded page of keys (fetched one by one). Reset when another app is selected.
   */
  knownKeys: new Map(),
  /** Where each list's next page starts (the server's next_cursor), or null after the last. */
  next: { apps: null, keys: null, machines: null, policies: null },
  /** The Activity, Admin tokens and Webhooks pages' loaded rows, and the webhook whose
   * deliveries are shown. */
  events: [],
  tokens: [],
  webhooks: [],
  deliveries: [],
  deliveriesOf: null,
};

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function storedToken() {
  return sessionStorage.getItem(TOKEN_STORAGE_KEY);
}

/** Calls the API; resolves to the decoded JSON (null for 204) or rejects with an ApiError. */
async function api(method, path, body, token = storedToken()) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "unreachable", "the authkeys server did not answer. Is it running?");
  }
  if (response.status === 204) {
    return null;
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // A body that is not JSON: described by its status below.
  }
  if (!response.ok) {
    const error = data && data.error;
    throw new ApiError(
      response.status,
      (error && error.code) || `http_${response.status}`,
      (error && error.message) || `the server answered HTTP ${response.status}`,
    );
  }
  return data;
}

const appPath = (appId) => `/v1/apps/${encodeURIComponent(appId)}`;

/**
 * One page of the list at `path` (`field` names its items): `{items, next}`. `query` holds the
 * list's filters as [name, value] pairs (a name may repeat, like `tag`); `cursor` the previous
 * page's next_cursor (none for the first page).
 */
async function listPage(path, field, { cursor = null, query = [], token } = {}) {
  const params = new URLSearchParams(query);
  params.set("limit", String(PAGE_SIZE));
  if (cursor) params.set("cursor", cursor);
  const page = await api("GET", `${path}?${params}`, undefined, token);
  return { items: page[field], next: page.next_cursor };
}

/** Says, in a sentence, what went wrong with a request. */
function describeError(err) {
  if (!(err instanceof ApiError)) {
    return `something unexpected went wrong (${err && err.message ? err.message : err}).`;
  }
  const known = {
    app_exists: "an app with that id already exists. Choose another id.",
    app_not_found: "this app no longer exists (it may have been deleted elsewhere).",
    key_not_found: "this key no longer exists or was already revoked.",
    key_inactive: "this key can no longer be rotated: it is revoked, expired or already rotated.",
    machine_not_found: "this machine is no longer logged in.",
    forbidden: `this admin token may not do that: ${err.message}.`,
    internal: "the server hit an internal error; its log has the details.",
    unreachable: err.message,
  };
  const text = known[err.code] || `${err.message}.`.replace(/\.\.$/, ".");
  return err.status ? `${text} (${err.code}, HTTP ${err.status})` : text;
}

/**
 * Reports a failed action. A refused admin token ends the session: the dashboard returns to
 * sign-in, since nothing else can work.
 */
function fail(action, err) {
  if (err instanceof ApiError && err.status === 401) {
    signOut("The server refused the admin token (it may have changed). Sign in again.");
    return;
  }
  if (!(err instanceof ApiError)) {
    console.error(err);
  }
  showAlert(`${action}: ${describeError(err)}`);
}

// ---------------------------------------------------------------------------------------------
// Building DOM safely

/**
 * Creates an element. Children are nodes or strings (null ones are left out); strings always
 * become Text nodes.
 */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/**
 * Absolute times always carry their year and time zone (the browser's own zone, named), so a
 * screenshot or a pasted line is never ambiguous; the exact UTC time is in the tooltip.
 */
const dateFormat = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric" });
const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", timeZoneName: "short" });

/**
 * A <time> for an RFC 3339 time ("Dec 1, 2026, 04:10 PM UTC"), or a muted word when there is
 * none. The date and the clock time each stay whole; a narrow column may put them on two lines.
 */
function timeElement(iso, absent = "Never") {
  if (!iso) return el("span", { class: "muted" }, absent);
  const date = new Date(iso);
  return el(
    "time",
    { datetime: iso, title: iso },
    el("span", { class: "nowrap" }, `${dateFormat.format(date)},`),
    " ",
    el("span", { class: "nowrap" }, clockFormat.format(date)),
  );
}

/** How far `iso` is from now, in words: "just now", "5 min ago", "in 3 h", "2 days ago". */
function relativeText(iso) {
  const minutes = Math.round((Date.parse(iso) - Date.now()) / 60000);
  const size = Math.abs(minutes);
  let amount;
  if (size < 1) return "just now";
  if (size < 60) amount = `${size} min`;
  else if (size < 48 * 60) amount = `${Math.round(size / 60)} h`;
  else amount = plural(Math.round(size / (24 * 60)), "day");
  return minutes < 0 ? `${amount} ago` : `in ${amount}`;
}

/**
 * An absolute time with a relative one beside it: relative times never stand alone. `relative`
 * words the distance (relativeText by default); the span carries the time in `data-time` so a
 * timer can keep the words current.
 */
function timeWithRelative(iso, { absent = "Never", relative = relativeText } = {}) {
  if (!iso) return el("span", { class: "muted" }, absent);
  const words = el("span", { class: "relative muted" }, `(${relative(iso)})`);
  words.dataset.time = iso;
  words.dataset.kind = relative === timeLeftText ? "left" : "ago";
  return el("span", { class: "time-pair" }, timeElement(iso), " ", words);
}

/** How long an ephemeral machine has before it is logged out. */
function timeLeftText(iso) {
  const minutes = Math.ceil((Date.parse(iso) - Date.now()) / 60000);
  if (minutes <= 0) return "expiring now";
  if (minutes <= 60) return `${minutes} min left`;
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  if (hours >= 48) return `${plural(Math.floor(hours / 24), "day")} left`;
  return rest ? `${hours} h ${rest} min left` : `${hours} h left`;
}

/** A table cell that names its column, shown beside the value when rows become cards. */
const cell = (label, ...content) => el("td", { "data-label": label }, ...content);

/** A row's action button (destructive unless told otherwise); `label` is what a screen reader announces. */
function rowButton(text, label, action, kind = "button small danger-outline") {
  const button = el("button", { type: "button", class: kind, "aria-label": label }, text);
  button.addEventListener("click", () => busy(action));
  return button;
}

/** Shows `rows` in the table `<name>-table`, or its empty note `<name>-empty` when none. */
function fillTable(name, rows) {
  $(`${name}-body`).replaceChildren(...rows);
  $(`${name}-empty`).hidden = rows.length > 0;
  $(`${name}-table`).hidden = rows.length === 0;
}

const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;

// ---------------------------------------------------------------------------------------------
// Messages

function showStatus(text) {
  const status = $("status");
  status.textContent = text;
  status.hidden = false;
}

function showAlert(text) {
  const alert = $("alert");
  alert.textContent = text;
  alert.hidden = false;
}

function clearMessages() {
  for (const id of ["status", "alert"]) {
    $(id).hidden = true;
    $(id).textContent = "";
  }
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

function showSignIn(message) {
  $("console-view").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in-view").hidden = false;
  const error = $("sign-in-error");
  error.textContent = message || "";
  error.hidden = !message;
  if (message) {
    // Read it out: the field's description includes it, but focus alone may not announce it.
    showAlert(message);
  }
  $("admin-token").focus();
}

async function signIn(event) {
  event.preventDefault();
  clearMessages();
  const input = $("admin-token");
  const token = input.value.trim();
  const error = $("sign-in-error");
  // An HTTP header carries printable ASCII only; anything else was not pasted from a token.
  const problem = !token
    ? "Enter the admin token."
    : /^[\x20-\x7e]+$/.test(token)
      ? null
      : "An admin token is plain ASCII text: check that it was pasted whole and nothing else.";
  if (problem) {
    error.textContent = problem;
    error.hidden = false;
    input.focus();
    return;
  }
  let server;
  try {
    // Any admin token may read this, whatever its scopes; it says what the token may do.
    server = await api("GET", "/v1/server", undefined, token);
  } catch (err) {
    error.textContent =
      err instanceof ApiError && err.status === 401
        ? "The server refused this admin token. Check it and try again."
        : `Could not sign in: ${describeError(err)}`;
    error.hidden = false;
    input.select();
    input.focus();
    return;
  }
  sessionStorage.setItem(TOKEN_STORAGE_KEY, token);
  input.value = "";
  error.hidden = true;
  state.server = server;
  await showConsole();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_STORAGE_KEY);
  for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
  hideNewKey();
  state.apps = [];
  state.server = null;
  state.app = null;
  state.keys = [];
  state.machines = [];
  state.next = { apps: null, keys: null, machines: null };
  state.tagFilter = [];
  renderTagFilter();
  clearMessages();
  $("app-list").replaceChildren();
  $("keys-body").replaceChildren();
  $("machines-body").replaceChildren();
  showSignIn(message);
  if (!message) showStatus("Signed out. The admin token is forgotten in this tab.");
}

async function showConsole() {
  $("sign-in-view").hidden = true;
  $("sign-out").hidden = false;
  applyPermissions();
  await loadApps().catch((err) => fail("Could not list the apps", err));
  await route({ focus: false });
  $("main").focus();
}

// ---------------------------------------------------------------------------------------------
// Apps

/** Loads the first page of apps (again). */
async function loadApps() {
  if (!can("apps:read")) {
    // A token that may not list apps still works on the apps it is limited to.
    state.apps = (tokenApps() || []).map((id) => ({ id }));
    state.next.apps = null;
    renderApps();
    return;
  }
  const page = await listPage("/v1/apps", "apps");
  state.apps = page.items;
  state.next.apps = page.next;
  renderApps();
}

async function loadMoreApps() {
  clearMessages();
  try {
    const page = await listPage("/v1/apps", "apps", { cursor: state.next.apps });
    state.apps = state.apps.concat(page.items);
    state.next.apps = page.next;
  } catch (err) {
    fail("Could not list more apps", err);
    return;
  }
  renderApps();
}

/**
 * Opens or collapses the apps sidebar. Only a narrow window collapses it (CSS applies the
 * class there alone): with an app selected, the app comes first and the sidebar folds into a
 * one-line switcher above it.
 */
function setSidebarOpen(open) {
  $("sidebar").classList.toggle("collapsed", !open);
  $("apps-toggle").setAttribute("aria-expanded", String(open));
  $("apps-toggle-action").textContent = open ? "Hide apps" : "Switch app";
}

function renderApps() {
  const selected = state.apps.find((app) => app.id === state.appId);
  // With no app selected the sidebar stays open: there is nothing to switch from.
  $("apps-toggle").hidden = !state.appId;
  $("apps-toggle-current").textContent = selected ? selected.name || selected.id : state.appId || "";
  const list = $("app-list");
  list.replaceChildren(
    ...state.apps.map((app) => {
      const button = el(
        "button",
        { type: "button", class: "app-link", "aria-current": app.id === state.appId ? "page" : null },
        el("span", { class: "app-link-name" }, app.name || app.id),
        el("span", { class: "app-link-id" }, app.id),
      );
      button.dataset.appId = app.id;
      button.addEventListener("click", () => busy(() => openApp(app.id)));
      return el("li", {}, button);
    }),
  );
  $("apps-empty").hidden = state.apps.length > 0;
  $("apps-empty").textContent = can("apps:read")
    ? can("apps:write")
      ? "No apps yet. Create one below."
      : "No apps yet."
    : "This admin token may not list apps: open one at #/apps/<id>.";
  $("apps-more").hidden = !state.next.apps;
}

/** Shows an app and puts it in the URL (`#/apps/<id>`), so reloads and links keep it. */
async function openApp(appId) {
  const fragment = `#/apps/${appId}`;
  if (location.hash !== fragment) history.pushState(null, "", fragment);
  await selectAppFromUrl({ focus: true });
}

function appIdFromUrl() {
  // App ids never need escaping, so the fragment is taken as it is: anything else is no app.
  const match = /^#\/apps\/(.+)$/.exec(location.hash);
  return match && APP_ID_PATTERN.test(match[1]) ? match[1] : null;
}

async function selectAppFromUrl({ focus }) {
  const appId = appIdFromUrl();
  if (appId !== state.appId) {
    hideNewKey();
    state.knownKeys = new Map();
  }
  state.appId = appId;
  setSidebarOpen(!appId);
  renderApps();
  if (!appId) {
    state.app = null;
    $("app-detail").hidden = true;
    $("no-app").hidden = false;
    return;
  }
  if (await loadApp()) {
    if (focus) $("app-title").focus();
  }
}

/** The tag filters, as query pairs: every tag must match. */
const tagQuery = () => state.tagFilter.map((tag) => ["tag", tag]);

/** Each list's filters: revoked keys only when asked for; the tags filtered on. */
const listQuery = {
  keys: () => [...($("show-revoked").checked ? [["include_revoked", "true"]] : []), ...tagQuery()],
  machines: tagQuery,
  policies: () => [],
};

/**
 * Loads the selected app and the first page of its keys and of its machines. Returns whether
 * it succeeded.
 */
async function loadApp() {
  const appId = state.appId;
  try {
    // A list the token may not read is left empty (and says so) rather than refused.
    const none = { items: [], next: null };
    const [app, keys, machines, policies] = await Promise.all([
      can("apps:read") ? api("GET", appPath(appId)) : { id: appId, name: null, created_at: null },
      can("keys:read") ? listPage(`${appPath(appId)}/keys`, "keys", { query: listQuery.keys() }) : none,
      can("machines:read")
        ? listPage(`${appPath(appId)}/machines`, "machines", { query: listQuery.machines() })
        : none,
      can("trust_policies:write") ? listPage(`${appPath(appId)}/trust-policies`, "trust_policies") : none,
    ]);
    if (appId !== state.appId) return false;
    state.app = app;
    state.keys = keys.items;
    state.next.keys = keys.next;
    state.machines = machines.items;
    state.next.machines = machines.next;
    state.policies = policies.items;
    state.next.policies = policies.next;
    await learnKeysOf(appId, machines.items);
    if (appId !== state.appId) return false;
  } catch (err) {
    fail(`Could not load app ${appId}`, err);
    // An app that is gone, or that this token may not reach, is not shown at all.
    if (err instanceof ApiError && (err.code === "app_not_found" || err.code === "forbidden")) {
      history.replaceState(null, "", location.pathname);
      state.appId = null;
      state.app = null;
      $("app-detail").hidden = true;
      $("no-app").hidden = false;
      await loadApps().catch((again) => fail("Could not list the apps", again));
    }
    return false;
  }
  renderApp();
  return true;
}

/** The selected app's lists: each one's path under the app and its field in the answer. */
const APP_LISTS = {
  keys: { path: "keys", field: "keys", render: () => renderKeys() },
  machines: { path: "machines", field: "machines", render: () => renderMachines() },
  policies: { path: "trust-policies", field: "trust_policies", render: () => renderPolicies() },
};

/** Appends the next page of the selected app's list `list` ("keys", "machines", "policies"). */
async function loadMore(list) {
  clearMessages();
  const appId = state.appId;
  const query = listQuery[list]();
  const { path, field, render } = APP_LISTS[list];
  let page;
  try {
    page = await listPage(`${appPath(appId)}/${path}`, field, { cursor: state.next[list], query });
  } catch (err) {
    fail(`Could not list more ${list}`, err);
    return;
  }
  if (list === "machines") await learnKeysOf(appId, page.items);
  if (appId !== state.appId) return;
  state[list] = state[list].concat(page.items);
  state.next[list] = page.next;
  render();
}

function renderApp() {
  const app = state.app;
  $("no-app").hidden = true;
  $("app-detail").hidden = false;
  $("app-title").textContent = app.name || app.id;
  $("app-id-label").textContent = app.id;
  $("app-created").replaceChildren(timeElement(app.created_at, "unknown"));
  renderKeys();
  renderMachines();
  renderPolicies();
}

/**
 * What is wrong with an app id, in a sentence that says how to fix it (with a corrected id to
 * try, when one can be made from what was typed), or null when it is valid.
 */
function appIdProblem(id) {
  if (!id) return "Enter an app id, e.g. my-app.";
  if (APP_ID_PATTERN.test(id)) return null;
  const rule = "An app id uses only lowercase letters, digits and dashes, and starts with a letter or digit";
  const suggestion = id
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
  return APP_ID_PATTERN.test(suggestion) ? `${rule}: try ${suggestion}` : `${rule}.`;
}

/** Shows the app id's problem under the field (our words, not the browser's bubble). */
function checkAppIdField() {
  const field = $("app-id");
  const problem = appIdProblem(field.value.trim());
  showFormError("app-id-error", problem);
  if (problem) field.setAttribute("aria-invalid", "true");
  else field.removeAttribute("aria-invalid");
  return !problem;
}

async function createApp(event) {
  event.preventDefault();
  clearMessages();
  if (!checkAppIdField()) {
    $("app-id").focus();
    return;
  }
  const id = $("app-id").value.trim();
  const name = $("app-name").value.trim();
  const body = name ? { id, name } : { id };
  try {
    await api("POST", "/v1/apps", body);
  } catch (err) {
    fail(`Could not create app ${id}`, err);
    return;
  }
  event.target.reset();
  showStatus(`Created app ${id}.`);
  try {
    await loadApps();
  } catch (err) {
    fail("Could not list the apps", err);
    return;
  }
  await openApp(id);
}

async function deleteApp() {
  clearMessages();
  // Count what the deletion revokes from fresh data, not from what was loaded earlier, and
  // over every key and machine: the lists on the page may be filtered by tag.
  if (!(await loadApp())) return;
  const app = state.app;
  let keys, machinesPage;
  try {
    [keys, machinesPage] = await Promise.all([
      can("keys:read") ? listPage(`${appPath(app.id)}/keys`, "keys") : { items: [], next: "unknown" },
      can("machines:read") ? listPage(`${appPath(app.id)}/machines`, "machines") : { items: [], next: "unknown" },
    ]);
  } catch (err) {
    fail(`Could not count what deleting app ${app.id} revokes`, err);
    return;
  }
  // Only the first page of each list is read: past it, the counts are "N or more".
  const atLeast = (count, more, word) => (more ? `${count} or more ${word}s` : plural(count, word));
  const activeKeys = (word) => atLeast(keys.items.length, keys.next, word);
  const machines = atLeast(machinesPage.items.length, machinesPage.next, "machine");
  const confirmed = await confirmAction({
    title: `Delete app ${app.name || app.id}?`,
    body: [
      `This deletes the app ${app.id}, revokes its ${activeKeys("active auth key")} ` +
        `and logs out its ${machines} at once.`,
      "This cannot be undone. The app id can be used again later for a new, empty app.",
    ],
    typed: { label: `Type ${app.id} to confirm`, expected: app.id },
    confirmLabel: "Delete app",
  });
  if (!confirmed) return;
  try {
    await api("DELETE", appPath(app.id));
  } catch (err) {
    fail(`Could not delete app ${app.id}`, err);
    return;
  }
  history.replaceState(null, "", location.pathname);
  await selectAppFromUrl({ focus: false });
  showStatus(`Deleted app ${app.id}: ${activeKeys("key")} revoked, ${machines} logged out.`);
  try {
    await loadApps();
  } catch (err) {
    fail("Could not list the apps", err);
  }
  $("main").focus();
}

// ---------------------------------------------------------------------------------------------
// Key policy: durations, tags, metadata

/** A duration in words: "1 hour", "90 minutes", "2 days", "45 seconds". */
function durationText(seconds) {
  for (const [size, unit] of [
    [86400, "day"],
    [3600, "hour"],
    [60, "minute"],
  ]) {
    if (seconds >= size && seconds % size === 0) return plural(seconds / size, unit);
  }
  return plural(seconds, "second");
}

/**
 * A tag as typed, made whole ("ci" means "tag:ci"), and what is wrong with it next to `tags`
 * (the ones already chosen): `{tag, problem}`, `problem` null when it can be added.
 */
function checkTag(typed, tags) {
  const text = typed.trim();
  const tag = text.startsWith("tag:") ? text : `tag:${text}`;
  let problem = null;
  if (!text) problem = "Type a tag first, e.g. tag:ci.";
  else if (!TAG_PATTERN.test(tag))
    problem = `${tag} is not a tag: after tag: come lowercase letters, digits and dashes (at most 63), starting with a letter or digit.`;
  else if (tags.includes(tag)) problem = `${tag} is already there.`;
  return { tag, problem };
}

/**
 * Shows `tags` as chips in the list `listId`, each with a button that calls `onRemove(tag)`.
 * `what` names the chips for screen readers ("Remove tag:ci from the filter").
 */
function renderChips(listId, tags, onRemove, what) {
  $(listId).replaceChildren(
    ...tags.map((tag) => {
      const remove = el("button", { type: "button", class: "chip-remove", "aria-label": `Remove ${tag}${what}` }, "×");
      remove.addEventListener("click", () => busy(() => onRemove(tag)));
      return el("li", { class: "chip" }, el("span", {}, tag), remove);
    }),
  );
}

/**
 * A row's tags as chips; each one filters the lists on that tag when clicked. Tags come from
 * the server (and so from whoever created the key): text only, like everything else.
 */
function tagChips(tags) {
  if (!tags || tags.length === 0) return null;
  return el(
    "ul",
    { class: "chips row-chips", "aria-label": "Tags" },
    ...tags.map((tag) => {
      const button = el("button", { type: "button", class: "chip chip-button", title: `Show only ${tag}` }, tag);
      button.addEventListener("click", () => busy(() => addTagFilter(tag)));
      return el("li", {}, button);
    }),
  );
}

/** A key's or machine's metadata, folded into a "Metadata (n)" disclosure of name = value lines. */
function metadataDetails(metadata) {
  const entries = metadata ? Object.entries(metadata) : [];
  if (entries.length === 0) return null;
  return el(
    "details",
    { class: "metadata-view" },
    el("summary", {}, `Metadata (${entries.length})`),
    el(
      "dl",
      {},
      ...entries.flatMap(([name, value]) => [
        el("dt", {}, name),
        el("dd", {}, typeof value === "string" ? value : JSON.stringify(value)),
      ]),
    ),
  );
}

let pairRowsAdded = 0;

/**
 * Adds an empty name = value row to the rows `rowsId` (a form's metadata or claims); `what`
 * names its inputs for screen readers ("Metadata name 1"), and Remove returns focus to the
 * button `addId`.
 */
function addPairRow(rowsId, addId, what) {
  pairRowsAdded += 1;
  const number = pairRowsAdded;
  const input = (part, maxlength) =>
    el("input", {
      class: `metadata-${part}`,
      "aria-label": `${what} ${part} ${number}`,
      placeholder: part,
      autocomplete: "off",
      spellcheck: "false",
      maxlength,
    });
  const name = input("name", "200");
  const value = input("value", "1000");
  const remove = el("button", { type: "button", class: "button small ghost", "aria-label": `Remove ${what.toLowerCase()} ${number}` }, "Remove");
  const row = el("div", { class: "metadata-row" }, name, el("span", { class: "muted" }, "="), value, remove);
  remove.addEventListener("click", () => {
    row.remove();
    $(addId).focus();
  });
  $(rowsId).append(row);
  name.focus();
}

/** Adds an empty name = value row to the generate form's metadata. */
const addMetadataRow = () => addPairRow("key-metadata-rows", "key-metadata-add", "Metadata");

/**
 * The name = value rows `rowsId` as an object, or `{problem}` saying what to fix. Rows left
 * wholly empty are ignored; values are text.
 */
function collectPairs(rowsId) {
  const pairs = {};
  for (const row of $(rowsId).children) {
    const name = row.querySelector(".metadata-name").value.trim();
    const value = row.querySelector(".metadata-value").value;
    if (!name && !value) continue;
    if (!name) return { problem: `Give the value “${value}” a name.` };
    if (Object.hasOwn(pairs, name)) return { problem: `The name “${name}” is used twice.` };
    pairs[name] = value;
  }
  return { pairs };
}

/** The generate form's metadata as an object, or `{problem}` saying what to fix. */
function collectMetadata() {
  const { pairs: metadata, problem } = collectPairs("key-metadata-rows");
  if (problem) return { problem };
  const size = new TextEncoder().encode(JSON.stringify(metadata)).length;
  if (size > METADATA_MAX_BYTES)
    return { problem: `Metadata is ${size} bytes as JSON; a key's is at most ${METADATA_MAX_BYTES}.` };
  return { metadata };
}

/** Reads what the server tells clients (its ephemeral TTL), for the generate form's hints. */
async function loadServerInfo() {
  try {
    state.server = await api("GET", "/v1/server");
  } catch (err) {
    // Hints keep their general wording, and every action is offered (the server still
    // refuses what the token may not do).
    state.server = null;
    if (err instanceof ApiError && err.status === 401) throw err;
    return;
  }
  showServerInfo();
}

/** Words the generate form's hints with the server's real ephemeral TTL. */
function showServerInfo() {
  if (!state.server) return;
  const ttl = durationText(state.server.ephemeral_ttl);
  $("ephemeral-ttl-text").textContent = ttl;
  $("session-ttl-default").textContent = `Server default (${ttl})`;
}

// ---------------------------------------------------------------------------------------------
// Auth keys

const keyHasExpired = (key) => Boolean(key.expires_at) && Date.parse(key.expires_at) <= Date.now();

/** Whether the API would rotate a key: not revoked, expired or already rotated (a used-up key
 * can be: its replacement starts with a fresh count). */
const keyCanRotate = (key) => !key.revoked_at && !keyHasExpired(key) && !key.rotated_to;

function keyTypeBadges(key) {
  const badge = (text, kind = "") => el("span", { class: `badge ${kind}` }, text);
  const badges = [key.reusable ? badge("Reusable", "badge-reusable") : badge("Single-use")];
  if (key.ephemeral) badges.push(badge("Ephemeral", "badge-ephemeral"));
  if (key.session_ttl) badges.push(badge(`Session ${durationText(key.session_ttl)}`, "badge-ephemeral"));
  if (key.idle_timeout) badges.push(badge(`Idle ${durationText(key.idle_timeout)}`));
  if (key.revoked_at) badges.push(badge("Revoked", "badge-gone"));
  else if (keyHasExpired(key)) badges.push(badge("Expired", "badge-gone"));
  else if (key.uses_remaining === 0 || (!key.reusable && key.uses > 0)) badges.push(badge("Used"));
  if (key.rotated_to) badges.push(badge("Rotated", "badge-gone"));
  return el("div", { class: "badges" }, ...badges);
}

/** Uses, and for a key with a limit, of how many and how many remain. */
function usesCell(key) {
  const td = el("td", { class: "num", "data-label": "Uses" });
  if (key.reusable && key.max_uses != null) {
    td.append(
      el("span", { class: "uses" }, `${key.uses} of ${key.max_uses}`),
      el("span", { class: "muted small uses-left" }, `${key.uses_remaining} left`),
    );
  } else {
    td.append(String(key.uses));
  }
  return td;
}

function keyLabel(key) {
  return key.description ? `“${key.description}” (${key.hint})` : key.hint;
}

function renderKeys() {
  const rows = state.keys.map((key) => {
    const description = key.description
      ? el("div", { class: "cell-text key-description" }, key.description)
      : el("div", { class: "muted key-description" }, "No description");
    const actions = el("td", { class: "actions" });
    if (key.revoked_at) {
      actions.append(el("span", { class: "revoked-at" }, "Revoked ", timeElement(key.revoked_at)));
    } else if (can("keys:write")) {
      if (keyCanRotate(key)) {
        actions.append(rowButton("Rotate", `Rotate key ${keyLabel(key)}`, () => rotateKey(key), "button small"));
      }
      actions.append(rowButton("Revoke", `Revoke key ${keyLabel(key)}`, () => revokeKey(key)));
    }
    const row = el(
      "tr",
      { class: key.revoked_at ? "revoked" : null },
      el(
        "td",
        { class: "key-cell", "data-label": "Key" },
        description,
        el("div", { class: "hint-text muted" }, key.hint),
        tagChips(key.tags),
        metadataDetails(key.metadata),
      ),
      cell("Type", keyTypeBadges(key)),
      cell("Created", timeElement(key.created_at)),
      cell("Expires", timeElement(key.expires_at)),
      cell("Last used", timeWithRelative(key.last_used_at)),
      usesCell(key),
      el("td", { class: "num", "data-label": "Machines" }, String(key.machines)),
      actions,
    );
    row.dataset.keyId = key.id;
    return row;
  });
  fillTable("keys", rows);
  $("keys-empty").textContent = !can("keys:read")
    ? "This admin token may not list keys (it lacks keys:read)."
    : state.tagFilter.length
      ? `No keys carry ${state.tagFilter.join(" and ")}.`
      : can("keys:write")
        ? "No keys. Generate one with Generate key."
        : "No keys.";
  $("keys-more").hidden = !state.next.keys;
}

/** Opens the generate form, in a modal dialog over the key list, with an empty form. */
function openGenerateDialog() {
  clearMessages();
  $("generate-form").reset();
  state.newTags = [];
  renderNewTags();
  $("key-metadata-rows").replaceChildren();
  for (const id of ["generate-error", "key-tags-error", "key-metadata-error", "key-max-uses-error"]) {
    showFormError(id, null);
  }
  showPolicyFields();
  $("generate-app").textContent = state.appId;
  $("generate-dialog").returnValue = "";
  $("generate-dialog").showModal();
  $("key-description").focus();
}

/** Shows the fields that apply to the type chosen: a use limit for reusable keys, a session
 * lifetime for ephemeral ones. */
function showPolicyFields() {
  $("key-max-uses-field").hidden = !$("key-reusable").checked;
  $("key-session-ttl-field").hidden = !$("key-ephemeral").checked;
}

function renderNewTags() {
  renderChips("key-tags", state.newTags, (tag) => {
    state.newTags = state.newTags.filter((t) => t !== tag);
    renderNewTags();
    $("key-tag-input").focus();
  }, "");
}

/** Adds the tag typed in the generate form; returns false (and says why) if it cannot. */
function addNewTag() {
  const input = $("key-tag-input");
  const { tag, problem } = checkTag(input.value, state.newTags);
  const full = !problem && state.newTags.length >= MAX_TAGS ? `A key has at most ${MAX_TAGS} tags.` : null;
  showFormError("key-tags-error", problem || full);
  if (problem || full) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return false;
  }
  input.removeAttribute("aria-invalid");
  state.newTags = [...state.newTags, tag];
  input.value = "";
  renderNewTags();
  return true;
}

/** Shows (or, with null, hides) a form's own error line. */
function showFormError(id, text) {
  $(id).textContent = text || "";
  $(id).hidden = !text;
}

/**
 * The request body the generate form describes, or null after showing, under its field, what
 * must be fixed first. Fields that do not apply to the chosen type are left out.
 */
function generateBody() {
  if ($("key-tag-input").value.trim() && !addNewTag()) return null;
  const { metadata, problem } = collectMetadata();
  showFormError("key-metadata-error", problem);
  if (problem) {
    $("key-metadata-add").focus();
    return null;
  }
  const reusable = $("key-reusable").checked;
  const ephemeral = $("key-ephemeral").checked;
  const maxUses = $("key-max-uses").value.trim();
  const maxUsesProblem =
    reusable && maxUses && !(/^[0-9]+$/.test(maxUses) && Number.isSafeInteger(Number(maxUses)) && Number(maxUses) >= 1)
      ? "Enter a whole number of logins, 1 or more, or leave it empty for no limit."
      : null;
  showFormError("key-max-uses-error", maxUsesProblem);
  if (maxUsesProblem) {
    $("key-max-uses").focus();
    return null;
  }
  const description = $("key-description").value.trim();
  const expiry = $("key-expiry").value;
  const sessionTtl = $("key-session-ttl").value;
  const idleTimeout = $("key-idle-timeout").value;
  const body = { reusable, ephemeral, expires_in: expiry ? Number(expiry) : null };
  if (description) body.description = description;
  if (state.newTags.length) body.tags = state.newTags;
  if (Object.keys(metadata).length) body.metadata = metadata;
  if (reusable && maxUses) body.max_uses = Number(maxUses);
  if (ephemeral && sessionTtl) body.session_ttl = Number(sessionTtl);
  if (idleTimeout) body.idle_timeout = Number(idleTimeout);
  return body;
}

async function generateKey(event) {
  event.preventDefault();
  clearMessages();
  showFormError("generate-error", null);
  const form = event.target;
  const body = generateBody();
  if (!body) return;
  const appId = state.appId;
  let created;
  try {
    created = await api("POST", `${appPath(appId)}/keys`, body);
  } catch (err) {
    // The dialog stays open with what was typed, and says why, inside it: the page's own
    // message line is hidden behind the modal.
    if (err instanceof ApiError && err.status === 401) {
      $("generate-dialog").close();
      fail("Could not generate the key", err);
    } else {
      showFormError("generate-error", `Could not generate the key: ${describeError(err)}`);
    }
    return;
  }
  $("generate-dialog").close("generated");
  form.reset();
  showNewKey(created);
  const kind = [created.reusable ? "reusable" : "single-use", created.ephemeral ? "ephemeral" : null]
    .filter(Boolean)
    .join(", ");
  showStatus(`Generated a ${kind} key for ${appId}. Copy it now: it is shown only once.`);
  await loadApp();
}

/**
 * Shows a new key in the one-time panel. After a rotation, `replaced` is the old key as the
 * server now has it, and the panel says when that one stops working.
 */
function showNewKey(created, replaced = null) {
  const note = $("new-key-rotated");
  note.hidden = !replaced;
  note.replaceChildren();
  if (replaced) {
    const stops = replaced.expires_at;
    const past = stops && Date.parse(stops) <= Date.now();
    note.append(
      `This key replaces ${keyLabel(replaced)}. `,
      past ? "The old key stopped working at " : "The old key keeps working until ",
      timeWithRelative(stops),
      past ? "." : ", then stops. ",
      "Machines already logged in with it stay logged in.",
    );
  }
  const origin = location.origin;
  const server = origin === DEFAULT_SERVER ? "" : ` --server=${origin}`;
  $("new-key-value").value = created.key;
  // The key goes in the environment, not argv, where `ps` would show it.
  $("new-key-command").value = `AUTHKEYS_AUTH_KEY=${created.key} authkeys login${server}`;
  $("new-key-panel").hidden = false;
  $("new-key-title").focus();
  $("new-key-panel").scrollIntoView({ block: "nearest" });
}

/** Forgets the one-time key: once hidden it cannot be shown again. */
function hideNewKey() {
  $("new-key-value").value = "";
  $("new-key-command").value = "";
  $("new-key-rotated").replaceChildren();
  $("new-key-panel").hidden = true;
}

async function copyField(inputId, button, what) {
  const input = $(inputId);
  const text = input.value;
  let copied = false;
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch {
      // Not permitted here; fall back to copying the selection below.
    }
  }
  if (!copied) {
    input.focus();
    input.select();
    try {
      copied = document.execCommand("copy");
    } catch {
      copied = false;
    }
  }
  if (copied) {
    showStatus(`Copied the ${what} to the clipboard.`);
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => {
      button.textContent = label;
    }, 2000);
  } else {
    input.focus();
    input.select();
    showAlert(`Could not copy the ${what} automatically: it is selected, so press Ctrl+C (⌘C on a Mac).`);
  }
}

/**
 * Rotates a key: asks how long the old key keeps working, then shows the new key once and
 * when the old one stops.
 */
async function rotateKey(key) {
  clearMessages();
  const grace = await confirmAction({
    title: "Rotate this auth key?",
    body: [
      `A new key replaces ${keyLabel(key)}, with the same description, type, tags, metadata and limits` +
        `${key.expires_at ? ", and the same lifetime counted from now" : ""}. It is shown once.`,
      "Machines already logged in with the old key stay logged in.",
    ],
    choice: { label: "The old key keeps working for", choices: GRACE_CHOICES, value: DEFAULT_GRACE },
    confirmLabel: "Rotate key",
    destructive: false,
  });
  if (grace === false) return;
  const keyPath = `${appPath(state.appId)}/keys/${encodeURIComponent(key.id)}`;
  let created;
  try {
    created = await api("POST", `${keyPath}/rotate`, { grace_seconds: Number(grace) });
  } catch (err) {
    fail(`Could not rotate the key ${key.hint}`, err);
    await loadApp();
    return;
  }
  // The old key as the server now has it: its expiry is what the panel promises.
  let old = null;
  try {
    old = await api("GET", keyPath);
  } catch {
    old = { ...key, expires_at: new Date(Date.now() + Number(grace) * 1000).toISOString() };
  }
  showNewKey(created, old);
  showStatus(`Rotated the key ${keyLabel(key)}. Copy the new key now: it is shown only once.`);
  await loadApp();
}

async function revokeKey(key) {
  clearMessages();
  const machines = key.machines;
  const confirmed = await confirmAction({
    title: "Revoke this auth key?",
    body: [
      `The key ${keyLabel(key)} stops working at once: it logs in no more machines.`,
      machines > 0
        ? `It will log out ${plural(machines, "machine")} that logged in with it.`
        : "No machine logged in with it is active, so no machine will be logged out.",
      "This cannot be undone.",
    ],
    confirmLabel: machines > 0 ? `Revoke key and log out ${plural(machines, "machine")}` : "Revoke key",
  });
  if (!confirmed) return;
  try {
    await api("DELETE", `${appPath(state.appId)}/keys/${encodeURIComponent(key.id)}`);
  } catch (err) {
    fail(`Could not revoke the key ${key.hint}`, err);
    await loadApp();
    return;
  }
  showStatus(`Revoked the key ${keyLabel(key)}; ${plural(machines, "machine")} logged out.`);
  await loadApp();
  $("key-list-title").setAttribute("tabindex", "-1");
  $("key-list-title").focus();
}

// ---------------------------------------------------------------------------------------------
// Filtering by tag

function renderTagFilter() {
  renderChips("tag-filters", state.tagFilter, removeTagFilter, " from the filter");
}

/** Lists only keys and machines that carry `tag` too (every tag filtered on must match). */
async function addTagFilter(tag) {
  const { problem } = checkTag(tag, state.tagFilter);
  if (problem) return;
  state.tagFilter = [...state.tagFilter, tag];
  renderTagFilter();
  await loadApp();
  showStatus(`Showing keys and machines with ${state.tagFilter.join(" and ")}.`);
}

async function removeTagFilter(tag) {
  state.tagFilter = state.tagFilter.filter((t) => t !== tag);
  renderTagFilter();
  await loadApp();
  showStatus(state.tagFilter.length ? `Showing keys and machines with ${state.tagFilter.join(" and ")}.` : "Showing every key and machine.");
  $("tag-filter-input").focus();
}

async function submitTagFilter(event) {
  event.preventDefault();
  clearMessages();
  const input = $("tag-filter-input");
  const { tag, problem } = checkTag(input.value, state.tagFilter);
  showFormError("tag-filter-error", problem);
  if (problem) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  input.removeAttribute("aria-invalid");
  input.value = "";
  await addTagFilter(tag);
}

// ---------------------------------------------------------------------------------------------
// Machines

/**
 * Makes sure every key these machines logged in with is known by description and hint: keys
 * on the loaded page are known already; any other is fetched once (a page of machines names
 * at most PAGE_SIZE keys). A key that cannot be fetched is shown by its id.
 */
async function learnKeysOf(appId, machines) {
  for (const key of state.keys) state.knownKeys.set(key.id, key);
  const missing = [...new Set(machines.map((machine) => machine.key_id))].filter(
    (id) => id && !state.knownKeys.has(id),
  );
  const fetched = await Promise.all(
    missing.map((id) => api("GET", `${appPath(appId)}/keys/${encodeURIComponent(id)}`).catch(() => null)),
  );
  for (const key of fetched) if (key) state.knownKeys.set(key.id, key);
}

/** The key a machine logged in with: its description over its hint, or its id if unknown;
 * for a login with an ID token, the trust policy it came through instead. */
function machineKeyCell(machine) {
  if (machine.trust_policy_id) {
    const policy = state.policies.find((p) => p.id === machine.trust_policy_id);
    return el(
      "div",
      { class: "machine-policy", title: machine.trust_policy_id },
      el("span", { class: "badge badge-ephemeral" }, "Trust policy"),
      policy && policy.description ? el("div", { class: "cell-text key-description" }, policy.description) : null,
      el("div", { class: "hint-text muted" }, machine.trust_policy_id),
    );
  }
  const key = state.knownKeys.get(machine.key_id);
  if (!key) return el("span", { class: "hint-text" }, machine.key_id || "—");
  const description = key.description
    ? el("div", { class: "cell-text key-description" }, key.description)
    : el("div", { class: "muted key-description" }, "No description");
  return el("div", { title: key.id }, description, el("div", { class: "hint-text muted" }, key.hint));
}

function renderMachines() {
  const rows = state.machines.map((machine) => {
    const button = can("machines:write")
      ? rowButton("Log out", `Log out machine ${machine.name || machine.id}`, () => logOutMachine(machine))
      : null;
    const name = el(
      "div",
      {},
      el("div", { class: "cell-text" }, machine.name || machine.id),
      el("div", { class: "hint-text muted" }, machine.id),
      tagChips(machine.tags),
      metadataDetails(machine.metadata),
    );
    const row = el(
      "tr",
      {},
      cell("Name", name),
      cell("Key", machineKeyCell(machine)),
      cell("Logged in", timeElement(machine.created_at)),
      cell("Time left", timeWithRelative(machine.expires_at, { absent: "No limit", relative: timeLeftText })),
      cell("Idle logout", timeWithRelative(machine.idle_expires_at, { relative: timeLeftText })),
      cell("Last seen", timeWithRelative(machine.last_seen_at)),
      el("td", { class: "actions" }, button),
    );
    row.dataset.machineId = machine.id;
    return row;
  });
  fillTable("machines", rows);
  $("machines-empty").textContent = can("machines:read")
    ? "No machine is logged in."
    : "This admin token may not list machines (it lacks machines:read).";
  $("machines-more").hidden = !state.next.machines;
}

async function logOutMachine(machine) {
  clearMessages();
  const name = machine.name || machine.id;
  const confirmed = await confirmAction({
    title: `Log out ${name}?`,
    body: [
      `Its session stops working at once. To come back, the machine must log in again with an auth key.`,
    ],
    confirmLabel: "Log out machine",
  });
  if (!confirmed) return;
  try {
    await api("DELETE", `${appPath(state.appId)}/machines/${encodeURIComponent(machine.id)}`);
  } catch (err) {
    fail(`Could not log out ${name}`, err);
    await loadApp();
    return;
  }
  showStatus(`Logged out ${name}.`);
  await loadApp();
  $("machines-title").setAttribute("tabindex", "-1");
  $("machines-title").focus();
}

// ---------------------------------------------------------------------------------------------
// Trust policies (OIDC workload identity), for a token with trust_policies:write

const GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com";
const GITHUB_SUBJECT_EXAMPLE = "repo:OWNER/REPO:ref:refs/heads/main";

/** A policy in a sentence's words: its description, else its id. */
const policyLabel = (policy) => (policy.description ? `“${policy.description}” (${policy.id})` : policy.id);

/** What a policy's machines get: ephemeral with their session lifetime, idle logout. */
function policyBadges(policy) {
  const badge = (text, kind = "") => el("span", { class: `badge ${kind}` }, text);
  const badges = [];
  if (policy.ephemeral) badges.push(badge("Ephemeral", "badge-ephemeral"));
  if (policy.session_ttl) badges.push(badge(`Session ${durationText(policy.session_ttl)}`, "badge-ephemeral"));
  if (policy.idle_timeout) badges.push(badge(`Idle ${durationText(policy.idle_timeout)}`));
  if (badges.length === 0) badges.push(el("span", { class: "muted" }, "No limits"));
  return el("div", { class: "badges" }, ...badges);
}

/** What a policy's tokens must carry: issuer, audience, subject and claims (text only). */
function tokenMatch(policy) {
  const claims = Object.entries(policy.claims || {});
  const line = (label, ...value) => [el("dt", {}, label), el("dd", {}, ...value)];
  return el(
    "dl",
    { class: "token-match" },
    ...line("Issuer", el("span", { class: "mono-text" }, policy.issuer)),
    ...line("Audience", el("span", { class: "mono-text" }, policy.audience)),
    ...line("Subject", el("code", {}, policy.subject)),
    ...line(
      "Claims",
      ...(claims.length
        ? claims.map(([name, value]) => el("div", { class: "claim" }, el("span", { class: "mono-text muted" }, name), " = ", value))
        : [el("span", { class: "muted" }, "None")]),
    ),
  );
}

function renderPolicies() {
  const rows = state.policies.map((policy) => {
    const row = el(
      "tr",
      {},
      el(
        "td",
        { class: "key-cell", "data-label": "Policy" },
        policy.description
          ? el("div", { class: "cell-text key-description" }, policy.description)
          : el("div", { class: "muted key-description" }, "No description"),
        el("div", { class: "hint-text muted" }, policy.id),
        tagChips(policy.tags),
        metadataDetails(policy.metadata),
      ),
      el("td", { class: "details-cell", "data-label": "Tokens it accepts" }, tokenMatch(policy)),
      cell("Machines get", policyBadges(policy)),
      cell("Created", timeElement(policy.created_at)),
      el("td", { class: "actions" }, rowButton("Delete", `Delete trust policy ${policyLabel(policy)}`, () => deletePolicy(policy))),
    );
    row.dataset.policyId = policy.id;
    return row;
  });
  fillTable("policies", rows);
  $("policies-more").hidden = !state.next.policies;
}

/** Opens the new-policy form, empty, in a modal dialog. */
function openPolicyDialog() {
  clearMessages();
  $("policy-form").reset();
  $("policy-claims-rows").replaceChildren();
  for (const id of ["policy-error", "policy-issuer-error", "policy-audience-error", "policy-subject-error", "policy-claims-error", "policy-tags-error"]) {
    showFormError(id, null);
  }
  // The lifetimes offered are the generate dialog's (worded with the server's ephemeral TTL).
  for (const [from, to] of [
    ["key-session-ttl", "policy-session-ttl"],
    ["key-idle-timeout", "policy-idle-timeout"],
  ]) {
    const options = [...$(from).options].map((option) => option.cloneNode(true));
    for (const option of options) option.removeAttribute("id");
    $(to).replaceChildren(...options);
  }
  showPolicySessionField();
  $("policy-app").textContent = state.appId;
  $("policy-dialog").returnValue = "";
  $("policy-dialog").showModal();
  $("policy-issuer").focus();
}

const showPolicySessionField = () => {
  $("policy-session-ttl-field").hidden = !$("policy-ephemeral").checked;
};

/** The GitHub Actions preset: GitHub's issuer, and a subject whose OWNER/REPO is selected,
 * ready to be typed over. */
function fillGithubPreset() {
  $("policy-issuer").value = GITHUB_ACTIONS_ISSUER;
  if (!$("policy-audience").value.trim()) $("policy-audience").value = "authkeys";
  const subject = $("policy-subject");
  subject.value = GITHUB_SUBJECT_EXAMPLE;
  subject.focus();
  const start = GITHUB_SUBJECT_EXAMPLE.indexOf("OWNER/REPO");
  subject.setSelectionRange(start, start + "OWNER/REPO".length);
  showStatus("Filled in GitHub Actions' issuer: replace OWNER/REPO with your repository.");
}

/**
 * The request body the policy form describes, or null after showing, under its field, what
 * must be fixed first.
 */
function policyBody() {
  const issuer = $("policy-issuer").value.trim();
  const audience = $("policy-audience").value.trim();
  const subject = $("policy-subject").value.trim();
  const issuerProblem = !issuer
    ? "Enter the issuer of the tokens, e.g. GitHub Actions' (the preset above fills it in)."
    : !/^https?:\/\/[^\s]+$/.test(issuer)
      ? "The issuer is a URL: https:// then a host, e.g. https://token.actions.githubusercontent.com."
      : null;
  showFormError("policy-issuer-error", issuerProblem);
  const subjectProblem = !subject
    ? "Enter the subject the tokens must match (* stands for any run of characters)."
    : subject.includes("OWNER/REPO")
      ? "Replace OWNER/REPO with your repository, e.g. repo:acme/api:ref:refs/heads/main."
      : null;
  showFormError("policy-subject-error", subjectProblem);
  const audienceProblem = audience ? null : "Enter the audience the job asks its token for, e.g. authkeys.";
  showFormError("policy-audience-error", audienceProblem);
  const { pairs: claims, problem: claimsProblem } = collectPairs("policy-claims-rows");
  showFormError("policy-claims-error", claimsProblem);
  const tags = commaList($("policy-tags").value).map((typed) => checkTag(typed, []));
  const tagProblem = tags.find((tag) => tag.problem);
  showFormError("policy-tags-error", tagProblem ? tagProblem.problem : null);
  const problemAt = [
    [issuerProblem, "policy-issuer"],
    [audienceProblem, "policy-audience"],
    [subjectProblem, "policy-subject"],
    [claimsProblem, "policy-claims-add"],
    [tagProblem, "policy-tags"],
  ].find(([problem]) => problem);
  if (problemAt) {
    $(problemAt[1]).focus();
    return null;
  }
  const body = { issuer, audience, subject };
  if (Object.keys(claims).length) body.claims = claims;
  const description = $("policy-description").value.trim();
  if (description) body.description = description;
  body.ephemeral = $("policy-ephemeral").checked;
  if (body.ephemeral && $("policy-session-ttl").value) body.session_ttl = Number($("policy-session-ttl").value);
  if ($("policy-idle-timeout").value) body.idle_timeout = Number($("policy-idle-timeout").value);
  if (tags.length) body.tags = [...new Set(tags.map((tag) => tag.tag))];
  return body;
}

async function createPolicy(event) {
  event.preventDefault();
  clearMessages();
  showFormError("policy-error", null);
  const body = policyBody();
  if (!body) return;
  const appId = state.appId;
  let created;
  try {
    created = await api("POST", `${appPath(appId)}/trust-policies`, body);
  } catch (err) {
    // As with Generate key: the dialog keeps what was typed and says why, inside it.
    if (err instanceof ApiError && err.status === 401) {
      $("policy-dialog").close();
      fail("Could not create the trust policy", err);
    } else {
      showFormError("policy-error", `Could not create the trust policy: ${describeError(err)}`);
    }
    return;
  }
  $("policy-dialog").close("created");
  showStatus(`Created trust policy ${created.id} for ${appId}: tokens of ${created.issuer} matching it log in.`);
  await loadApp();
  $("policies-title").focus();
}

async function deletePolicy(policy) {
  clearMessages();
  const label = policyLabel(policy);
  const confirmed = await confirmAction({
    title: `Delete trust policy ${label}?`,
    body: [
      `This logs out every machine that logged in through it, at once, and jobs whose tokens match it can no longer log in.`,
      "This cannot be undone.",
    ],
    confirmLabel: "Delete policy and log out its machines",
  });
  if (!confirmed) return;
  try {
    await api("DELETE", `${appPath(state.appId)}/trust-policies/${encodeURIComponent(policy.id)}`);
  } catch (err) {
    fail(`Could not delete trust policy ${label}`, err);
    await loadApp();
    return;
  }
  showStatus(`Deleted trust policy ${label}; its machines are logged out.`);
  await loadApp();
  $("policies-title").focus();
}

/** Wires the trust policies' panel and dialog. */
function startPolicies() {
  on("policy-open", "click", openPolicyDialog);
  on("policy-form", "submit", createPolicy);
  on("policies-more", "click", () => loadMore("policies"));
  $("policy-preset-github").addEventListener("click", fillGithubPreset);
  $("policy-claims-add").addEventListener("click", () => addPairRow("policy-claims-rows", "policy-claims-add", "Claim"));
  $("policy-ephemeral").addEventListener("change", showPolicySessionField);
  $("policy-cancel").addEventListener("click", () => $("policy-dialog").close());
  $("policy-dialog").addEventListener("close", () => {
    if ($("policy-dialog").returnValue !== "created") $("policy-open").focus();
  });
}

// ---------------------------------------------------------------------------------------------
// The confirmation dialog

/**
 * Asks for confirmation in a modal dialog and resolves to true or false. Focus starts on
 * Cancel (the safe choice) and returns to where it was; Escape cancels. With `typed`, the
 * confirm button stays disabled until the expected text is typed. With `choice` ({label,
 * choices: [[value, text]], value}), a select offers the choices and a confirmation resolves
 * to the value chosen instead of true.
 */
function confirmAction({ title, body, confirmLabel, typed, choice, destructive = true }) {
  const dialog = $("confirm-dialog");
  const ok = $("confirm-ok");
  const select = $("confirm-choice-select");
  $("confirm-choice").hidden = !choice;
  if (choice) {
    $("confirm-choice-label").textContent = choice.label;
    select.replaceChildren(...choice.choices.map(([value, text]) => el("option", { value }, text)));
    select.value = choice.value;
  }
  ok.className = destructive ? "button danger" : "button primary";
  const typedBox = $("confirm-typed");
  const typedInput = $("confirm-typed-input");
  const opener = document.activeElement;
  $("confirm-title").textContent = title;
  $("confirm-body").replaceChildren(...body.map((text) => el("p", {}, text)));
  ok.textContent = confirmLabel;
  typedBox.hidden = !typed;
  typedInput.value = "";
  ok.disabled = Boolean(typed);
  if (typed) $("confirm-typed-label").textContent = typed.label;

  return new Promise((resolve) => {
    const onInput = () => {
      ok.disabled = typedInput.value.trim() !== typed.expected;
    };
    const onConfirm = () => dialog.close("confirm");
    const onCancel = () => dialog.close("cancel");
    const onTypedKey = (event) => {
      if (event.key === "Enter" && !ok.disabled) dialog.close("confirm");
    };
    const onClose = () => {
      typedInput.removeEventListener("input", onInput);
      typedInput.removeEventListener("keydown", onTypedKey);
      ok.removeEventListener("click", onConfirm);
      $("confirm-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onClose);
      if (opener && opener.isConnected) opener.focus();
      const confirmed = dialog.returnValue === "confirm";
      resolve(confirmed && choice ? select.value : confirmed);
    };
    typedInput.addEventListener("input", onInput);
    typedInput.addEventListener("keydown", onTypedKey);
    ok.addEventListener("click", onConfirm);
    $("confirm-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("close", onClose);
    dialog.returnValue = "";
    dialog.showModal();
    (typed ? typedInput : $("confirm-cancel")).focus();
  });
}

// ---------------------------------------------------------------------------------------------
// What the signed-in token may do

/** Whether the signed-in token holds `scope` (root holds every one). Without the server's
 * answer, everything is offered: the server refuses what the token may not do anyway. */
function can(scope) {
  const token = state.server && state.server.token;
  return !token || token.root || token.scopes.includes(scope);
}

const isRoot = () => !state.server || state.server.token.root;

/** The apps the token is limited to, or null for every app. */
const tokenApps = () => (state.server && state.server.token.apps) || null;

/**
 * Offers only what the token may do: pages and actions outside its scopes are hidden (the
 * server answers 403 `forbidden` to them anyway, which `fail` explains).
 */
function applyPermissions() {
  showServerInfo();
  const token = state.server && state.server.token;
  $("signed-in-as").hidden = !token;
  if (token) {
    const apps = token.apps ? ` on ${token.apps.join(", ")}` : "";
    $("signed-in-as").textContent = token.root ? "Root token" : `Scoped token: ${token.scopes.join(", ")}${apps}`;
  }
  $("view-nav").hidden = false;
  $("nav-activity").hidden = !can("audit:read");
  $("nav-admin-tokens").hidden = !isRoot();
  $("nav-webhooks").hidden = !isRoot();
  $("create-app-form").hidden = !can("apps:write");
  $("delete-app").hidden = !can("apps:write");
  $("generate-open").hidden = !can("keys:write");
  $("policies-panel").hidden = !can("trust_policies:write");
  $("no-app-text").textContent = can("apps:write")
    ? "Select an app, or create one, to generate and revoke its auth keys."
    : "Select an app to see its auth keys.";
}

// ---------------------------------------------------------------------------------------------
// Pages: the apps console, Activity, Admin tokens, Webhooks (`#/activity`, …)

const PAGES = {
  "#/activity": { view: "activity-view", nav: "nav-activity", allowed: () => can("audit:read"), load: () => loadActivity() },
  "#/admin-tokens": { view: "admin-tokens-view", nav: "nav-admin-tokens", allowed: isRoot, load: () => loadAdminTokens() },
  "#/webhooks": { view: "webhooks-view", nav: "nav-webhooks", allowed: isRoot, load: () => loadWebhooks() },
};

/** Shows the page the URL names; the apps console for any other fragment. */
async function route({ focus }) {
  const page = PAGES[location.hash];
  for (const { view } of Object.values(PAGES)) $(view).hidden = true;
  for (const id of ["nav-apps", ...Object.values(PAGES).map((p) => p.nav)]) $(id).removeAttribute("aria-current");
  if (!page || !page.allowed()) {
    if (page) showAlert("This admin token may not open that page.");
    $("console-view").hidden = false;
    $("nav-apps").setAttribute("aria-current", "page");
    await selectAppFromUrl({ focus });
    return;
  }
  $("console-view").hidden = true;
  $(page.view).hidden = false;
  $(page.nav).setAttribute("aria-current", "page");
  await page.load();
  if (focus) $(page.view).querySelector("h1").focus();
}

/** Shows a secret in its one-time panel (`<name>-panel`'s textarea `field`). */
function showSecret(panel, field, value) {
  $(field).value = value;
  $(panel).hidden = false;
  $(panel).querySelector("h3").focus();
}

function hideSecret(panel, field) {
  $(field).value = "";
  $(panel).hidden = true;
}

/** A comma-separated list as typed: its items, trimmed, empty ones left out. */
const commaList = (text) => text.split(",").map((item) => item.trim()).filter(Boolean);

/**
 * Loads the first page of the list `list` (a field of `state` and of `state.next`), or with
 * `more` appends its next page, then renders it. `what` names it in a failure's sentence.
 */
async function loadList({ list, path, field, query = [], more = false, what, render }) {
  let page;
  try {
    page = await listPage(path, field, { query, cursor: more ? state.next[list] : null });
  } catch (err) {
    fail(`Could not list ${more ? "more " : ""}${what}`, err);
    return false;
  }
  state[list] = more ? state[list].concat(page.items) : page.items;
  state.next[list] = page.next;
  render();
  return true;
}

/** A row of text chips (scopes, apps, events): text only, never markup. */
const textChips = (items) => el("ul", { class: "chips" }, ...items.map((item) => el("li", { class: "chip" }, item)));

// --- Activity ----------------------------------------------------------------------------------

const AUDIT_ACTIONS = [
  "app.created", "app.deleted", "key.created", "key.rotated", "key.revoked", "key.expiring",
  "machine.logged_in", "machine.logged_out", "admin_token.created", "admin_token.revoked",
  "trust_policy.created", "trust_policy.deleted", "webhook.created", "webhook.deleted",
];

/** The filters applied to the activity list: `[name, value]` query pairs. */
function activityQuery() {
  const query = [["order", "desc"]];
  const app = $("activity-app").value.trim();
  const action = $("activity-action").value;
  if (app) query.push(["app", app]);
  if (action) query.push(["action", action]);
  return query;
}

/** A token limited to some apps must name one: the filter starts on its first. */
function prepareActivityFilter() {
  const apps = tokenApps();
  $("activity-app-choices").replaceChildren(...(apps || state.apps.map((app) => app.id)).map((id) => el("option", { value: id })));
  $("activity-app").placeholder = apps ? "" : "Every app";
  $("activity-app-hint").hidden = !apps;
  $("activity-app-hint").textContent = apps ? `This token reads the log of ${apps.join(", ")} only, one app at a time.` : "";
  if (apps && !apps.includes($("activity-app").value.trim())) $("activity-app").value = apps[0];
}

async function loadActivity(more = false) {
  if (!more) prepareActivityFilter();
  const query = activityQuery();
  await loadList({ list: "events", path: "/v1/audit", field: "events", query, more, what: "events", render: renderActivity });
}

/** Who made a change: root, a scoped token (by id), a machine, the sweeper, a leak report. */
function actorText(actor) {
  const names = { root: "Root token", admin_token: "Admin token", machine: "Machine", system: "System", leak_report: "Leak report" };
  const name = names[actor.type] || actor.type;
  return actor.id ? `${name} ${actor.id}` : name;
}

function renderActivity() {
  const rows = state.events.map((event) => {
    const details = JSON.stringify(event.details);
    const row = el(
      "tr",
      {},
      cell("When", timeElement(event.at), el("div", { class: "muted small" }, `#${event.seq}`)),
      cell("Action", el("code", {}, event.action)),
      cell("Actor", el("div", { class: "cell-text" }, actorText(event.actor)), event.client_addr ? el("div", { class: "muted small" }, event.client_addr) : null),
      cell("App", event.app ? el("span", { class: "cell-text" }, event.app) : el("span", { class: "muted" }, "—")),
      cell("Target", el("span", { class: "hint-text" }, `${event.target.type} ${event.target.id}`)),
      el(
        "td",
        { class: "details-cell", "data-label": "Details" },
        details === "{}" ? el("span", { class: "muted" }, "—") : el("code", { class: "details" }, details),
      ),
    );
    row.dataset.seq = String(event.seq);
    return row;
  });
  fillTable("activity", rows);
  $("activity-more").hidden = !state.next.events;
}

// --- Admin tokens ------------------------------------------------------------------------------

const SCOPES = ["apps:read", "apps:write", "keys:read", "keys:write", "machines:read", "machines:write", "audit:read", "trust_policies:write"];

async function loadAdminTokens(more = false) {
  const path = "/v1/admin-tokens";
  await loadList({ list: "tokens", path, field: "admin_tokens", more, what: "the admin tokens", render: renderAdminTokens });
}

function renderAdminTokens() {
  const rows = state.tokens.map((token) => {
    const actions = el("td", { class: "actions" });
    if (token.revoked_at) actions.append(el("span", { class: "revoked-at" }, "Revoked ", timeElement(token.revoked_at)));
    else actions.append(rowButton("Revoke", `Revoke admin token ${token.name}`, () => revokeAdminToken(token)));
    const limits = [
      token.max_key_lifetime ? `keys live ≤ ${durationText(token.max_key_lifetime)}` : null,
      token.ephemeral_only ? "ephemeral keys only" : null,
      token.allowed_tags ? `tags: ${token.allowed_tags.join(", ")}` : null,
    ].filter(Boolean);
    const row = el(
      "tr",
      { class: token.revoked_at ? "revoked" : null },
      el(
        "td",
        { class: "key-cell", "data-label": "Token" },
        el("div", { class: "cell-text" }, token.name),
        el("div", { class: "hint-text muted" }, token.hint),
        limits.length ? el("div", { class: "muted small" }, limits.join(" · ")) : null,
      ),
      cell("Scopes", textChips(token.scopes)),
      cell("Apps", token.apps ? textChips(token.apps) : el("span", { class: "muted" }, "Every app")),
      cell("Created", timeElement(token.created_at)),
      cell("Expires", timeElement(token.expires_at)),
      cell("Last used", timeWithRelative(token.last_used_at)),
      actions,
    );
    row.dataset.tokenId = token.id;
    return row;
  });
  fillTable("admin-tokens", rows);
  $("admin-tokens-more").hidden = !state.next.tokens;
}

async function createAdminToken(event) {
  event.preventDefault();
  clearMessages();
  showFormError("create-token-error", null);
  const scopes = SCOPES.filter((scope) => $(`token-scope-${scope}`).checked);
  const name = $("token-name").value.trim();
  const problem = !name ? "Give the token a name." : scopes.length === 0 ? "Choose at least one scope." : null;
  showFormError("create-token-error", problem);
  if (problem) return;
  const apps = commaList($("token-apps").value);
  const tags = commaList($("token-allowed-tags").value);
  const expiry = $("token-expiry").value;
  const lifetime = $("token-max-key-lifetime").value;
  const body = {
    name,
    scopes,
    apps: apps.length ? apps : null,
    expires_in: expiry ? Number(expiry) : null,
    max_key_lifetime: lifetime ? Number(lifetime) : null,
    allowed_tags: tags.length ? tags : null,
    ephemeral_only: $("token-ephemeral-only").checked,
  };
  let created;
  try {
    created = await api("POST", "/v1/admin-tokens", body);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) fail("Could not create the token", err);
    else showFormError("create-token-error", `Could not create the token: ${describeError(err)}`);
    return;
  }
  event.target.reset();
  showSecret("new-token-panel", "new-token-value", created.token);
  showStatus(`Created the admin token ${created.name}. Copy it now: it is shown only once.`);
  await loadAdminTokens();
}

async function revokeAdminToken(token) {
  clearMessages();
  const confirmed = await confirmAction({
    title: `Revoke the admin token ${token.name}?`,
    body: [`Every request with ${token.hint} is refused from the moment this returns.`, "This cannot be undone."],
    confirmLabel: "Revoke token",
  });
  if (!confirmed) return;
  try {
    await api("DELETE", `/v1/admin-tokens/${encodeURIComponent(token.id)}`);
  } catch (err) {
    fail(`Could not revoke the token ${token.name}`, err);
    await loadAdminTokens();
    return;
  }
  showStatus(`Revoked the admin token ${token.name}.`);
  await loadAdminTokens();
  $("token-list-title").focus();
}

// --- Webhooks ----------------------------------------------------------------------------------

async function loadWebhooks(more = false) {
  await loadList({ list: "webhooks", path: "/v1/webhooks", field: "webhooks", more, what: "the webhooks", render: renderWebhooks });
}

function renderWebhooks() {
  const rows = state.webhooks.map((hook) => {
    const row = el(
      "tr",
      {},
      el(
        "td",
        { class: "key-cell", "data-label": "URL" },
        el("div", { class: "cell-text webhook-url" }, hook.url),
        hook.description ? el("div", { class: "muted small cell-text webhook-description" }, hook.description) : null,
      ),
      cell("Events", textChips(hook.events)),
      cell("Created", timeElement(hook.created_at)),
      el(
        "td",
        { class: "actions" },
        rowButton("Deliveries", `Deliveries of webhook ${hook.url}`, () => showDeliveries(hook), "button small"),
        rowButton("Delete", `Delete webhook ${hook.url}`, () => deleteWebhook(hook)),
      ),
    );
    row.dataset.webhookId = hook.id;
    return row;
  });
  fillTable("webhooks", rows);
  $("webhooks-more").hidden = !state.next.webhooks;
}

async function createWebhook(event) {
  event.preventDefault();
  clearMessages();
  const url = $("webhook-url").value.trim();
  const events = commaList($("webhook-events").value);
  const description = $("webhook-description").value.trim();
  const problem = !url ? "Enter the receiver's URL." : events.length === 0 ? "Name at least one event, or * for all." : null;
  showFormError("create-webhook-error", problem);
  if (problem) return;
  const body = description ? { url, events, description } : { url, events };
  let created;
  try {
    created = await api("POST", "/v1/webhooks", body);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) fail("Could not create the webhook", err);
    else showFormError("create-webhook-error", `Could not create the webhook: ${describeError(err)}`);
    return;
  }
  event.target.reset();
  showSecret("new-webhook-panel", "new-webhook-secret", created.secret);
  showStatus(`Created a webhook to ${created.url}. Copy its secret now: it is shown only once.`);
  await loadWebhooks();
}

async function deleteWebhook(hook) {
  clearMessages();
  const confirmed = await confirmAction({
    title: "Delete this webhook?",
    body: [`Events stop being sent to ${hook.url}.`, "This cannot be undone."],
    confirmLabel: "Delete webhook",
  });
  if (!confirmed) return;
  try {
    await api("DELETE", `/v1/webhooks/${encodeURIComponent(hook.id)}`);
  } catch (err) {
    fail("Could not delete the webhook", err);
    await loadWebhooks();
    return;
  }
  if (state.deliveriesOf && state.deliveriesOf.id === hook.id) $("deliveries-panel").hidden = true;
  showStatus(`Deleted the webhook to ${hook.url}.`);
  await loadWebhooks();
  $("webhook-list-title").focus();
}

/** Shows a webhook's deliveries (newest event first), or the next page of them. */
async function showDeliveries(hook, more = false) {
  clearMessages();
  const path = `/v1/webhooks/${encodeURIComponent(hook.id)}/deliveries`;
  const render = () => renderDeliveries(hook);
  if (!(await loadList({ list: "deliveries", path, field: "deliveries", more, what: "the deliveries", render }))) return;
  $("deliveries-panel").hidden = false;
  if (!more) $("deliveries-title").focus();
}

function renderDeliveries(hook) {
  state.deliveriesOf = hook;
  $("deliveries-url").textContent = hook.url;
  const rows = state.deliveries.map((delivery) => {
    const row = el(
      "tr",
      { class: delivery.delivered_at ? null : "failed" },
      el("td", { class: "num", "data-label": "Event" }, `#${delivery.seq}`),
      el("td", { class: "num", "data-label": "Attempts" }, String(delivery.attempts)),
      cell("Last status", delivery.last_status == null ? el("span", { class: "muted" }, "No answer") : String(delivery.last_status)),
      cell("Last error", delivery.last_error ? el("span", { class: "cell-text" }, delivery.last_error) : el("span", { class: "muted" }, "—")),
      cell("Delivered", timeElement(delivery.delivered_at, "Not yet")),
    );
    row.dataset.seq = String(delivery.seq);
    return row;
  });
  fillTable("deliveries", rows);
  $("deliveries-more").hidden = !state.next.deliveries;
}

/** Wires the pages' forms and buttons. */
function startPages() {
  $("activity-action").append(...AUDIT_ACTIONS.map((action) => el("option", { value: action }, action)));
  $("token-scopes").replaceChildren(
    ...SCOPES.map((scope) =>
      el("div", { class: "option" }, el("input", { id: `token-scope-${scope}`, type: "checkbox", value: scope }), el("label", { for: `token-scope-${scope}` }, scope)),
    ),
  );
  on("activity-filter-form", "submit", async (event) => {
    event.preventDefault();
    clearMessages();
    await loadActivity();
  });
  on("activity-more", "click", () => {
    clearMessages();
    return loadActivity(true);
  });
  on("create-token-form", "submit", createAdminToken);
  on("admin-tokens-more", "click", () => loadAdminTokens(true));
  on("copy-token", "click", () => copyField("new-token-value", $("copy-token"), "admin token"));
  on("dismiss-token", "click", () => {
    hideSecret("new-token-panel", "new-token-value");
    showStatus("The token is hidden and cannot be shown again.");
    $("token-name").focus();
  });
  on("create-webhook-form", "submit", createWebhook);
  on("webhooks-more", "click", () => loadWebhooks(true));
  on("deliveries-more", "click", () => showDeliveries(state.deliveriesOf, true));
  on("copy-webhook-secret", "click", () => copyField("new-webhook-secret", $("copy-webhook-secret"), "webhook secret"));
  on("dismiss-webhook-secret", "click", () => {
    hideSecret("new-webhook-panel", "new-webhook-secret");
    showStatus("The secret is hidden and cannot be shown again.");
    $("webhook-url").focus();
  });
}

// ---------------------------------------------------------------------------------------------
// Start

let pendingActions = 0;

/**
 * Runs a user's action, marking the page `aria-busy` until it has settled, so that assistive
 * technology (and the browser tests) wait for the whole update rather than its first half.
 */
async function busy(action) {
  pendingActions += 1;
  $("main").setAttribute("aria-busy", "true");
  try {
    return await action();
  } catch (err) {
    fail("Something went wrong", err);
  } finally {
    pendingActions -= 1;
    if (pendingActions === 0) $("main").removeAttribute("aria-busy");
  }
}

/** Listens for `type` on the element with `id`, running the handler as a busy action. */
function on(id, type, handler) {
  $(id).addEventListener(type, (event) => busy(() => handler(event)));
}

function start() {
  on("sign-in-form", "submit", signIn);
  on("sign-out", "click", () => signOut());
  on("create-app-form", "submit", createApp);
  // Once a problem is shown, it updates as the id is corrected.
  $("app-id").addEventListener("input", () => {
    if (!$("app-id-error").hidden) checkAppIdField();
  });
  $("apps-toggle").addEventListener("click", () =>
    setSidebarOpen($("apps-toggle").getAttribute("aria-expanded") !== "true"),
  );
  on("generate-form", "submit", generateKey);
  on("generate-open", "click", openGenerateDialog);
  for (const id of ["key-reusable", "key-ephemeral"]) $(id).addEventListener("change", showPolicyFields);
  $("key-tag-input").addEventListener("keydown", (event) => {
    // Enter adds the tag instead of submitting the form.
    if (event.key === "Enter") {
      event.preventDefault();
      addNewTag();
    }
  });
  $("key-tag-add").addEventListener("click", addNewTag);
  $("key-metadata-add").addEventListener("click", addMetadataRow);
  on("tag-filter-form", "submit", submitTagFilter);
  $("generate-cancel").addEventListener("click", () => $("generate-dialog").close());
  // Closed by Cancel or Escape: focus returns to the button that opened it (after a key was
  // generated, the one-time panel has it instead).
  $("generate-dialog").addEventListener("close", () => {
    if ($("generate-dialog").returnValue !== "generated") $("generate-open").focus();
  });
  on("delete-app", "click", deleteApp);
  on("dismiss-key", "click", () => {
    hideNewKey();
    showStatus("The key is hidden and cannot be shown again.");
    $("generate-open").focus();
  });
  on("copy-key", "click", () => copyField("new-key-value", $("copy-key"), "auth key"));
  on("copy-command", "click", () => copyField("new-key-command", $("copy-command"), "login command"));
  on("show-revoked", "change", () => loadApp());
  on("apps-more", "click", loadMoreApps);
  on("keys-more", "click", () => loadMore("keys"));
  on("machines-more", "click", () => loadMore("machines"));
  on("refresh", "click", async () => {
    clearMessages();
    if (await loadApp()) showStatus("Refreshed.");
    await loadApps().catch((err) => fail("Could not list the apps", err));
  });
  window.addEventListener("hashchange", () => {
    if (storedToken()) busy(() => route({ focus: true }));
  });
  startPages();
  startPolicies();
  // Keep relative times ("5 min ago", "59 min left") honest while the page stays open, without
  // re-rendering (and so without moving the keyboard focus).
  setInterval(() => {
    for (const words of document.querySelectorAll(".relative[data-time]")) {
      const relative = words.dataset.kind === "left" ? timeLeftText : relativeText;
      words.textContent = `(${relative(words.dataset.time)})`;
    }
  }, 30000);

  if (!storedToken()) {
    showSignIn();
    return;
  }
  busy(async () => {
    try {
      await loadServerInfo();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        signOut("The server refused the saved admin token (it may have changed). Sign in again.");
      } else {
        // Not the token's fault: show the console with the reason, and Refresh to retry.
        showConsole();
        fail("Could not reach the server (reload the page to try again)", err);
      }
      return;
    }
    await showConsole();
  });
}

start();
