// servicedesk console: live tiles and the changes feed (EventSource), and the sign-in link.
(function () {
  "use strict";

  // Sign-in link (/login#token=...): the token never reaches a server log. It fills the form
  // and says whose token it is, but never submits it: a link from someone else would sign
  // this browser in as them (login CSRF), so the person clicks "Sign in" themselves.
  var signin = document.getElementById("signin");
  if (signin && location.hash.indexOf("#token=") === 0) {
    var given = decodeURIComponent(location.hash.slice(7));
    history.replaceState(null, "", location.pathname + location.search);
    signin.elements.token.value = given;
    var note = document.getElementById("signin-as");
    var actor = null;
    try {
      var part = given.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      actor = JSON.parse(atob(part)).sub;
    } catch (e) { actor = null; }
    if (note && typeof actor === "string") {
      note.textContent = note.getAttribute("data-text").replace("{actor}", function () { return actor; });
      note.hidden = false;
    }
    signin.querySelector("button").focus();
    return;
  }

  // Survey link (/survey/N#token=...): the token, kept out of every server's log, is posted
  // to open the survey (no token: the server answers that the link is not valid).
  var survey = document.getElementById("survey-open");
  if (survey) {
    var hash = location.hash;
    survey.elements.token.value = hash.indexOf("#token=") === 0 ? decodeURIComponent(hash.slice(7)) : "";
    survey.submit();
    return;
  }

  var tiles = document.getElementById("tiles");
  if (!tiles || !window.EventSource) return;
  var lang = tiles.getAttribute("data-lang");
  var live = document.getElementById("live");
  var feed = document.getElementById("feed");
  var phrases = JSON.parse(document.getElementById("phrases").textContent || "{}");
  var refreshing = false, again = false, last = 0;

  function refresh() {
    if (refreshing) { again = true; return; }
    var wait = Math.max(0, 400 - (Date.now() - last));
    refreshing = true;
    setTimeout(function () {
      last = Date.now();
      fetch("/board?lang=" + encodeURIComponent(lang), { credentials: "same-origin" })
        .then(function (r) { if (r.status === 401) { location.href = "/login"; } return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) tiles.innerHTML = html; })
        .catch(function () {})
        .then(function () { refreshing = false; if (again) { again = false; refresh(); } });
    }, wait);
  }

  function cell(text, cls) {
    var span = document.createElement("span");
    if (cls) span.className = cls;
    span.textContent = text;
    return span;
  }

  function show(ticket) {
    var empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    var old = feed.querySelector('[data-number="' + ticket.number + '"]');
    if (old) old.remove();
    var row = document.createElement("li");
    row.className = "fresh";
    row.setAttribute("data-number", ticket.number);
    row.setAttribute("data-status", ticket.status);
    row.appendChild(cell(new Date(ticket.updated_at).toLocaleTimeString(), "time"));
    row.appendChild(cell(ticket.number, "num"));
    var status = cell(phrases["status_" + ticket.status] || ticket.status, "status " + ticket.status);
    row.appendChild(status);
    row.appendChild(cell(ticket.subject || "", "subject"));
    row.appendChild(cell([ticket.group_id, ticket.agent_id].filter(Boolean).join(" · "),
      ticket.sla !== "ok" ? "sla-" + ticket.sla : ""));
    feed.insertBefore(row, feed.firstChild);
    while (feed.children.length > 40) feed.removeChild(feed.lastChild);
  }

  var source = new EventSource("/api/stream");
  source.onopen = function () {
    live.className = "live on"; live.textContent = live.getAttribute("data-live");
    refresh();
  };
  source.onerror = function () {
    live.className = "live"; live.textContent = live.getAttribute("data-reconnecting");
  };
  source.addEventListener("ticket", function (e) { show(JSON.parse(e.data)); refresh(); });
  source.addEventListener("ticket_left", function (e) {
    var number = JSON.parse(e.data).number;  // moved out of this person's sight
    Array.prototype.forEach.call(feed.children, function (row) {
      if (row.getAttribute("data-number") === number) row.remove();
    });
    refresh();
  });
  source.addEventListener("board", refresh);
  source.addEventListener("resync", refresh);
  source.addEventListener("too_many_streams", function () { source.close(); });
  source.addEventListener("signed_out", function () {
    source.close();  // the sign-in ended: reconnecting would only be refused
    window.location.href = "/login";
  });
})();
