// Polls the job twice a second and updates the bars; reloads once when the job ends, so the
// server renders the result (or the error) in the page's language.
(function () {
  var section = document.getElementById("progress-section");
  if (!section || section.dataset.terminal === "yes") { return; }
  var id = section.dataset.job;
  function update(job) {
    document.getElementById("overall").value = job.percent;
    document.getElementById("percent").textContent = job.percent + "%";
    var status = document.getElementById("status");
    status.textContent = job.status_label;
    status.className = "status-" + job.status;
    job.stages.forEach(function (s) {
      var li = document.querySelector('#stages li[data-stage="' + s.name + '"]');
      if (!li) {
        li = document.createElement("li");
        li.dataset.stage = s.name;
        li.innerHTML = '<span class="label"></span> <progress max="100"></progress> <span class="pct"></span>';
        li.querySelector(".label").textContent = s.label;
      }
      document.getElementById("stages").appendChild(li);  // keep the server's (pipeline) order
      li.querySelector("progress").value = s.percent;
      li.querySelector(".pct").textContent = s.percent + "%";
      li.className = (job.stage === s.name && !job.terminal) ? "current" : (s.percent >= 100 ? "done" : "");
    });
    if (job.error) {
      var e = document.getElementById("error");
      e.textContent = job.error;
      e.hidden = false;
    }
    if (job.terminal) { window.location.reload(); return true; }
    return false;
  }
  function poll() {
    fetch("/api/jobs/" + id, {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (job) { if (!update(job)) { setTimeout(poll, 500); } })
      .catch(function () { setTimeout(poll, 2000); });
  }
  poll();
})();
