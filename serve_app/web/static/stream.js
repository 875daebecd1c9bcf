// Server-Sent Events over fetch(), so the stream carries the API key (EventSource cannot send
// headers). It reads the stream as the HTML standard's EventSource does: `id:`, `event:`, `data:`
// and `retry:` fields, comments ignored, events dispatched on a blank line, and after a drop it
// reconnects with Last-Event-ID so that no event is lost or repeated.

import { authHeaders, keyAfterUnauthorized, keyInUse } from "./auth.js";

const DEFAULT_RETRY_MS = 2000;

// Splits text into events. Feed it chunks as they come; it calls onEvent({type, data, lastEventId}).
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.data = [];
    this.type = "";
    this.lastEventId = "";
    this.retryMs = null;
    this.started = false;
    this.pendingCR = false;
  }

  feed(text) {
    let chunk = text;
    if (!this.started && chunk.length) {
      this.started = true;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1); // a byte-order mark opens the stream
    }
    if (this.pendingCR && chunk.startsWith("\n")) chunk = chunk.slice(1); // a CRLF split across chunks
    this.pendingCR = false;
    this.buffer += chunk;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop();
    if (this.buffer === "" && /\r$/.test(chunk)) this.pendingCR = true;
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) return; // a comment (the server's keep-alive pings)
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id") {
      if (!value.includes("\0")) this.lastEventId = value;
    } else if (field === "retry" && /^[0-9]+$/.test(value)) this.retryMs = Number(value);
  }

  dispatch() {
    const type = this.type || "message";
    this.type = "";
    if (this.data.length === 0) return;
    const data = this.data.join("\n");
    this.data = [];
    this.onEvent({ type, data, lastEventId: this.lastEventId });
  }
}

// Follows `url` until close(): onEvent for each event, onOpen when connected, onInterrupted(error)
// when the connection drops (it then reconnects by itself), onFatal(error) for an answer that a
// reconnect cannot fix (404 and the like). A 401 asks for a key, then reconnects with it.
export class EventStream {
  constructor(url, { onEvent, onOpen = () => {}, onInterrupted = () => {}, onFatal = () => {} }) {
    Object.assign(this, { url, onEvent, onOpen, onInterrupted, onFatal });
    this.lastEventId = "";
    this.retryMs = DEFAULT_RETRY_MS;
    this.closed = false;
    this.controller = null;
    this.run();
  }

  close() {
    this.closed = true;
    this.controller?.abort();
  }

  async run() {
    while (!this.closed) {
      try {
        await this.connect();
      } catch (error) {
        if (this.closed) return;
        if (error instanceof StreamError && error.unauthorized) {
          await keyAfterUnauthorized(error.usedKey);
          continue; // at once, with the new key
        }
        if (error instanceof StreamError && !error.retryable) {
          this.onFatal(error);
          return;
        }
        this.onInterrupted(error);
      }
      if (this.closed) return;
      await new Promise((resolve) => setTimeout(resolve, this.retryMs));
    }
  }

  async connect() {
    this.controller = new AbortController();
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    const usedKey = keyInUse();
    const response = await fetch(this.url, { headers, cache: "no-store", signal: this.controller.signal });
    if (response.status === 401) throw new StreamError(401, usedKey);
    if (!response.ok) throw new StreamError(response.status, usedKey);
    if (!/^text\/event-stream\b/i.test(response.headers.get("Content-Type") || "")) {
      throw new StreamError(0, usedKey, "not an event stream");
    }
    this.onOpen();
    const parser = new SSEParser((event) => {
      this.lastEventId = event.lastEventId;
      if (!this.closed) this.onEvent(event);
    });
    parser.lastEventId = this.lastEventId;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.closed) break;
      parser.feed(value);
      if (parser.retryMs !== null) this.retryMs = parser.retryMs;
    }
    // The stream ended: the server closes it after the last event; the caller closes us then, and
    // otherwise (a restart, a proxy's timeout) we reconnect from the last id after retryMs.
  }
}

class StreamError extends Error {
  constructor(status, usedKey, message = `HTTP ${status}`) {
    super(message);
    this.status = status;
    this.usedKey = usedKey;
    this.unauthorized = status === 401;
    // 404: no such review, 403: this key may not read it; anything else may pass on a reconnect.
    this.retryable = ![400, 403, 404, 410].includes(status);
  }
}
