// Small pieces shared by the lists: a status badge and a one-line state of a review.

import { STATUS_LABELS, STEP_LABELS, VERDICT_LABELS, errorSentence } from "./api.js";
import { el, plural } from "./dom.js";

export function statusBadge(status) {
  return el("span", { class: `status status-${status}`, dataset: { status } }, STATUS_LABELS[status] || status);
}

export function reviewHref(id) {
  return `?review=${encodeURIComponent(id)}`;
}

export function stateLine(job) {
  if (job.status === "succeeded" && job.review) {
    const findings = Array.isArray(job.review.findings) ? job.review.findings.length : 0;
    return `${VERDICT_LABELS[job.review.verdict] || job.review.verdict}, ${plural(findings, "finding")}`;
  }
  if (job.status === "failed") return `${errorSentence(job.error)} (${job.error?.code || "unknown"})`;
  if (job.status === "cancelled") return "Cancelled";
  const { step, files_done: done, files_total: total } = job.progress;
  const label = STEP_LABELS[step] || step;
  return total > 0 ? `${label}: ${done} of ${plural(total, "file")}` : label;
}
