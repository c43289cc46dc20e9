// mailroom console: the one script. A page whose <main> has data-refresh="N" re-reads
// itself every N seconds (same URL, same credentials) and swaps in the new <main>; no
// build step, nothing from elsewhere (the CSP allows scripts and fetches from the console
// only). It stops while the operator types in a form of the page (their input would be
// lost) and says so; a failed read keeps the page and says when it was last fresh.
"use strict";
(function () {
  const main = document.querySelector("main[data-refresh]");
  if (!main) { return; }
  const every = Math.max(2, Number(main.dataset.refresh) || 5) * 1000;
  let typing = false;
  main.addEventListener("input", function () { typing = true; note("refresh stopped while you type: reload to resume"); });

  function note(text) {
    const where = document.getElementById("refreshed");
    if (where) { where.textContent = text; }
  }

  async function tick() {
    if (typing) { return; }
    if (!document.hidden) {
      try {
        const response = await fetch(window.location.href, {
          credentials: "same-origin", cache: "no-store", redirect: "error",
          headers: { "X-Mailroom-Refresh": "1" },
        });
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        const next = fresh.querySelector("main[data-refresh]");
        if (!next) { throw new Error("not a console page"); }
        if (typing) { return; }
        main.replaceChildren(...Array.from(next.childNodes));  // a copy first: moving empties it
        document.title = fresh.title;
        main.classList.remove("outdated");
      } catch (error) {
        note("refresh failed (" + error.message + "); retrying every " + every / 1000 + " s");
        main.classList.add("outdated");
      }
    }
    window.setTimeout(tick, every);
  }
  window.setTimeout(tick, every);
})();
