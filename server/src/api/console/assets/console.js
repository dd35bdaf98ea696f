// Cairn console: live updates over server-sent events. Plain script, no
// build step, no other origin. Every page works without it: the cluster
// page then refreshes itself, the watch page says to use etcdctl.
(function () {
  "use strict";
  if (!window.EventSource) {
    return;
  }

  // Cluster page: the server sends the whole live fragment, rendered and
  // escaped server-side, whenever it changes.
  var live = document.querySelector("[data-live]");
  var liveStatus = document.getElementById("live-status");
  if (live) {
    var cluster = new EventSource(live.getAttribute("data-live"));
    cluster.addEventListener("cluster", function (e) {
      live.innerHTML = e.data;
      if (liveStatus) {
        liveStatus.textContent = "Live.";
      }
    });
    cluster.onerror = function () {
      if (liveStatus) {
        liveStatus.textContent = "Connection lost; reconnecting…";
      }
    };
  }

  // Watch page: one event per revision, a JSON array of changes. Text goes
  // in with textContent only, never as markup.
  var MAX_SHOWN = 500;
  var list = document.getElementById("watch-events");
  var status = document.getElementById("watch-status");
  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }
  if (list) {
    var watch = new EventSource(list.getAttribute("data-src"));
    watch.addEventListener("start", function (e) {
      say("Live: " + e.data + ".");
    });
    watch.addEventListener("kv", function (e) {
      var changes;
      try {
        changes = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      changes.forEach(function (c) {
        var li = document.createElement("li");
        var text = "rev " + c.mod_revision + "  " + c.type + "  " + c.key;
        if (c.type === "PUT") {
          text += " = " + c.value + (c.truncated ? "…" : "");
        }
        li.textContent = text;
        list.insertBefore(li, list.firstChild);
      });
      while (list.children.length > MAX_SHOWN) {
        list.removeChild(list.lastChild);
      }
    });
    watch.addEventListener("end", function (e) {
      say("Stopped: " + e.data);
      watch.close();
    });
    watch.onerror = function () {
      say("Connection lost; reconnecting from the last revision shown…");
    };
  }
})();
