// The start page: submit one PR, start a batch, and the latest reviews.

import { ApiError, api } from "./api.js";
import { clear, el, when } from "./dom.js";
import { reviewHref, stateLine, statusBadge } from "./status.js";

const RECENT_POLL_MS = 3000;
const RECENT_LIMIT = 20;

function sentenceOf(err) {
  return err instanceof ApiError ? err.sentence : `Something went wrong: ${err}.`;
}

function submitForm(navigate) {
  const input = el("input", { id: "pr-url", name: "pr_url", type: "text", inputmode: "url", autocomplete: "off",
    spellcheck: "false", placeholder: "https://github.com/owner/repo/pull/123", "aria-label": "Pull request URL" });
  const button = el("button", { type: "submit", id: "submit" }, "Review");
  const error = el("p", { class: "notice error", id: "submit-error", role: "alert", hidden: true });
  const form = el("form", { id: "submit-form", class: "inline-form", novalidate: true },
    input, button);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    const url = input.value.trim();
    if (!url) {
      error.textContent = "Paste the link of a pull request first.";
      error.hidden = false;
      return;
    }
    button.disabled = true;
    try {
      const { data } = await api.submit(url);
      navigate(reviewHref(data.id));
    } catch (err) {
      error.textContent = sentenceOf(err);
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  setTimeout(() => input.focus(), 0);
  return el("section", { class: "card" },
    el("h1", {}, "Review a pull request"),
    el("p", { class: "muted" }, "Paste a pull-request link. The review runs in the background; this page follows it live."),
    form, error);
}

function batchForm(navigate) {
  const area = el("textarea", { id: "batch-urls", rows: 4, spellcheck: "false", "aria-label": "Pull request URLs",
    placeholder: "One pull-request link per line" });
  const button = el("button", { type: "submit", id: "batch-submit" }, "Start batch");
  const error = el("p", { class: "notice error", id: "batch-error", role: "alert", hidden: true });
  const form = el("form", { id: "batch-form", novalidate: true }, area, el("div", { class: "actions" }, button));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    const urls = area.value.split(/\s+/).map((u) => u.trim()).filter(Boolean);
    if (urls.length === 0) {
      error.textContent = "Paste at least one pull-request link, one per line.";
      error.hidden = false;
      return;
    }
    button.disabled = true;
    try {
      const { data } = await api.submitBatch(urls);
      navigate(`?batch=${encodeURIComponent(data.id)}`);
    } catch (err) {
      error.textContent = sentenceOf(err);
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return el("section", { class: "card" },
    el("h2", {}, "Review several"),
    el("p", { class: "muted" }, "Paste several links to review them as one batch and follow each one's status."),
    form, error);
}

function recentRow(job) {
  return el("tr", { dataset: { id: job.id, status: job.status } },
    el("td", {}, statusBadge(job.status)),
    el("td", {}, el("a", { href: reviewHref(job.id), "data-nav": "" }, `${job.repo} #${job.number}`)),
    el("td", { class: "state" }, stateLine(job)),
    el("td", { class: "muted nowrap" }, when(job.created_at)));
}

function recentList() {
  const body = el("tbody", { id: "recent-rows" });
  const note = el("p", { class: "muted", id: "recent-note" }, "Loading…");
  const section = el("section", { class: "card" },
    el("h2", {}, "Recent reviews"),
    el("table", { class: "list", id: "recent" },
      el("thead", {}, el("tr", {}, el("th", {}, "Status"), el("th", {}, "Pull request"), el("th", {}, "State"),
        el("th", {}, "Submitted"))),
      body),
    note);
  const refresh = async () => {
    try {
      const { data } = await api.reviews(RECENT_LIMIT);
      clear(body).append(...data.items.map(recentRow));
      note.textContent = data.items.length ? "" : "No reviews yet.";
      note.hidden = data.items.length > 0;
    } catch (err) {
      note.textContent = `Could not load the recent reviews: ${sentenceOf(err)}`;
      note.hidden = false;
    }
  };
  return { section, refresh };
}

export function homeView(main, navigate) {
  const recent = recentList();
  main.append(el("div", { class: "view", id: "home-view" }, submitForm(navigate), batchForm(navigate), recent.section));
  recent.refresh();
  const timer = setInterval(recent.refresh, RECENT_POLL_MS);
  return () => clearInterval(timer);
}
