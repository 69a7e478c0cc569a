// faceage web page: send the chosen photo to /v1/estimate (ages) or /v1/check?over=N (pass / refer),
// draw boxes with ages or decisions, show the JSON.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const GREEN = "rgb(40,220,90)", ORANGE = "rgb(255,170,0)", RED = "rgb(235,60,60)";
  let busy = 0, lastFile = null;

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", !!isError);
  }

  function loadImage(file) {
    return new Promise((resolve) => {
      const url = URL.createObjectURL(file);
      const img = new Image();
      img.onload = () => resolve({ img, url });
      img.onerror = () => { URL.revokeObjectURL(url); resolve(null); };  // e.g. TIFF: the server reads it, the browser cannot
      img.src = url;
    });
  }

  function draw(loaded, body) {
    const canvas = $("canvas"), ctx = canvas.getContext("2d");
    const W = body.width, H = body.height;
    const scale = Math.min(1, 1400 / Math.max(W, H));  // canvas pixels per image pixel
    canvas.width = Math.max(1, Math.round(W * scale));
    canvas.height = Math.max(1, Math.round(H * scale));
    if (loaded) {
      ctx.drawImage(loaded.img, 0, 0, canvas.width, canvas.height);
    } else {
      ctx.fillStyle = "#e9ecf0"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    }
    const lw = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 300));
    const fontPx = Math.max(13, Math.round(Math.max(canvas.width, canvas.height) / 36));
    ctx.font = `bold ${fontPx}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    body.faces.forEach((f, i) => {
      const check = body.policy !== undefined;
      const colour = check ? (f.decision === "pass" ? GREEN : RED) : f.fallback ? ORANGE : GREEN;
      const [l, t, r, b] = f.box.map((v) => v * scale);
      ctx.lineWidth = lw; ctx.strokeStyle = colour;
      ctx.strokeRect(l, t, r - l, b - t);
      for (const [x, y] of f.eyes || []) {
        ctx.beginPath(); ctx.arc(x * scale, y * scale, lw * 1.5, 0, 2 * Math.PI); ctx.stroke();
      }
      const what = check ? (f.decision === "pass" ? `pass ${body.policy.over}+` : "refer")
        : `${f.age.toFixed(0)} (${f.age_interval[0].toFixed(0)}-${f.age_interval[1].toFixed(0)})`;
      const label = `${body.faces.length > 1 ? (i + 1) + ": " : ""}${what}`;
      const tw = ctx.measureText(label).width + 2 * lw, th = fontPx + 2 * lw;
      const y = t > th ? t - th : Math.min(b + lw, canvas.height - th);
      ctx.fillStyle = colour; ctx.fillRect(l, y, tw, th);
      ctx.fillStyle = "#000"; ctx.fillText(label, l + lw, y + lw);
    });
  }

  function listFaces(body) {
    const ol = $("faces");
    ol.replaceChildren();
    for (const f of body.faces) {
      const li = document.createElement("li");
      li.dataset.age = String(f.age);
      li.classList.toggle("fallback", !!f.fallback);
      const age = document.createElement("span");
      const interval = document.createElement("span");
      interval.className = "interval";
      const box = document.createElement("div");
      box.className = "box";
      if (body.policy !== undefined) {  // an age check
        li.dataset.decision = f.decision;
        age.className = `age decision ${f.decision}`;
        age.textContent = f.decision === "pass" ? `pass: ${body.policy.over} or older` : `refer: check an ID`;
        interval.textContent = ` p(${body.policy.over}+) ${f.p_over.toFixed(3)} · looks ${f.age.toFixed(0)}`;
        box.textContent = `box ${f.box.join(", ")}`;
      } else {
        age.className = "age"; age.textContent = `${f.age.toFixed(1)} years`;
        interval.textContent = ` 80% interval ${f.age_interval[0].toFixed(0)}-${f.age_interval[1].toFixed(0)}`;
        box.textContent = f.fallback ? "no face found: centre crop scored" : `box ${f.box.join(", ")} · score ${f.score}`;
      }
      li.append(age, interval, box);
      ol.append(li);
    }
  }

  async function estimate(file) {
    if (!file) return;
    lastFile = file;
    const mine = ++busy;
    const over = $("mode").value;
    setStatus(`${over ? "Checking" : "Estimating"} ${file.name || "photo"}…`);
    const params = new URLSearchParams();
    if ($("largest").checked) params.set("largest", "true");
    if (over) params.set("over", over);
    else if ($("fallback").checked) params.set("fallback", "true");
    const form = new FormData();
    form.append("file", file, file.name || "photo");
    let resp, body;
    try {
      resp = await fetch(`/v1/${over ? "check" : "estimate"}?${params}`, { method: "POST", body: form });
      const text = await resp.text();
      try { body = JSON.parse(text); } catch (e) { body = { detail: text || resp.statusText }; }
    } catch (e) {
      if (mine === busy) setStatus(`Request failed: ${e.message || e}`, true);
      return;
    }
    if (mine !== busy) return;  // a newer photo was chosen meanwhile
    $("json").textContent = JSON.stringify(body, null, 2);
    $("result").hidden = false;
    if (!resp.ok) {
      $("faces").replaceChildren();
      const c = $("canvas"); c.width = 1; c.height = 1;
      setStatus(`Error ${resp.status}: ${body.detail || "request failed"}`, true);
      return;
    }
    const loaded = await loadImage(file);
    draw(loaded, body);
    if (loaded) URL.revokeObjectURL(loaded.url);
    listFaces(body);
    const n = body.faces.length;
    const passed = body.faces.filter((f) => f.decision === "pass").length;
    setStatus(n === 0 ? "No face found." + (over ? " Nobody passes." : "") :
      `${n} face${n > 1 ? "s" : ""}${over ? ` · ${passed} pass, ${n - passed} refer (over ${over})` : ""}` +
      ` · ${body.width}×${body.height} px · ${body.elapsed_ms.toFixed(0)} ms · ${body.model}`);
  }

  $("file").addEventListener("change", (e) => estimate(e.target.files[0]));
  $("mode").addEventListener("change", () => {
    $("check-note").hidden = !$("mode").value;
    $("fallback").disabled = !!$("mode").value;  // a check never scores a centre crop
    if (lastFile) estimate(lastFile);
  });
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) => document.addEventListener(t, (e) => {
    e.preventDefault(); drop.classList.add("over");
  }));
  ["dragleave", "dragend"].forEach((t) => document.addEventListener(t, () => drop.classList.remove("over")));
  document.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) estimate(e.dataTransfer.files[0]);
  });

  fetch("/v1/model").then((r) => r.json()).then((m) => {
    $("model").textContent = `model: ${m.name} (${m.arch}, ${m.input_size} px, ${m.backend})`;
    if (m.limits) $("limit").textContent = `${+(m.limits.max_upload_bytes / 1048576).toFixed(1)} MB`;
    for (const over of m.age_checks || []) {
      const opt = document.createElement("option");
      opt.value = String(over); opt.textContent = `age check: ${over} or older?`;
      $("mode").append(opt);
    }
  }).catch(() => { $("model").textContent = "model: unavailable"; });
})();
