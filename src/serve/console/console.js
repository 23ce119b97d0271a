// The execrelay console: reads the relay's /v1 API every 2 s and renders it; the selected
// job's tail comes as a stream. Everything shown is set with textContent (never parsed as
// HTML). The token is kept in this page's memory only and never sent: each call carries a
// proof of it for that one call (serve::token_proof), so a tab left open gives nothing
// reusable to whoever might answer at this address after the relay stops.
"use strict";

(function () {
  // The token, in this page's memory only: a reload asks for it again.
  let secret = "";
  let signingKey = null;
  const encoder = new TextEncoder();
  const EVERY_MS = 2000;
  const FINISHED_SHOWN = 20;
  let selectedJob = null;
  // Until the operator picks a job, the tail follows the newest running one.
  let pinned = false;
  let timer = null;
  // A finished job's completion, by job id, once its message can change no more.
  const settled = new Map();

  const $ = (id) => document.getElementById(id);

  function token() {
    return secret;
  }

  function setToken(value) {
    secret = value;
    signingKey = null;
  }

  // `Execrelay-Proof t=<s>,n=<nonce>,mac=<HMAC-SHA256(token, "t\nn\nMETHOD\npath")>`.
  async function authorization(method, path) {
    if (!signingKey) {
      signingKey = await crypto.subtle.importKey(
        "raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    }
    const t = Math.floor(Date.now() / 1000);
    const nonce = Array.from(crypto.getRandomValues(new Uint8Array(12)),
      (b) => b.toString(16).padStart(2, "0")).join("");
    const mac = await crypto.subtle.sign(
      "HMAC", signingKey, encoder.encode(t + "\n" + nonce + "\n" + method + "\n" + path));
    const hex = Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join("");
    return "Execrelay-Proof t=" + t + ",n=" + nonce + ",mac=" + hex;
  }

  async function api(path, method) {
    const response = await fetch(path, {
      method: method || "GET",
      headers: { Authorization: await authorization(method || "GET", path) },
      cache: "no-store",
      credentials: "omit",
    });
    const text = await response.text();
    if (!response.ok) {
      let why = text;
      try { why = JSON.parse(text).error || text; } catch (_) { /* not JSON */ }
      throw new Error(method + " " + path + ": " + response.status + " " + why);
    }
    return text;
  }

  async function apiJson(path, method) {
    return JSON.parse(await api(path, method || "GET"));
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    if (className === "text") td.title = td.textContent;
    return td;
  }

  function button(label, action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", (event) => {
      event.stopPropagation();
      b.disabled = true;
      action().then(refresh, (err) => status(err.message, true)).finally(() => { b.disabled = false; });
    });
    return b;
  }

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function duration(ms) {
    if (ms === null || ms === undefined || ms < 0) return "";
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    return Math.floor(m / 60) + "h " + (m % 60) + "m";
  }

  function when(ms) {
    return ms ? new Date(ms).toLocaleTimeString() : "";
  }

  function status(text, isError) {
    const p = $("status");
    p.textContent = text;
    p.className = isError ? "error" : "";
  }

  function outcome(job) {
    if (job.state === "exited") return "exit " + job.exit_code;
    if (job.signal !== null && job.signal !== undefined) return job.state + " (signal " + job.signal + ")";
    return job.state;
  }

  function completionText(completion) {
    if (!completion) return "not yet";
    if (completion.blocked) return "held: " + completion.blocked;
    const d = completion.delivery;
    if (!d) return "event " + completion.event_state;
    const at = d.finished_at ? " at " + when(d.finished_at) : "";
    return d.state + " via " + d.channel + at + " (message " + d.id + ")";
  }

  async function completionOf(job) {
    if (settled.has(job.id)) return settled.get(job.id);
    const full = await apiJson("/v1/jobs/" + encodeURIComponent(job.id));
    const c = full.completion;
    const done = c && c.delivery && (c.delivery.state === "delivered" || c.delivery.state === "dropped");
    if (done) settled.set(job.id, c);
    return c;
  }

  function select(id) {
    selectedJob = id;
    followTail();
    for (const tr of document.querySelectorAll("tr[data-job]")) {
      tr.classList.toggle("selected", tr.dataset.job === selectedJob);
    }
  }

  function jobRow(job, cells) {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    if (job.id === selectedJob) tr.className = "selected";
    tr.addEventListener("click", () => { pinned = true; select(job.id); });
    tr.append(...cells);
    return tr;
  }

  async function renderJobs(jobs, now) {
    const running = jobs.filter((j) => j.state === "starting" || j.state === "running");
    const finished = jobs.filter((j) => j.state !== "starting" && j.state !== "running").slice(0, FINISHED_SHOWN);
    if ((!selectedJob || !pinned) && running.length) selectedJob = running[0].id;
    replaceRows($("running-rows"), running.map((j) => {
      const kill = cell("");
      kill.append(button("Kill", () => api("/v1/jobs/" + encodeURIComponent(j.id) + "/kill", "POST")));
      return jobRow(j, [
        cell(j.id), cell(j.command, "text"), cell(j.requester),
        cell(duration(now - (j.started_at || j.created_at)), "nowrap"), kill,
      ]);
    }));
    $("running-empty").hidden = running.length > 0;
    const completions = await Promise.all(finished.map((j) => completionOf(j).catch(() => null)));
    replaceRows($("finished-rows"), finished.map((j, i) => jobRow(j, [
      cell(j.id), cell(j.command, "text"),
      cell(outcome(j), j.state === "exited" && j.exit_code === 0 ? "ok" : "bad"),
      cell(duration(j.finished_at - (j.started_at || j.created_at)), "nowrap"),
      cell(when(j.finished_at), "nowrap"),
      cell(completionText(completions[i])),
    ])));
  }

  function parseMetrics(text) {
    const byChannel = new Map();
    const line = /^(execrelay_outbox_pending|execrelay_outbox_oldest_pending_age_seconds|execrelay_outbox_dead)\{[^}]*channel="([^"]*)"[^}]*\}\s+(\S+)/;
    for (const l of text.split("\n")) {
      const m = line.exec(l);
      if (!m) continue;
      const entry = byChannel.get(m[2]) || {};
      entry[m[1]] = Number(m[3]);
      byChannel.set(m[2], entry);
    }
    return byChannel;
  }

  function renderOutbox(outbox, metrics) {
    const channels = new Map();
    const of = (name) => {
      if (!channels.has(name)) channels.set(name, { pending: 0, dead: 0, oldest: null, error: "" });
      return channels.get(name);
    };
    for (const [name, m] of metrics) {
      const c = of(name);
      c.oldest = m.execrelay_outbox_oldest_pending_age_seconds;
    }
    for (const d of outbox.deliveries) {
      const c = of(d.channel);
      if (d.state === "pending") c.pending += 1;
      if (d.state === "dead") c.dead += 1;
      if (d.last_error) c.error = d.last_error;
    }
    for (const f of outbox.failing_channels) {
      of(f.channel).error = "failing since " + when(f.failing_since) + ": " + (f.last_error || "");
    }
    replaceRows($("channel-rows"), [...channels.entries()].sort().map(([name, c]) => {
      const tr = document.createElement("tr");
      tr.append(
        cell(name), cell(c.pending),
        cell(c.pending && c.oldest !== null && c.oldest !== undefined ? duration(c.oldest * 1000) : ""),
        cell(c.dead, c.dead ? "bad" : ""), cell(c.error, "text"),
      );
      return tr;
    }));
    const blocked = outbox.blocked_events || [];
    $("blocked").textContent = blocked.length
      ? blocked.length + " event(s) cannot go anywhere yet: " + blocked.map((e) => e.session + " (" + e.blocked + ")").join(", ")
      : "";
    const dead = outbox.deliveries.filter((d) => d.state === "dead");
    replaceRows($("dead-rows"), dead.map((d) => {
      const tr = document.createElement("tr");
      tr.dataset.delivery = d.id;
      const retry = cell("");
      retry.append(button("Retry", () => api("/v1/outbox/" + encodeURIComponent(d.id) + "/retry", "POST")));
      tr.append(cell(d.id), cell(d.channel), cell(d.chat_id), cell(d.attempts),
        cell(d.last_error, "text"), cell(d.text, "text"), retry);
      return tr;
    }));
    $("dead-empty").hidden = dead.length > 0;
  }

  function renderRoutes(routes) {
    replaceRows($("route-rows"), routes.map((r) => {
      const tr = document.createElement("tr");
      tr.append(cell(r.session), cell(r.channel), cell(r.chat_id), cell(r.chat_type), cell(r.thread_id));
      return tr;
    }));
  }

  // The live tail: one stream of the selected job's tail (newline-delimited JSON, a line each
  // time it changes, ending once the job has ended), read with the token in its header.
  let tail = null;

  function showTail(shown) {
    $("tail-title").textContent = shown.id + " (" + shown.state + ")";
    $("tail-text").textContent = shown.text || "(nothing printed yet)";
  }

  function followTail() {
    if (!selectedJob || !token()) return;
    // Following it already, or it ended with its last line shown.
    if (tail && tail.id === selectedJob) return;
    if (tail) tail.controller.abort();
    const id = selectedJob;
    const controller = new AbortController();
    const following = { id, controller };
    tail = following;
    (async () => {
      try {
        const path = "/v1/jobs/" + encodeURIComponent(id) + "/tail/stream?lines=200";
        const response = await fetch(
          path,
          {
            headers: { Authorization: await authorization("GET", path) },
            cache: "no-store",
            credentials: "omit",
            signal: controller.signal,
          },
        );
        if (!response.ok) throw new Error("GET tail of " + id + ": " + response.status);
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffered = "";
        let ended = false;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffered += decoder.decode(value, { stream: true });
          let at;
          while ((at = buffered.indexOf("\n")) >= 0) {
            const line = buffered.slice(0, at);
            buffered = buffered.slice(at + 1);
            if (!line) continue;
            const shown = JSON.parse(line);
            ended = shown.state !== "running" && shown.state !== "starting";
            if (tail === following) showTail(shown);
          }
        }
        // A stream that ended before its job did (the relay stopped, or its hour was up) is
        // followed again at the next refresh.
        if (!ended && tail === following) tail = null;
      } catch (err) {
        if (err.name === "AbortError") return;
        status(err.message, true);
        // Followed again at the next refresh.
        if (tail === following) tail = null;
      }
    })();
  }

  let refreshing = false;

  async function refresh() {
    // A slow answer never stacks a second round of requests behind it.
    if (!token() || refreshing) return;
    refreshing = true;
    try {
      const [jobs, outbox, routes, metrics] = await Promise.all([
        apiJson("/v1/jobs"), apiJson("/v1/outbox"), apiJson("/v1/routes"), api("/metrics"),
      ]);
      await renderJobs(jobs.jobs, Date.now());
      renderOutbox(outbox, parseMetrics(metrics));
      renderRoutes(routes.routes);
      followTail();
      status("Connected; updated " + new Date().toLocaleTimeString() + ".", false);
    } catch (err) {
      status(err.message, true);
    } finally {
      refreshing = false;
    }
  }

  function start() {
    if (timer) clearInterval(timer);
    refresh();
    timer = setInterval(refresh, EVERY_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("connect").addEventListener("click", () => {
      setToken($("token").value.trim());
      $("token").value = "";
      start();
    });
    $("token").addEventListener("keydown", (event) => {
      if (event.key === "Enter") $("connect").click();
    });
    $("forget").addEventListener("click", () => {
      setToken("");
      if (tail) tail.controller.abort();
      tail = null;
      $("tail-text").textContent = "";
      if (timer) clearInterval(timer);
      timer = null;
      status("Token forgotten.", false);
    });
  });
})();
