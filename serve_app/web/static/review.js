// One review, live: status, progress and usage while it runs, then the rendered result.
// Progress events come from the SSE stream (read with fetch so it carries the API key; it resumes
// with Last-Event-ID after a drop);
// usage and counters come from GET /v1/reviews/{id}, fetched on each event and every 2 s.

import {
  ApiError, STATUS_LABELS, STEP_LABELS, TERMINAL, VERDICT_LABELS, api, errorSentence,
} from "./api.js";
import { clear, clock, count, el, link, plural, when } from "./dom.js";
import { reviewNode } from "./render.js";

const POLL_MS = 2000;
const CLOSE_GRACE_MS = 5000; // after a terminal status, how long the stream may still deliver its last events

export function eventSentence(event) {
  switch (event.kind) {
    case "queued": return "Queued.";
    case "started": return event.attempt > 1 ? `Started again (attempt ${event.attempt}).` : "Started.";
    case "step": return `${STEP_LABELS[event.step] || `Step ${event.step}`}.`;
    case "fetched": {
      const at = event.head_sha ? ` at commit ${String(event.head_sha).slice(0, 7)}` : "";
      return `Fetched the pull request: ${plural(event.files ?? 0, "changed file")}${at}.`;
    }
    case "prepared": {
      const sources = Array.isArray(event.repo_config) && event.repo_config.length
        ? ` (${event.repo_config.join(", ")})` : "";
      const since = event.incremental
        ? `; only the ${plural(event.incremental.files_changed ?? 0, "file")} changed since the last review`
        : "";
      return `Read the repository's review settings${sources}${since}.`;
    }
    case "analyzed": {
      const reports = Array.isArray(event.analyzers) ? event.analyzers : [];
      if (reports.length === 0) return "No static analyzer applies to these files.";
      const parts = reports.map((r) => (r.status === "ok" ? `${r.name} (${plural(r.kept ?? 0, "finding")})`
        : `${r.name} (${String(r.status).replace(/_/g, " ")})`));
      return `Static analysis: ${parts.join(", ")}.`;
    }
    case "published": {
      if (event.status === "failed") return `Could not post the review to GitHub: ${errorSentence(event.error)}`;
      return `Posted the review to GitHub (${String(event.status).replace(/_/g, " ")}).`;
    }
    case "planned": {
      const skipped = Array.isArray(event.skipped) ? event.skipped.length : 0;
      return `Planned ${plural(event.groups ?? 0, "model call")} for the files; ${plural(skipped, "file")} skipped.`;
    }
    case "group_done": {
      const paths = Array.isArray(event.paths) ? event.paths : [];
      const shown = paths.slice(0, 3).join(", ") + (paths.length > 3 ? `, and ${paths.length - 3} more` : "");
      return `Reviewed ${shown || "a group of files"}: ${plural(event.findings ?? 0, "finding")}.`;
    }
    case "requeued": return `Back in the queue${event.reason ? `: ${event.reason}` : ""}.`;
    case "succeeded":
      return `Finished: ${VERDICT_LABELS[event.verdict] || event.verdict}, ${plural(event.findings ?? 0, "finding")}.`;
    case "failed": return `Failed: ${errorSentence(event.error)}`;
    case "cancelled": return "Cancelled.";
    default: return `${event.kind}.`;
  }
}

export function reviewView(main, id) {
  const view = new ReviewView(main, id);
  view.start();
  return () => view.stop();
}

class ReviewView {
  constructor(main, id) {
    this.root = el("div", { class: "view", id: "review-view" });
    main.append(this.root);
    this.id = id;
    this.stopped = false;
    this.source = null;
    this.timer = null;
    this.refreshing = false;
    this.refreshAgain = false;
    this.cancelling = false;
    this.seenEvents = new Set();
    this.shownResult = null;
  }

  start() {
    this.build();
    this.refresh();
    this.connect();
    this.timer = setInterval(() => this.refresh(), POLL_MS);
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    this.source?.close();
  }

  build() {
    this.title = el("h1", { id: "review-title" }, "Review");
    this.subtitle = el("p", { class: "muted", id: "review-subtitle" }, `Review ${this.id}`);
    this.status = el("span", { class: "status", id: "review-status" }, "Loading");
    this.cancelButton = el("button", { type: "button", id: "cancel", class: "danger", hidden: true,
      onclick: () => this.cancel() }, "Cancel review");
    this.error = el("p", { class: "notice error", id: "review-error", role: "alert", hidden: true });
    this.note = el("p", { class: "muted small", id: "stream-note", hidden: true });
    this.step = el("p", { class: "step", id: "step" }, "Waiting for the first update");
    this.bar = el("progress", { id: "files-bar", max: 1, value: 0 });
    this.files = el("span", { id: "files" }, "");
    this.calls = el("dd", { id: "llm-calls" }, "0");
    this.promptTokens = el("dd", { id: "prompt-tokens" }, "0");
    this.completionTokens = el("dd", { id: "completion-tokens" }, "0");
    this.events = el("ol", { class: "events", id: "events" });
    this.result = el("div", { id: "result" });
    this.progress = el("section", { class: "card progress", id: "progress" },
      el("h2", {}, "Progress"), this.step,
      el("div", { class: "files-row" }, this.bar, this.files),
      el("dl", { class: "usage" },
        el("div", {}, el("dt", {}, "LLM calls"), this.calls),
        el("div", {}, el("dt", {}, "Prompt tokens"), this.promptTokens),
        el("div", {}, el("dt", {}, "Completion tokens"), this.completionTokens)),
      this.note,
      el("details", { class: "activity", open: true }, el("summary", {}, "Activity"), this.events));
    this.root.append(
      el("p", { class: "back" }, el("a", { href: "./", "data-nav": "" }, "← New review")),
      el("section", { class: "review-head" },
        el("div", {}, this.title, this.subtitle),
        el("div", { class: "head-actions" }, this.status, this.cancelButton)),
      this.error, this.progress, this.result);
  }

