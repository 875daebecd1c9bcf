// The page's router: ?review=<id> follows one review, ?batch=<id> a batch, anything else is the
// start page. Ids live in the URL, so a reload or a shared link comes back to the same view.

import { batchView } from "./batch.js";
import { clear } from "./dom.js";
import { homeView } from "./home.js";
import { reviewView } from "./review.js";

let dispose = null;

function route() {
  dispose?.();
  const main = clear(document.getElementById("main"));
  const params = new URLSearchParams(location.search);
  document.title = "pr-review";
  if (params.get("review")) dispose = reviewView(main, params.get("review"));
  else if (params.get("batch")) dispose = batchView(main, params.get("batch"));
  else dispose = homeView(main, navigate);
}

export function navigate(href) {
  history.pushState(null, "", href);
  route();
  window.scrollTo(0, 0);
}

// In-page links (data-nav) switch views without reloading; modified clicks open tabs as usual.
document.addEventListener("click", (e) => {
  const anchor = e.target instanceof Element ? e.target.closest("a[data-nav]") : null;
  if (!anchor || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(anchor.getAttribute("href"));
});
window.addEventListener("popstate", route);
route();
