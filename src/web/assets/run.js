// spokehub's run page: while the run is active, the live part of the page follows it without
// a reload. Server-sent events say when something changed; polling takes over where they
// are unavailable.
(function () {
  "use strict";
  var body = document.body;
  var liveUrl = body.getAttribute("data-live");
  var live = document.getElementById("live");
  if (!liveUrl || !live) {
    return;
  }
  var fragmentUrl = location.pathname + "/fragment" + location.search;
  var busy = false;
  var again = false;

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(fragmentUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (r.status === 401) {
          location.reload();
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (typeof html === "string") {
          live.innerHTML = html;
          body.setAttribute("data-updated", String(Date.now()));
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  var polling = null;
  function poll() {
    if (polling === null) {
      polling = setInterval(refresh, 5000);
    }
  }

  if (typeof window.EventSource !== "function") {
    poll();
    return;
  }
  var source = new EventSource(liveUrl);
  var failures = 0;
  function changed() {
    failures = 0;
    refresh();
  }
  source.addEventListener("hello", changed);
  source.addEventListener("change", changed);
  source.addEventListener("done", function () {
    source.close();
    body.removeAttribute("data-live");
    refresh();
  });
  source.onerror = function () {
    failures += 1;
    // CLOSED: the hub answered with an error (not signed in, gone, unavailable) and the
    // browser will not retry; three failed reconnects: events do not get through.
    if (source.readyState === EventSource.CLOSED || failures >= 3) {
      source.close();
      poll();
    }
  };
})();
