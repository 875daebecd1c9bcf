// A batch: counts by status and each PR's status, polled until none is queued or running.

import { ApiError, STATUS_LABELS, TERMINAL, api, errorSentence } from "./api.js";
import { clear, el, link, plural } from "./dom.js";
import { reviewHref, stateLine, statusBadge } from "./status.js";

const POLL_MS = 2000;

function row(item, position) {
  if (!item.id) {
    return el("tr", { dataset: { status: "rejected", position } },
      el("td", {}, statusBadge("rejected")),
      el("td", {}, el("code", {}, item.pr_url)),
      el("td", { class: "state" }, errorSentence(item.error)));
  }
  return el("tr", { dataset: { status: item.status, id: item.id, position } },
    el("td", {}, statusBadge(item.status)),
    el("td", {}, el("a", { href: reviewHref(item.id), "data-nav": "" }, `${item.repo} #${item.number}`),
      " ", link(item.pr_url, "↗")),
    el("td", { class: "state" }, stateLine(item)));
}

export function batchView(main, id) {
  const counts = el("div", { class: "counts", id: "batch-counts" });
  const body = el("tbody", { id: "batch-rows" });
  const error = el("p", { class: "notice error", id: "batch-view-error", role: "alert", hidden: true });
  const heading = el("h1", {}, "Batch");
  const root = el("div", { class: "view", id: "batch-view" },
    el("p", { class: "back" }, el("a", { href: "./", "data-nav": "" }, "← New review")),
    el("section", { class: "card" }, heading, el("p", { class: "muted" }, `Batch ${id}`), counts, error,
      el("table", { class: "list", id: "batch" },
        el("thead", {}, el("tr", {}, el("th", {}, "Status"), el("th", {}, "Pull request"), el("th", {}, "State"))),
        body)));
  main.append(root);
  let timer = null;
  const refresh = async () => {
    try {
      const { data } = await api.batch(id);
      const reviews = data.reviews || [];
      heading.textContent = `Batch of ${plural(reviews.length, "pull request")}`;
      clear(counts).append(...Object.entries(data.counts || {}).map(([status, n]) =>
        el("span", { class: `count-chip status-${status}` }, `${n} ${(STATUS_LABELS[status] || status).toLowerCase()}`)));
      clear(body).append(...reviews.map(row));
      error.hidden = true;
      const active = reviews.some((r) => r.id && !TERMINAL.has(r.status));
      root.dataset.done = String(!active);
      if (!active) clearInterval(timer);
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.sentence : String(err);
      error.hidden = false;
      if (err instanceof ApiError && err.status === 404) clearInterval(timer);
    }
  };
  refresh();
  timer = setInterval(refresh, POLL_MS);
  return () => clearInterval(timer);
}
