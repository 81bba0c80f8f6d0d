// Keeps waiting rooms current without the person reloading. On a patient's appointment page, the status
// line follows the appointment's event stream, and the link into the call shows once it has started. On a clinician's schedule, the page reloads every so often
// so that waiting times stay right, but never while someone is filling in one of its forms.
// The pages' Content-Security-Policy allows no inline script, so this is a file of its own.
(function () {
  "use strict";

  // After these the status cannot change again: no stream is needed.
  var FINAL = ["completed", "cancelled", "no_show"];

  function statusText(status) {
    // The texts come from the page, so that they are written in one place: the server.
    var items = document.querySelectorAll("#status-texts [data-status]");
    for (var i = 0; i < items.length; i++) {
      if (items[i].getAttribute("data-status") === status) {
        return items[i].textContent;
      }
    }
    return null;
  }

  function followStatus(line) {
    var id = line.getAttribute("data-appointment");
    if (!id || !window.EventSource || FINAL.indexOf(line.getAttribute("data-status")) !== -1) {
      return;
    }
    var source = new EventSource("/api/v1/appointments/" + encodeURIComponent(id) + "/events");
    source.addEventListener("status", function (event) {
      var text = statusText(event.data);
      if (text === null) {
        return;
      }
      line.setAttribute("data-status", event.data);
      line.textContent = text;
      var join = document.getElementById("join-call");
      if (join) {
        join.hidden = event.data !== "in_consultation";
      }
      if (FINAL.indexOf(event.data) !== -1) {
        source.close();
      }
    });
  }

  // Whether reloading now would lose something: a focused field, typed text, or an open form.
  function busy(root) {
    var active = document.activeElement;
    if (active && active !== document.body && root.contains(active) && active.closest("form")) {
      return true;
    }
    if (root.querySelector("details[open]")) {
      return true;
    }
    var fields = root.querySelectorAll("textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== "") {
        return true;
      }
    }
    return false;
  }

  function refreshSchedule(root) {
    var url = root.getAttribute("data-refresh-url");
    var seconds = parseInt(root.getAttribute("data-refresh-seconds"), 10);
    if (!url || !(seconds > 0)) {
      return;
    }
    window.setInterval(function () {
      if (!busy(root)) {
        window.location.replace(url);
      }
    }, seconds * 1000);
  }

  var line = document.getElementById("live-status");
  if (line) {
    followStatus(line);
  }
  var schedule = document.querySelector("[data-refresh-url]");
  if (schedule) {
    refreshSchedule(schedule);
  }
})();
