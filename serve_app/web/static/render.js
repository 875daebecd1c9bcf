// A finished review as DOM: verdict, summary, findings grouped by file, skipped files.

import { VERDICT_LABELS } from "./api.js";
import { el, link, plural, safeHref } from "./dom.js";

export const SEVERITIES = ["critical", "major", "minor", "nit"];
const SEVERITY_LABELS = { critical: "Critical", major: "Major", minor: "Minor", nit: "Nit" };

function rank(severity) {
  const index = SEVERITIES.indexOf(severity);
  return index === -1 ? SEVERITIES.length : index;
}

export function severityBadge(severity) {
  return el("span", { class: `sev sev-${rank(severity) < SEVERITIES.length ? severity : "other"}` },
    SEVERITY_LABELS[severity] || String(severity));
}

export function verdictBadge(verdict) {
  return el("span", { class: `verdict verdict-${verdict in VERDICT_LABELS ? verdict : "other"}`, id: "verdict" },
    VERDICT_LABELS[verdict] || String(verdict));
}

// `code` spans in model text become <code> elements; everything else stays plain text.
export function withCode(text) {
  return String(text ?? "").split(/`([^`\n]+)`/).map((part, i) => (i % 2 ? el("code", {}, part) : part));
}

function paragraphs(text, className) {
  const parts = String(text || "").split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean);
  return parts.map((part) => el("p", { class: className }, withCode(part)));
}

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// GitHub's diff view anchors a line as #diff-<sha256 of the path><R|L><line>. Without WebCrypto
// (a plain-http page on a non-local host) the link opens the PR's file list instead.
function lineLink(prUrl, finding) {
  const files = `${safeHref(prUrl).replace(/\/+$/, "")}/files`;
  const side = finding.side === "LEFT" ? "L" : "R";
  const label = finding.end_line && finding.end_line > finding.line
    ? `lines ${finding.line}–${finding.end_line}` : `line ${finding.line}`;
  const anchor = link(files, finding.side === "LEFT" ? `${label} (old)` : label);
  anchor.classList.add("line-link");
  if (files !== "#/files" && globalThis.crypto && crypto.subtle) {
    sha256Hex(finding.path).then((hex) => {
      anchor.href = `${files}#diff-${hex}${side}${finding.line}`;
    }, () => {});
  }
  return anchor;
}

function findingNode(prUrl, finding) {
  return el("article", { class: `finding sev-border-${finding.severity}`, dataset: { severity: finding.severity } },
    el("header", { class: "finding-head" },
      severityBadge(finding.severity),
      el("h4", { class: "finding-title" }, withCode(finding.title || "(untitled finding)")),
      el("span", { class: "finding-meta" }, lineLink(prUrl, finding), " · ", finding.category || "general")),
    paragraphs(finding.body, "finding-body"),
    finding.suggestion ? el("div", { class: "suggestion" },
      el("div", { class: "suggestion-label" }, "Suggestion"),
      el("pre", {}, el("code", {}, finding.suggestion))) : null);
}

export function groupByFile(findings) {
  const files = new Map();
  for (const finding of findings) {
    if (!files.has(finding.path)) files.set(finding.path, []);
    files.get(finding.path).push(finding);
  }
  const worst = (list) => Math.min(...list.map((f) => rank(f.severity)));
  return [...files.entries()]
    .map(([path, list]) => [path, list.sort((a, b) => a.line - b.line || rank(a.severity) - rank(b.severity))])
    .sort(([pa, a], [pb, b]) => worst(a) - worst(b) || pa.localeCompare(pb));
}

function severityCounts(findings) {
  const chips = SEVERITIES.map((sev) => [sev, findings.filter((f) => f.severity === sev).length])
    .filter(([, n]) => n > 0)
    .map(([sev, n]) => el("span", { class: `count-chip sev-${sev}` }, `${n} ${SEVERITY_LABELS[sev].toLowerCase()}`));
  return el("div", { class: "severity-counts" }, chips.length ? chips : el("span", { class: "muted" }, "no findings"));
}

export function reviewNode(job) {
  const review = job.review;
  const findings = Array.isArray(review.findings) ? review.findings : [];
  const skipped = Array.isArray(review.files_skipped) ? review.files_skipped : [];
  const reviewed = Array.isArray(review.files_reviewed) ? review.files_reviewed : [];
  const files = groupByFile(findings);
  return el("section", { class: "card review", id: "review" },
    el("div", { class: "verdict-row" }, el("span", { class: "label" }, "Verdict"), verdictBadge(review.verdict),
      severityCounts(findings)),
    el("h2", {}, "Summary"),
    el("div", { class: "summary", id: "summary" }, paragraphs(review.summary, "summary-text")),
    el("h2", {}, "Findings"),
    files.length === 0 ? el("p", { class: "muted" }, "No findings: nothing in the changed lines was flagged.")
      : el("div", { id: "findings" }, files.map(([path, list]) =>
        el("section", { class: "file", dataset: { path } },
          el("h3", { class: "file-path" }, el("code", {}, path), el("span", { class: "muted" }, plural(list.length, "finding"))),
          list.map((finding) => findingNode(job.pr_url, finding))))),
    skipped.length === 0 ? null : el("div", { id: "skipped" },
      el("h2", {}, "Skipped files"),
      el("table", { class: "skipped" },
        el("thead", {}, el("tr", {}, el("th", {}, "File"), el("th", {}, "Why it was not reviewed"))),
        el("tbody", {}, skipped.map((s) => el("tr", {}, el("td", {}, el("code", {}, s.path)), el("td", {}, s.reason)))))),
    reviewed.length === 0 ? null : el("details", { class: "reviewed" },
      el("summary", {}, `${plural(reviewed.length, "file")} reviewed`),
      el("ul", {}, reviewed.map((path) => el("li", {}, el("code", {}, path))))),
    el("p", { class: "muted model" }, `Model: ${review.model || "unknown"}`));
}
