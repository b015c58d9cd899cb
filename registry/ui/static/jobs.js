// Live job progress: poll the jobs still running and update their cards in place.
// Text goes in with textContent only, so an error detail can never become markup.
// A 401 means the session ended (signed out elsewhere, expired, token revoked): polling
// stops and the page says so, rather than polling a dead session every second.
"use strict";
(function () {
  var POLL_MS = 1000;

  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll(".job[data-job]"));
  }

  function field(card, name) {
    return card.querySelector('[data-field="' + name + '"]');
  }

  function update(card, job) {
    var status = field(card, "status");
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    field(card, "bar").value = job.fraction;
    field(card, "percent").textContent = (100 * job.fraction).toFixed(1) + " %";
    field(card, "stage").textContent = job.stage;
    field(card, "message").textContent = job.message || "";
    var error = field(card, "error");
    if (job.error) {
      error.textContent = job.error.name + ": " + job.error.detail;
      error.hidden = false;
    }
    if (job.adapter) {
      var result = field(card, "result");
      var link = document.createElement("a");
      link.href = "/ui/adapters/" + Number(job.adapter);
      link.textContent = job.adapter_label || "the new adapter";
      result.textContent = "made ";
      result.appendChild(link);
      result.hidden = false;
    }
    facts(job);
    if (job.finished) {
      card.dataset.finished = "true";
      var cancel = field(card, "cancel");
      if (cancel) { cancel.remove(); }
    }
  }

  // The job page's table beside the card: attempt, start and end move as the job does.
  function facts(job) {
    var table = document.querySelector('[data-facts="' + Number(job.id) + '"]');
    if (!table) { return; }
    field(table, "attempt").textContent = job.attempt + " of " + job.max_attempts;
    field(table, "started").textContent = job.started_at || "\u2013";
    field(table, "finished").textContent = job.finished_at || "\u2013";
  }

  function signedOut() {
    var notice = document.createElement("p");
    notice.className = "notice signed-out";
    notice.setAttribute("role", "status");
    var link = document.createElement("a");
    link.href = "/ui/signin?next=" + encodeURIComponent(location.pathname + location.search);
    link.textContent = "Sign in again";
    notice.textContent = "Your session has ended, so progress is no longer updated. ";
    notice.appendChild(link);
    notice.appendChild(document.createTextNode(" to follow it."));
    var main = document.querySelector("main") || document.body;
    main.insertBefore(notice, main.firstChild);
  }

  function poll() {
    var open = cards().filter(function (c) { return c.dataset.finished !== "true"; });
    if (!open.length) { return; }
    var ids = open.map(function (c) { return c.dataset.job; }).join(",");
    var stopped = false;
    fetch("/ui/jobs/progress?ids=" + encodeURIComponent(ids),
          { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.status === 401) {
          stopped = true;
          signedOut();
          return { jobs: [] };
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (body) {
        body.jobs.forEach(function (job) {
          var card = document.querySelector('.job[data-job="' + Number(job.id) + '"]');
          if (card) { update(card, job); }
        });
      })
      .catch(function () { /* a missed poll: the next one tries again */ })
      .finally(function () { if (!stopped) { window.setTimeout(poll, POLL_MS); } });
  }

  window.setTimeout(poll, POLL_MS);
}());
