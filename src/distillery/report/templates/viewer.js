/* The trajectory viewer: filters, text search and pages over the records in #trajectory-data.
   Markup comes from the <template> elements; model output is only ever set as textContent. */
(function () {
  "use strict";
  var dataNode = document.getElementById("trajectory-data");
  var list = document.getElementById("trajectories");
  var section = document.getElementById("viewer");
  if (!dataNode || !list || !section) { return; }
  var records = JSON.parse(dataNode.textContent);
  var tierNames = JSON.parse(document.getElementById("tier-names").textContent);
  var pageSize = parseInt(section.getAttribute("data-page-size"), 10) || 20;
  var page = 0;
  var haystacks = null;

  function byId(id) { return document.getElementById(id); }
  function clone(id) { return byId(id).content.firstElementChild.cloneNode(true); }
  function slot(node, name) { return node.querySelector('[data-slot="' + name + '"]'); }
  function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }
  function conf(v) { return v === null || v === undefined ? "–" : v.toFixed(3); }
  function money(v) { return "$" + (v || 0).toFixed(6); }
  function tierLabel(index, model) {
    return "tier " + (index + 1) + " (" + (model || tierNames[index] || "?") + ")";
  }
  function chip(text, kind) {
    var node = clone("tpl-chip");
    node.textContent = text;
    if (kind) { node.classList.add(kind); }
    return node;
  }

  // -- search ------------------------------------------------------------------------------------
  function actionText(a) {
    var parts = [a.thinking || "", a.text || ""];
    (a.calls || []).forEach(function (c) { parts.push(c.name || "", c.args || ""); });
    (a.results || []).forEach(function (r) { parts.push(r.name || "", r.content || ""); });
    return parts.join("\n");
  }
  function searchText(r) {
    var parts = [r.task || "", r.query || "", r.answer || "", r.expected || "", r.error || "", (r.tags || []).join(" ")];
    r.steps.forEach(function (s) {
      parts.push(s.by || "", actionText(s));
      (s.rejected || []).forEach(function (p) { parts.push(actionText(p)); });
    });
    if (r.alone) { r.alone.steps.forEach(function (s) { parts.push(actionText(s)); }); }
    return parts.join("\n").toLowerCase();
  }

  // -- filters -----------------------------------------------------------------------------------
  function value(id) { var node = byId(id); return node ? node.value : ""; }
  function matching() {
    var text = value("filter-text").trim().toLowerCase();
    var escalated = value("filter-escalated"), outcome = value("filter-outcome");
    var taskTier = value("filter-task-tier"), family = value("filter-family"), top = value("filter-top");
    if (text && haystacks === null) { haystacks = records.map(searchText); }
    return records.filter(function (r, i) {
      if (escalated === "yes" && !r.escalated) { return false; }
      if (escalated === "no" && r.escalated) { return false; }
      if (outcome === "failed" && r.ok !== false) { return false; }
      if (outcome === "ok" && r.ok !== true) { return false; }
      if (taskTier && r.task_tier !== taskTier) { return false; }
      if (family && r.family !== family) { return false; }
      if (top && String(r.top) !== top) { return false; }
      if (text && haystacks[i].indexOf(text) < 0) { return false; }
      return true;
    });
  }

  // -- rendering ---------------------------------------------------------------------------------
  function fillPre(part, text) {
    if (!text) { part.remove(); return; }
    part.querySelector("pre").textContent = text;
  }
  function renderAction(a, isAnswer) {
    var node = clone("tpl-action");
    fillPre(slot(node, "thinking"), a.thinking);
    var textPart = slot(node, "text");
    if (isAnswer && a.text) { slot(node, "text-label").textContent = "final answer"; }
    fillPre(textPart, a.text);
    var calls = slot(node, "calls");
    if (a.calls && a.calls.length) {
      a.calls.forEach(function (c) {
        var call = clone("tpl-call");
        call.querySelector(".name").textContent = c.name || "(no name)";
        call.querySelector(".args").textContent = "(" + (c.args || "") + ")" + (c.error ? "  [could not parse: " + c.error + "]" : "");
        calls.appendChild(call);
      });
    } else { calls.remove(); }
    var results = slot(node, "results");
    if (a.results && a.results.length) {
      a.results.forEach(function (r) {
        var result = clone("tpl-result");
        result.querySelector(".name").textContent = (r.name || "") + (r.error ? " (error)" : "") + " → ";
        result.querySelector(".content").textContent = r.content || "";
        if (r.error) { result.classList.add("error"); }
        results.appendChild(result);
      });
    } else { results.remove(); }
    return node;
  }
  function confidenceChips(s) {
    var holder = document.createDocumentFragment();
    (s.confidences || []).forEach(function (c) {
      var node = clone("tpl-confidence");
      var text = "tier " + (c.tier + 1) + ": ";
      if (c.error) { text += "failed"; node.classList.add("doubted"); }
      else if (c.confidence === undefined || c.confidence === null) { text += "not scored"; }
      else {
        text += conf(c.confidence);
        if (c.threshold !== undefined && c.threshold !== null) {
          var doubted = c.confidence < c.threshold;
          text += (doubted ? " < " : " ≥ ") + conf(c.threshold);
          node.classList.add(doubted ? "doubted" : "kept");
        }
      }
      if (c.invalid) { text += " (invalid: " + c.invalid + ")"; }
      if (c.score_error) { text += " (cannot score)"; }
      node.textContent = text;
      holder.appendChild(node);
    });
    return holder;
  }
  function escalationBlock(proposals, taken, takenWhy) {
    var block = clone("tpl-escalation");
    var first = block.querySelector(".proposal");
    proposals.forEach(function (p, index) {
      var side = index === 0 ? first : first.cloneNode(true);
      slot(side, "title").textContent = p.title;
      slot(side, "why").textContent = p.why;
      var holder = slot(side, "action");
      holder.textContent = "";
      holder.appendChild(renderAction(p.action, !(p.action.calls && p.action.calls.length)));
      if (index > 0) { block.insertBefore(side, block.querySelector(".taken")); }
    });
    var right = block.querySelector(".taken");
    slot(right, "title").textContent = "Step taken: by " + tierLabel(taken.tier, taken.by);
    slot(right, "why").textContent = takenWhy;
    slot(right, "action").appendChild(renderAction(taken, !(taken.calls && taken.calls.length)));
    return block;
  }
  function takenWhy(s) {
    return s.confidence === null || s.confidence === undefined ? "the last tier is not questioned"
      : "confidence " + conf(s.confidence);
  }
  function renderStep(s, index, r) {
    var node = clone("tpl-step");
    slot(node, "number").textContent = "step " + (index + 1);
    slot(node, "producer").textContent = "by " + tierLabel(s.tier, s.by);
    slot(node, "confidences").appendChild(confidenceChips(s));
    slot(node, "cost").textContent = money(s.cost);
    var note = slot(node, "note");
    var body = slot(node, "body");
    var isAnswer = !(s.calls && s.calls.length);
    if (s.rejected && s.rejected.length) {
      node.classList.add("escalated");
      var proposals = s.rejected.map(function (p) {
        var why = "confidence " + conf(p.confidence) + (p.threshold !== null && p.threshold !== undefined
          ? " < threshold " + conf(p.threshold) : "");
        return {title: "Rejected proposal: " + tierLabel(p.tier, p.model), why: why, action: p};
      });
      body.appendChild(escalationBlock(proposals, s, takenWhy(s)));
    } else if (s.abandoned && r.alone && r.alone.doubted !== null && r.alone.doubted !== undefined) {
      node.classList.add("escalated");
      var doubted = r.alone.steps[r.alone.doubted];
      body.appendChild(escalationBlock([{
        title: "Rejected: step " + (r.alone.doubted + 1) + (r.alone.recorded ? " of the abandoned attempt (" :
          " of the student-alone run (") + r.alone.model + ")",
        why: "confidence " + conf(doubted.confidence) + " < threshold " + conf(r.alone.threshold) +
          "; the task then restarted from the query at tier " + (r.restarted.tier + 1),
        action: doubted
      }], s, takenWhy(s)));
    } else {
      body.appendChild(renderAction(s, isAnswer));
    }
    var notes = [];
    if (s.abandoned) {
      notes.push("First step after a restart: " + s.abandoned.attempts + " abandoned attempt(s), " + s.abandoned.steps +
        " step(s), " + money(s.abandoned.cost_usd) + " charged here.");
    } else if (s.escalated && !(s.rejected && s.rejected.length)) { notes.push("Escalated."); }
    if (!s.escalated && s.tier > 0) {
      notes.push("Tier " + (s.tier + 1) + " answered directly: after an escalation the task stays with the higher tier (escalate = " +
        (section.getAttribute("data-escalate") || "task") + ").");
    }
    if (s.fallback_failed) { notes.push("The fallback failed (" + s.fallback_failed + "): the lower tier's proposal was kept, flagged."); }
    if (s.stop && s.stop !== "end_turn" && s.stop !== "tool_use") { notes.push("stop reason: " + s.stop); }
    if (notes.length) { note.textContent = notes.join(" "); } else { note.remove(); }
    return node;
  }
  function renderRestart(r) {
    var node = clone("tpl-restart");
    var info = r.restarted;
    slot(node, "summary").textContent = "Restarted at tier " + (info.tier + 1) + ": a step after the first was doubted, so the " +
      "task started over from the query. The abandoned attempt (" + info.abandoned_steps + " step(s), " +
      money(info.abandoned_cost_usd) + ") is not part of the answer.";
    var attempt = node.querySelector(".attempt");
    if (!r.alone) { attempt.remove(); return node; }
    var steps = slot(node, "attempt-steps");
    if (r.alone.doubted === null || r.alone.doubted === undefined) {
      slot(node, "attempt-title").textContent = "The student-alone run of this task has no step below the threshold " +
        conf(r.alone.threshold) + ", so the abandoned attempt differed from it; it cannot be shown.";
      return node;
    }
    slot(node, "attempt-title").textContent = (r.alone.recorded ? "The abandoned attempt, as the cascade recorded it: " :
      "The abandoned attempt, as the student-alone run of this task shows it (greedy decoding repeats it): ") +
      r.alone.doubted + " step(s) before the doubted one";
    r.alone.steps.slice(0, r.alone.doubted).forEach(function (s, i) { steps.appendChild(renderStep(s, i, {})); });
    if (!r.alone.doubted) { attempt.remove(); }
    return node;
  }
  function renderTrajectory(r) {
    var node = clone("tpl-trajectory");
    node.setAttribute("data-index", r.i);
    node.setAttribute("data-escalated", r.escalated ? "yes" : "no");
    node.setAttribute("data-ok", r.ok === true ? "yes" : r.ok === false ? "no" : "unknown");
    var status = slot(node, "status");
    status.textContent = r.ok === true ? "✓ solved" : r.ok === false ? "✗ failed" : "unchecked";
    status.classList.add(r.ok === true ? "ok" : r.ok === false ? "fail" : "unknown");
    slot(node, "task").textContent = r.task || "";
    slot(node, "query").textContent = r.query || "";
    var chips = slot(node, "chips");
    if (r.escalated) { chips.appendChild(chip("escalated", "warn")); }
    if (r.restarted) { chips.appendChild(chip("restarted", "warn")); }
    if (r.top > 0) { chips.appendChild(chip("up to tier " + (r.top + 1))); }
    if (r.family) { chips.appendChild(chip(r.family)); }
    if (r.task_tier) { chips.appendChild(chip("tier:" + r.task_tier)); }
    slot(node, "cost").textContent = money(r.cost);
    slot(node, "answer").textContent = r.answer || "(no final answer)";
    slot(node, "expected").textContent = r.expected === null || r.expected === undefined ? "–" : r.expected;
    slot(node, "detail").textContent = r.status + (r.error ? ": " + r.error : "") + ", " + r.steps.length + " step(s)";
    if (r.restarted) { slot(node, "restart").appendChild(renderRestart(r)); } else { slot(node, "restart").remove(); }
    var steps = slot(node, "steps");
    var built = false;
    node.addEventListener("toggle", function () {  // steps are built the first time a trajectory is opened
      if (!node.open || built) { return; }
      built = true;
      r.steps.forEach(function (s, i) { steps.appendChild(renderStep(s, i, r)); });
    });
    return node;
  }
  function render() {
    var shown = matching();
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    if (page >= pages) { page = pages - 1; }
    var start = page * pageSize;
    var slice = shown.slice(start, start + pageSize);
    var fragment = document.createDocumentFragment();
    slice.forEach(function (r) { fragment.appendChild(renderTrajectory(r)); });
    if (!slice.length) {
      var empty = clone("tpl-empty");
      empty.textContent = "No trajectory matches these filters.";
      fragment.appendChild(empty);
    }
    list.textContent = "";
    list.appendChild(fragment);
    list.setAttribute("data-matching", String(shown.length));
    byId("viewer-count").textContent = shown.length
      ? "Showing " + (start + 1) + "–" + (start + slice.length) + " of " + shown.length + " matching (" + records.length + " in all)"
      : "0 of " + records.length + " match";
    byId("page-label").textContent = "page " + (page + 1) + " of " + pages;
    byId("page-prev").disabled = page === 0;
    byId("page-next").disabled = page >= pages - 1;
  }

  var timer = null;
  byId("filters").addEventListener("input", function (event) {
    page = 0;
    clearTimeout(timer);  // a search still waiting to run would redraw (and close) what the next change shows
    if (event.target.id === "filter-text") { timer = setTimeout(render, 120); } else { render(); }
  });
  byId("filters").addEventListener("submit", function (event) { event.preventDefault(); });
  byId("page-prev").addEventListener("click", function () { page -= 1; render(); list.scrollIntoView(); });
  byId("page-next").addEventListener("click", function () { page += 1; render(); list.scrollIntoView(); });
  render();
}());
