// The API key of this tab. The page asks for one when the API answers 401, keeps it in
// sessionStorage (this tab only; gone when the tab closes) and sends it as a Bearer header on
// every API call, the event stream included.

import { el } from "./dom.js";

export const KEY_STORAGE = "pr-review.api-key";
const KEY_SHAPE = /^[\x21-\x7e]{1,512}$/; // what an HTTP header can carry: visible ASCII, no spaces

export function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled: the key lives as long as the page
  }
}

let memoryKey = "";

function currentKey() {
  return storedKey() || memoryKey;
}

function keepKey(key) {
  memoryKey = key;
  try {
    sessionStorage.setItem(KEY_STORAGE, key);
  } catch {
    // memoryKey still holds it
  }
}

export function authHeaders() {
  const key = currentKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// The key a request was sent with, to tell later whether a 401 is about the key in use now.
export function keyInUse() {
  return currentKey();
}

let pending = null;

// After a 401 for a request sent with `usedKey`: resolves once a key other than `usedKey` is in
// use, asking the person for one unless another request already did. Concurrent callers wait for
// the same answer; nothing is retried until then, so a rejected key never loops.
export function keyAfterUnauthorized(usedKey) {
  const key = currentKey();
  if (key && key !== usedKey) return Promise.resolve(key);
  if (!pending) {
    pending = new Promise((resolve) => {
      showKeyDialog(Boolean(usedKey), (entered) => {
        pending = null;
        keepKey(entered);
        resolve(entered);
      });
    });
  }
  return pending;
}

function showKeyDialog(rejected, done) {
  const input = el("input", { id: "api-key", name: "api_key", type: "password", autocomplete: "off",
    spellcheck: "false", "aria-label": "API key", placeholder: "API key" });
  const error = el("p", { class: "notice error", id: "api-key-error", role: "alert", hidden: true });
  const form = el("form", { id: "api-key-form", class: "inline-form", novalidate: true },
    input, el("button", { type: "submit", id: "api-key-submit" }, "Use key"));
  const dialog = el("dialog", { id: "api-key-dialog", class: "card key-dialog", "aria-labelledby": "api-key-title" },
    el("h2", { id: "api-key-title" }, rejected ? "That API key was not accepted" : "An API key is needed"),
    el("p", {}, rejected
      ? "The service refused the key this tab sent. Enter a valid key to go on."
      : "This pr-review service answers only requests that carry an API key."),
    el("p", { class: "muted small" }, "Ask the service's operator for one, or make one with ",
      el("code", {}, "pr-review keys create NAME"), ". The key that ", el("code", {}, "pr-review serve"),
      " made is in ", el("code", {}, "$PR_REVIEW_HOME/api-key"),
      " on its machine. The page keeps the key in this tab only."),
    form, error);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!KEY_SHAPE.test(key)) {
      error.textContent = key ? "An API key is letters, digits and punctuation, with no spaces."
        : "Paste the API key first.";
      error.hidden = false;
      return;
    }
    dialog.close();
    dialog.remove();
    done(key);
  });
  dialog.addEventListener("cancel", (e) => e.preventDefault()); // nothing on the page works without a key
  document.body.append(dialog);
  dialog.showModal();
  input.focus();
}