  connect() {
    this.source = api.events(this.id, {
      onEvent: (message) => this.onEvent(message),
      onOpen: () => { this.note.hidden = true; },
      onInterrupted: () => {
        if (this.stopped || this.isTerminal()) return;
        this.note.textContent = "Live updates were interrupted; reconnecting…";
        this.note.hidden = false;
      },
      // 404 and 403 also show through refresh(), which polls the review itself.
      onFatal: () => {},
    });
  }

  onEvent(message) {
    if (this.stopped || this.seenEvents.has(message.lastEventId)) return;
    this.seenEvents.add(message.lastEventId);
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    this.events.append(el("li", { dataset: { kind: event.kind } },
      el("time", {}, clock(event.at)), " ", eventSentence(event)));
    if (event.kind === "step" && !this.isTerminal()) this.showStep(event.step);
    if (TERMINAL.has(event.kind)) this.source.close();
    this.refresh();
  }

  isTerminal() {
    return TERMINAL.has(this.root.dataset.status);
  }

  async refresh() {
    if (this.refreshing) {
      this.refreshAgain = true;
      return;
    }
    this.refreshing = true;
    try {
      const { data } = await api.review(this.id);
      if (!this.stopped) {
        this.error.hidden = true;
        this.render(data);
      }
    } catch (err) {
      if (this.stopped) return;
      if (err instanceof ApiError && err.status === 404) {
        this.showError(`${err.sentence} Check the link, or submit the pull request again.`);
        this.title.textContent = "Review not found";
        this.progress.hidden = true;
        this.stop();
      } else {
        this.showError(`Could not load the review: ${err instanceof ApiError ? err.sentence : String(err)} Retrying…`);
      }
    } finally {
      this.refreshing = false;
      if (this.refreshAgain && !this.stopped) {
        this.refreshAgain = false;
        this.refresh();
      }
    }
  }

  showError(sentence) {
    this.error.textContent = sentence;
    this.error.hidden = false;
  }

  showStep(step) {
    this.step.textContent = STEP_LABELS[step] || `Step: ${step}`;
    this.root.dataset.step = step;
  }

  render(job) {
    const data = this.root.dataset;
    data.status = job.status;
    data.filesDone = job.progress.files_done;
    data.filesTotal = job.progress.files_total;
    data.llmCalls = job.usage.llm_calls;
    document.title = `${job.repo} #${job.number} · pr-review`;
    this.title.replaceChildren(`${job.repo} #${job.number}`);
    this.subtitle.replaceChildren(link(job.pr_url, "Open on GitHub"),
      ` · submitted ${when(job.created_at)}`,
      job.head_sha ? ` · commit ${job.head_sha.slice(0, 7)}` : "",
      job.attempts > 1 ? ` · attempt ${job.attempts}` : "");
    this.status.className = `status status-${job.status}`;
    this.status.textContent = STATUS_LABELS[job.status] || job.status;

    const { files_done: done, files_total: total } = job.progress;
    this.bar.max = Math.max(total, 1);
    this.bar.value = Math.min(done, Math.max(total, 1));
    this.files.textContent = total > 0 ? `${done} of ${plural(total, "file")} reviewed` : "";
    this.bar.parentElement.hidden = total === 0;
    this.calls.textContent = count(job.usage.llm_calls);
    this.promptTokens.textContent = count(job.usage.prompt_tokens);
    this.completionTokens.textContent = count(job.usage.completion_tokens);

    if (TERMINAL.has(job.status)) {
      this.finish(job);
    } else {
      this.showStep(job.progress.step);
      this.cancelButton.hidden = false;
    }
  }

  finish(job) {
    clearInterval(this.timer);
    this.cancelButton.hidden = true;
    this.step.textContent = { succeeded: "Review finished", failed: "Review failed", cancelled: "Review cancelled" }[job.status];
    this.root.dataset.step = job.progress.step;
    this.note.hidden = true;
    setTimeout(() => this.source?.close(), CLOSE_GRACE_MS);
    if (this.shownResult === job.status) return;
    this.shownResult = job.status;
    clear(this.result);
    if (job.status === "succeeded" && job.review) {
      this.result.append(reviewNode(job));
    } else if (job.status === "failed") {
      const code = job.error?.code || "unknown";
      this.result.append(el("section", { class: "card notice error", id: "failure", role: "alert" },
        el("h2", {}, "The review failed"),
        el("p", {}, errorSentence(job.error)),
        el("p", { class: "muted" }, `Error code: ${code}. Submit the pull request again to retry.`)));
    } else if (job.status === "cancelled") {
      this.result.append(el("section", { class: "card notice", id: "cancelled" },
        el("p", {}, "The review was cancelled. Submit the pull request again to start a new review.")));
    }
  }

  // The button stays disabled once the cancel is accepted: a running review stops at its next
  // heartbeat, and the status turns to cancelled then.
  async cancel() {
    this.cancelButton.disabled = true;
    this.cancelButton.textContent = "Cancelling…";
    try {
      await api.cancel(this.id);
    } catch (err) {
      // 409: it ended meanwhile; the next refresh shows how.
      if (!(err instanceof ApiError && err.status === 409)) {
        this.showError(`Could not cancel: ${err instanceof ApiError ? err.sentence : String(err)}`);
        this.cancelButton.disabled = false;
        this.cancelButton.textContent = "Cancel review";
      }
    }
    this.refresh();
  }
}
