// The pr-review HTTP API, as the page uses it. Paths are relative to the page, so the service
// also works behind a route prefix. Failures become ApiError with a sentence a person can read.
// Every call carries the tab's API key; a 401 asks for one (auth.js) and the call is made again.

import { authHeaders, keyAfterUnauthorized, keyInUse } from "./auth.js";
import { EventStream } from "./stream.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }

  // The error as one or two sentences; a full queue says when to come back.
  get sentence() {
    const text = /[.!?]$/.test(this.message) ? this.message : `${this.message}.`;
    if (this.retryAfterS !== null && (this.status === 429 || this.status === 503)) {
      return `${text} Retry in ${duration(this.retryAfterS)}.`;
    }
    return text;
  }
}

export function duration(seconds) {
  const s = Math.max(1, Math.round(seconds));
  if (s < 90) return s === 1 ? "1 second" : `${s} seconds`;
  const minutes = Math.round(s / 60);
  return minutes === 1 ? "1 minute" : `${minutes} minutes`;
}

function retryAfter(response) {
  const raw = response.headers.get("Retry-After");
  if (!raw) return null;
  const seconds = Number(raw);
  if (Number.isFinite(seconds)) return seconds;
  const date = Date.parse(raw); // the HTTP-date form
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

const STATUS_SENTENCES = {
  400: "The service could not accept that request.",
  401: "The service needs an API key.",
  403: "This API key may not do that.",
  404: "The service does not know that address.",
  413: "The request is too large.",
  429: "The service is busy.",
  500: "The service failed while answering.",
  502: "The service could not reach what it depends on.",
  503: "The service is not available right now.",
  504: "The service took too long to answer.",
};

async function request(method, path, body) {
  let response;
  const usedKey = keyInUse();
  try {
    response = await fetch(path, {
      method,
      headers: {
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...authHeaders(),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network_error",
      "The pr-review service cannot be reached. Check that it is running, then try again");
  }
  if (response.status === 401) {
    await keyAfterUnauthorized(usedKey); // waits for the person to enter a key
    return request(method, path, body);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null; // a proxy's plain-text or HTML error page
  }
  if (!response.ok) {
    const error = (data && typeof data.error === "object" && data.error) || {};
    const message = typeof error.message === "string" && error.message
      ? error.message
      : STATUS_SENTENCES[response.status] || `The service answered with HTTP status ${response.status}.`;
    throw new ApiError(response.status, error.code || "http_error", message, retryAfter(response));
  }
  return { status: response.status, data };
}

const enc = encodeURIComponent;

export const api = {
  submit: (prUrl) => request("POST", "v1/reviews", { pr_url: prUrl }),
  review: (id) => request("GET", `v1/reviews/${enc(id)}`),
  cancel: (id) => request("DELETE", `v1/reviews/${enc(id)}`),
  reviews: (limit = 20) => request("GET", `v1/reviews?limit=${limit}`),
  submitBatch: (prUrls) => request("POST", "v1/batches", { pr_urls: prUrls }),
  batch: (id) => request("GET", `v1/batches/${enc(id)}`),
  // The review's progress events, live; see EventStream for the handlers.
  events: (id, handlers) => new EventStream(`v1/reviews/${enc(id)}/events`, handlers),
};

export const STATUS_LABELS = {
  queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed",
  cancelled: "Cancelled", rejected: "Rejected",
};

export const STEP_LABELS = {
  queued: "Waiting in the queue",
  starting: "Starting",
  fetch: "Fetching the pull request",
  analyze: "Running the static analyzers",
  review: "Reviewing the changed files",
  summarize: "Writing the summary",
  publish: "Posting the review to GitHub",
  done: "Finishing",
};

export const VERDICT_LABELS = {
  approve: "Approve",
  comment: "Comment",
  request_changes: "Changes requested",
};

// Job error codes without a message of their own (older events) still read as sentences.
export const ERROR_SENTENCES = {
  pr_not_found: "The pull request was not found on GitHub.",
  github_error: "GitHub answered with an error.",
  github_unavailable: "GitHub was unavailable.",
  github_rate_limited: "GitHub's rate limit was reached.",
  llm_error: "The language model answered with an error.",
  llm_timeout: "The language model took too long to answer.",
  llm_bad_output: "The language model's answer could not be used.",
  budget_exceeded: "The review used up its budget of model calls or tokens.",
  deadline_exceeded: "The review ran past its deadline.",
  max_attempts_exceeded: "The review was stopped after too many attempts.",
  cancelled: "The review was cancelled.",
};

export function errorSentence(error) {
  if (!error) return "The review failed for an unknown reason.";
  const message = error.message || ERROR_SENTENCES[error.code] || "The review failed.";
  return /[.!?]$/.test(message) ? message : `${message}.`;
}
