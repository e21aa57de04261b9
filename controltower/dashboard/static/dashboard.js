// Live updates without reload: poll the page's live part with If-None-Match on its
// version (zone revision + who is online + join keys); 304 costs a few bytes, a change
// brings the new server-rendered HTML. Focus and scroll survive the swap.
(function () {
  "use strict";
  var PERIOD_MS = 1000;
  var box = document.getElementById("live");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-live");
  var version = box.getAttribute("data-version");
  var busy = false;

  function refocus(id) {
    if (!id) { return; }
    var again = document.getElementById(id);
    if (again && again !== document.activeElement) { again.focus({preventScroll: true}); }
  }

  function poll() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(url, {headers: {"If-None-Match": '"' + version + '"'}, credentials: "same-origin",
                cache: "no-store"})
      .then(function (response) {
        if (response.status === 401 || response.status === 403) { window.location.reload(); return null; }
        if (response.status !== 200) { return null; }
        var tag = (response.headers.get("ETag") || "").replace(/"/g, "");
        return response.text().then(function (html) {
          var focused = document.activeElement && box.contains(document.activeElement)
            ? document.activeElement.id : null;
          box.innerHTML = html;
          clock();
          version = tag || version;
          box.setAttribute("data-version", version);
          refocus(focused);
        });
      })
      .catch(function () { /* the tower is away: try again next period */ })
      .then(function () { busy = false; });
  }
  // "12 s ago" keeps counting between changes, on the tower's clock (the page says
  // what time the tower had when it rendered; the browser's clock may be off).
  var skew = 0;
  function clock() {
    var now = document.getElementById("server-now");
    if (now) { skew = parseFloat(now.getAttribute("data-now")) - Date.now() / 1000; }
  }
  function ago(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 120) { return seconds + " s ago"; }
    if (seconds < 7200) { return Math.floor(seconds / 60) + " min ago"; }
    if (seconds < 172800) { return Math.floor(seconds / 3600) + " h ago"; }
    return Math.floor(seconds / 86400) + " d ago";
  }
  function tick() {
    var now = Date.now() / 1000 + skew;
    var cells = box.querySelectorAll(".ago[data-ts]");
    for (var i = 0; i < cells.length; i++) {
      var ts = parseFloat(cells[i].getAttribute("data-ts"));
      if (ts) { cells[i].textContent = ago(now - ts); }
    }
  }
  clock();
  window.setInterval(function () { poll(); tick(); }, PERIOD_MS);
})();
