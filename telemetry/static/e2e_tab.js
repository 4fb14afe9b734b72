// pipeswarm: put the end-to-end charts (./pipeswarm/e2e/charts) above the End to end tab's
// table. Locust's extended tabs render a table only, so this script (added to Locust's index
// page by telemetry/webui.py) places the charts page in an iframe while ?tab=e2e is open.
(function () {
  "use strict";
  var ID = "pipeswarm-e2e-charts";

  function open() {
    return new URLSearchParams(window.location.search).get("tab") === "e2e";
  }

  function fit(frame) {
    try {
      var body = frame.contentDocument && frame.contentDocument.body;
      if (body) frame.style.height = body.scrollHeight + 8 + "px";
    } catch (e) { /* not loaded yet */ }
  }

  function sync() {
    var frame = document.getElementById(ID);
    if (!open()) {
      if (frame) frame.remove();
      return;
    }
    var table = document.querySelector("main .MuiTableContainer-root, .MuiTableContainer-root");
    if (!table || (frame && frame.nextSibling === table)) return;
    if (frame) frame.remove();
    frame = document.createElement("iframe");
    frame.id = ID;
    frame.src = "./pipeswarm/e2e/charts";
    frame.title = "End to end charts";
    frame.style.cssText = "width:100%;height:640px;border:0;display:block;margin-bottom:8px";
    frame.addEventListener("load", function () { fit(frame); });
    table.parentNode.insertBefore(frame, table);
  }

  new MutationObserver(sync).observe(document.documentElement, { childList: true, subtree: true });
  window.addEventListener("popstate", sync);
  setInterval(function () {
    sync();
    var frame = document.getElementById(ID);
    if (frame) fit(frame);
  }, 2000);
})();
