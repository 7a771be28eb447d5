// The Herald console's only script: live views reload themselves, and the curl command can be copied.
// Everything works without it, only less conveniently (reload by hand, select the text to copy).
"use strict";

(function () {
  // A page with data-refresh="N" fetches itself every N seconds and swaps its <main> for the new one, unless
  // the reader is typing in a form of it (so a half-typed filter is not lost) or the tab is hidden.
  function refresh() {
    var seconds = Number(document.body.dataset.refresh || 0);
    if (!seconds) return;
    window.setTimeout(function tick() {
      var active = document.activeElement;
      var typing = active && active.closest && active.closest("main form") && active.tagName !== "BUTTON";
      if (document.hidden || typing) {
        window.setTimeout(tick, seconds * 1000);
        return;
      }
      fetch(window.location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
        .then(function (response) {
          // A signed-out or failed reload shows the page as it comes (the sign-in view, say).
          if (!response.ok) { window.location.reload(); return null; }
          return response.text();
        })
        .then(function (html) {
          if (html === null) return;
          var next = new DOMParser().parseFromString(html, "text/html");
          var main = next.querySelector("main");
          if (main) document.querySelector("main").replaceChildren.apply(document.querySelector("main"), Array.from(main.childNodes));
          document.title = next.title;
          var again = Number(next.body.dataset.refresh || 0);
          document.body.dataset.refresh = again ? String(again) : "";
          if (again) window.setTimeout(tick, again * 1000);
          bindCopy();
        })
        .catch(function () { window.setTimeout(tick, seconds * 1000); });
    }, seconds * 1000);
  }

  function bindCopy() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      if (button.dataset.bound) return;
      button.dataset.bound = "1";
      button.addEventListener("click", function () {
        var source = document.getElementById(button.dataset.copy);
        var said = document.querySelector('[data-copied="' + button.dataset.copy + '"]');
        if (!source || !navigator.clipboard) return;
        navigator.clipboard.writeText(source.textContent).then(
          function () { if (said) said.textContent = "Copied."; },
          function () { if (said) said.textContent = "Copying was refused: select the text instead."; });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { bindCopy(); refresh(); });
})();
