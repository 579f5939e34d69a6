// sysmon status page: fetches /status.json every 2 seconds and redraws.
// Every value from the daemons goes into the page as text (textContent),
// never as markup: host names and directory names come from peers.
"use strict";

(function () {
  var REFRESH_MS = 2000;
  var DAEMONS = ["netdump", "statd", "recvstats", "sendstats", "watchdog", "keepalive"];

  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (name) {
        var value = attrs[name];
        if (value === null || value === undefined) return;
        if (name === "text") node.textContent = String(value);
        else if (name === "className") node.className = value;
        else node.setAttribute(name, String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function replace(parent, children) {
    while (parent.firstChild) parent.removeChild(parent.firstChild);
    children.forEach(function (c) { parent.appendChild(c); });
  }

  function bytes(n) {
    if (n === null || n === undefined) return "\u2013";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }

  // "9.0 / 16 GiB": two sizes in the unit of the larger.
  function sameUnit(a, b) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (b >= 1024 && i < units.length - 1) { a /= 1024; b /= 1024; i++; }
    function fmt(x) { return i === 0 ? String(Math.round(x)) : x.toFixed(x < 10 ? 1 : 0); }
    return fmt(a) + " / " + fmt(b) + " " + units[i];
  }

  function rate(n) {
    return n === null || n === undefined ? "\u2013" : bytes(n) + "/s";
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "\u2013";
    if (seconds < 1) return "just now";
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " days ago";
  }

  function when(epoch) {
    if (!epoch) return "\u2013";
    var d = new Date(epoch * 1000);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " +
      two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  function meter(fraction) {
    var bar = el("span");
    bar.style.width = Math.max(0, Math.min(100, fraction * 100)).toFixed(1) + "%";
    return el("span", {className: "meter", "aria-hidden": "true"}, bar);
  }

  function section(id, enabled) {
    var node = document.getElementById(id);
    node.setAttribute("data-enabled", enabled ? "true" : "false");
    return node;
  }

  function show(id, visible) {
    document.getElementById(id).hidden = !visible;
  }

  // -- header --------------------------------------------------------------

  // What the chip of a daemon without a section of its own says on hover.
  function detail(name, data) {
    if (name === "watchdog" && data.watchdog) {
      return "watchdog: " + data.watchdog.rounds + " rounds, " +
        (data.watchdog.feeding ? "feeding" : "NOT feeding") +
        (data.watchdog.no_action ? " (no-action mode)" : "");
    }
    if (name === "sendstats" && data.sendstats) {
      return "sendstats: every " + data.sendstats.interval + " s to " +
        (data.sendstats.masters.length ? data.sendstats.masters.join(", ") : "the multicast group");
    }
    return name + (data.enabled[name] ? " is enabled" : " is not enabled");
  }

  function renderDaemons(data) {
    replace(document.getElementById("daemons"), DAEMONS.map(function (name) {
      var on = !!data.enabled[name];
      return el("li", {"data-daemon": name, "data-enabled": on ? "true" : "false",
                       title: detail(name, data), text: name});
    }));
  }

  // -- cluster -------------------------------------------------------------

  function nodeTile(n) {
    var cpu = n.cpu === null ? el("dd", {className: "cpu", text: "\u2013"})
      : el("dd", {className: "cpu", title: n.cpu + " % of " + n.cpus + " CPUs busy"},
           meter(n.cpu / 100), n.cpu.toFixed(1) + " %");
    var memory = n.memory === null ? el("dd", {className: "memory", text: "\u2013"})
      : el("dd", {className: "memory",
                  title: bytes(n.memory.used) + " used of " + bytes(n.memory.total)},
           meter(n.memory.total ? n.memory.used / n.memory.total : 0),
           sameUnit(n.memory.used, n.memory.total));
    var load = el("dd", {className: "load", title: "load average over 1, 5 and 15 minutes",
                         text: n.load === null ? "\u2013" : n.load.map(function (x) { return x === null ? "?" : x.toFixed(2); }).join("  ")});
    var net = n.net === null ? el("dd", {className: "net", text: "\u2013"})
      : el("dd", {className: "net", title: "received " + rate(n.net.rx) + ", sent " + rate(n.net.tx),
                  text: "\u2193" + rate(n.net.rx) + "  \u2191" + rate(n.net.tx)});
    return el("article", {className: "node-tile", "data-node": n.node, "data-state": n.state,
                          "data-name": n.name},
      el("div", {className: "node-head"},
        el("span", {className: "node-name", title: n.name, text: n.name}),
        el("span", {className: "node-number", text: "#" + n.node}),
        el("span", {className: "node-state", text: n.state})),
      el("dl", null,
        el("dt", {text: "CPU"}), cpu,
        el("dt", {text: "Mem"}), memory,
        el("dt", {text: "Load"}), load,
        el("dt", {text: "Net"}), net),
      el("div", {className: "node-foot"},
        el("span", {className: "address", text: n.address}),
        n.cpus ? el("span", {className: "cpus", text: n.cpus + (n.cpus === 1 ? " CPU" : " CPUs")}) : null,
        el("span", {className: "age", "data-age": n.age, title: "last report",
                    text: ago(n.age)})));
  }

  function renderCluster(nodes) {
    var panel = section("cluster", nodes !== null);
    if (nodes === null) return;
    var counts = {up: 0, stale: 0, down: 0};
    nodes.forEach(function (n) { counts[n.state] = (counts[n.state] || 0) + 1; });
    document.getElementById("cluster-summary").textContent = nodes.length + " nodes: " +
      counts.up + " up, " + counts.stale + " stale, " + counts.down + " down";
    panel.querySelector(".empty").hidden = nodes.length > 0;
    replace(document.getElementById("nodes"), nodes.map(nodeTile));
  }

  // -- dumps ---------------------------------------------------------------

  function activeDump(d) {
    var progress = el("progress", {max: d.pages_total || null,
                                   value: d.pages_total ? d.pages_done : null,
                                   "aria-label": "pages received from " + d.client});
    var pct = d.pages_total ? " (" + Math.floor(d.pages_done * 100 / d.pages_total) + "%)" : "";
    var pages = d.pages_total
      ? d.pages_done + " of " + d.pages_total + " pages" + pct
      : "waiting for the client";
    return el("div", {className: "dump-active", "data-client": d.client,
                      "data-dir": d.directory, "data-state": d.state},
      el("span", {className: "dump-client", text: d.client + ":" + d.port}),
      progress,
      el("span", {className: "pages", text: pages}),
      el("span", {className: "dump-dir", text: d.directory || "(no directory yet)"}),
      el("span", {className: "dump-state",
                  text: d.state + " \u00b7 " + bytes(d.bytes) + " written \u00b7 since " + when(d.started)}));
  }

  function finishedDump(d) {
    var outcome = d.complete ? "complete" : (d.outcome === "incomplete" ? "incomplete" : "failed");
    var log = d.log ? el("a", {className: "dump-log", href: d.log, text: "log"})
                    : el("span", {className: "none", text: "\u2013"});
    var pages = d.pages_total ? (d.pages === null ? "?" : d.pages) + " / " + d.pages_total : "\u2013";
    return el("tr", {className: "dump-finished", "data-dir": d.directory, "data-client": d.client,
                     "data-outcome": d.outcome},
      el("td", {text: when(d.time)}),
      el("td", {className: "dump-client", text: d.client}),
      el("td", null, el("span", {className: "outcome " + outcome, text: d.outcome,
                                 title: d.reason || null})),
      el("td", {text: pages}),
      el("td", {text: bytes(d.size)}),
      el("td", {className: "dump-dir", text: d.directory}),
      el("td", null, log));
  }

  function renderDumps(dumps) {
    section("dumps", dumps !== null);
    if (dumps === null) return;
    show("dumps-idle", dumps.active.length === 0);
    replace(document.getElementById("dumps-active"), dumps.active.map(activeDump));
    show("dumps-none", dumps.finished.length === 0);
    show("dumps-finished", dumps.finished.length > 0);
    replace(document.querySelector("#dumps-finished tbody"), dumps.finished.map(finishedDump));
    document.getElementById("dumps-count").textContent =
      dumps.finished_count > dumps.finished.length
        ? "newest " + dumps.finished.length + " of " + dumps.finished_count
        : (dumps.finished_count ? String(dumps.finished_count) : "");
  }

  // -- statd ---------------------------------------------------------------

  function statdHost(h) {
    var callbacks = h.callbacks.map(function (c) {
      var program = c.prog === 100021 ? "lockd" : "prog " + c.prog;
      return c.my_name + " \u00b7 " + program + " v" + c.vers + " proc " + c.proc;
    }).join("; ");
    return el("tr", {className: "statd-host", "data-host": h.name,
                     "data-monitored": h.monitored ? "true" : "false"},
      el("td", {className: "statd-name", text: h.name}),
      el("td", {className: "callbacks", text: callbacks || "not monitored"}),
      el("td", {text: h.state === null ? "\u2013" : h.state}),
      el("td", null, h.notify_pending ? el("span", {className: "pending", text: "pending"}) : "\u2013"));
  }

  function renderStatd(statd) {
    section("statd", statd !== null);
    if (statd === null) return;
    document.getElementById("statd-state").textContent = statd.state === null ? "\u2013" : statd.state;
    show("statd-none", statd.hosts.length === 0);
    show("statd-hosts", statd.hosts.length > 0);
    replace(document.querySelector("#statd-hosts tbody"), statd.hosts.map(statdHost));
  }

  // -- keepalive -----------------------------------------------------------

  function processRow(p) {
    return el("tr", {className: "process", "data-slot": p.slot, "data-state": p.state,
                     "data-name": p.name},
      el("td", {text: p.slot}),
      el("td", {title: [p.path].concat(p.args).join(" "), text: p.name}),
      el("td", {text: p.pid || "\u2013"}),
      el("td", null, el("span", {className: "state-badge", text: p.state})),
      el("td", {text: p.restarts}),
      el("td", {text: p.last_exit || "\u2013"}));
  }

  function renderKeepalive(keepalive) {
    section("keepalive", keepalive !== null);
    if (keepalive === null) return;
    show("processes-none", keepalive.processes.length === 0);
    show("processes", keepalive.processes.length > 0);
    replace(document.querySelector("#processes tbody"), keepalive.processes.map(processRow));
  }

  // -- the loop --------------------------------------------------------------

  function render(data) {
    renderDaemons(data);
    renderCluster(data.nodes);
    renderDumps(data.dumps);
    renderStatd(data.statd);
    renderKeepalive(data.keepalive);
    document.body.setAttribute("data-state", "ok");
    document.body.setAttribute("data-generated", String(data.generated));
    document.getElementById("updated").textContent = "updated " + when(data.generated);
  }

  function failed(why) {
    document.body.setAttribute("data-state", "error");
    document.getElementById("updated").textContent =
      "cannot reach sysmon (" + why + "); showing the data of " +
      (document.body.getAttribute("data-generated")
        ? when(Number(document.body.getAttribute("data-generated"))) : "nothing yet");
  }

  function refresh() {
    fetch("/status.json", {cache: "no-store", credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(render)
      .catch(function (e) { failed(e.message || String(e)); })
      .then(function () { window.setTimeout(refresh, REFRESH_MS); });
  }

  refresh();
})();
