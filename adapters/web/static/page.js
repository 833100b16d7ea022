// StationThis web page: the quote before starting, and the live job list (no build step).
"use strict";

(function () {
  function debounce(fn, ms) {
    var timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  function showQuote(form, out) {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, key) {
      if (key !== "csrf") params.append(key, value);
    });
    if (!params.get("prompt")) {
      out.textContent = "Type a prompt to see the price.";
      return;
    }
    fetch("/quote?" + params.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (q) {
        if (q.error) {
          out.textContent = q.error;
          out.dataset.price = "";
          return;
        }
        var text = "Price: " + q.price + " points (balance " + q.balance + ")";
        if (q.clamps && q.clamps.length) text += "; " + q.clamps.join("; ");
        out.textContent = text;
        out.dataset.price = String(q.price);
      })
      .catch(function () { out.textContent = "No quote right now."; });
  }

  function showJobs(box, html) {
    box.innerHTML = html;
    // The balance in the header follows the list (a charge, a refund).
    var live = document.getElementById("live-balance");
    var shown = document.getElementById("balance");
    if (live && shown) shown.textContent = live.dataset.points;
  }

  function pollJobs(box) {
    fetch(box.dataset.src, { credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) { if (html !== null && html !== undefined) showJobs(box, html); })
      .catch(function () {})
      .finally(function () { setTimeout(function () { pollJobs(box); }, 1000); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("make");
    var out = document.getElementById("quote");
    if (form && out) {
      var update = debounce(function () { showQuote(form, out); }, 250);
      form.addEventListener("input", update);
      showQuote(form, out);
    }
    var box = document.getElementById("jobs");
    if (!box) return;
    if (!window.EventSource) {
      setTimeout(function () { pollJobs(box); }, 1000);
      return;
    }
    // Server-sent events; if the stream cannot be opened at all, fall back to polling.
    var events = new EventSource("/events/jobs");
    events.addEventListener("jobs", function (e) { showJobs(box, e.data); });
    events.addEventListener("signedout", function () { window.location.reload(); });
    events.onerror = function () {
      if (events.readyState === EventSource.CLOSED) pollJobs(box);
    };
  });
})();
