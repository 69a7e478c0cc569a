// faceage web page: send the chosen photo to /v1/estimate, draw boxes and ages, show the JSON.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const GREEN = "rgb(40,220,90)", ORANGE = "rgb(255,170,0)";
  let busy = 0;

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
      const colour = f.fallback ? ORANGE : GREEN;
      const [l, t, r, b] = f.box.map((v) => v * scale);
      ctx.lineWidth = lw; ctx.strokeStyle = colour;
      ctx.strokeRect(l, t, r - l, b - t);
      for (const [x, y] of f.eyes) {
        ctx.beginPath(); ctx.arc(x * scale, y * scale, lw * 1.5, 0, 2 * Math.PI); ctx.stroke();
      }
      const [lo, hi] = f.age_interval;
      const label = `${body.faces.length > 1 ? (i + 1) + ": " : ""}${f.age.toFixed(0)} (${lo.toFixed(0)}-${hi.toFixed(0)})`;
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
      age.className = "age"; age.textContent = `${f.age.toFixed(1)} years`;
      const interval = document.createElement("span");
      interval.className = "interval";
      interval.textContent = ` 80% interval ${f.age_interval[0].toFixed(0)}-${f.age_interval[1].toFixed(0)}`;
      const box = document.createElement("div");
      box.className = "box";
      box.textContent = f.fallback ? "no face found: centre crop scored" : `box ${f.box.join(", ")} · score ${f.score}`;
      li.append(age, interval, box);
      ol.append(li);
    }
  }

  async function estimate(file) {
    if (!file) return;
    const mine = ++busy;
    setStatus(`Estimating ${file.name || "photo"}…`);
    const params = new URLSearchParams();
    if ($("largest").checked) params.set("largest", "true");
    if ($("fallback").checked) params.set("fallback", "true");
    const form = new FormData();
    form.append("file", file, file.name || "photo");
    let resp, body;
    try {
      resp = await fetch(`/v1/estimate?${params}`, { method: "POST", body: form });
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
    setStatus(n === 0 ? "No face found." :
      `${n} face${n > 1 ? "s" : ""} · ${body.width}×${body.height} px · ${body.elapsed_ms.toFixed(0)} ms · ${body.model}`);
  }

  $("file").addEventListener("change", (e) => estimate(e.target.files[0]));
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
  }).catch(() => { $("model").textContent = "model: unavailable"; });
})();
