// Live job progress: poll the jobs still running and update their cards in place.
// Text goes in with textContent only, so an error detail can never become markup.
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
      link.textContent = "the new adapter";
      result.textContent = "made ";
      result.appendChild(link);
      result.hidden = false;
    }
    if (job.finished) {
      card.dataset.finished = "true";
      var cancel = field(card, "cancel");
      if (cancel) { cancel.remove(); }
    }
  }

  function poll() {
    var open = cards().filter(function (c) { return c.dataset.finished !== "true"; });
    if (!open.length) { return; }
    var ids = open.map(function (c) { return c.dataset.job; }).join(",");
    fetch("/ui/jobs/progress?ids=" + encodeURIComponent(ids),
          { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
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
      .finally(function () { window.setTimeout(poll, POLL_MS); });
  }

  window.setTimeout(poll, POLL_MS);
}());
