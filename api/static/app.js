// The whole client: analyze -> pre-signed POST to S3 -> upload-complete -> live result over the WebSocket.
"use strict";

const $ = (id) => document.getElementById(id);

class UiError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function showError(code, message) {
  $("error-code").textContent = code;
  $("error-message").textContent = message;
  $("error").hidden = false;
  setStatus("Something went wrong.", "error");
}

function reset() {
  $("error").hidden = true;
  $("result").hidden = true;
  for (const id of ["category", "item", "disposal", "recyclable", "confidence", "cache", "model", "photo-note"]) {
    $(id).textContent = "";
  }
  $("simulated").hidden = true;
  $("photo").removeAttribute("src");
}

// Our API answers errors as {"error": {"code", "message"}}.
async function api(method, path, token, payload) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const init = { method, headers };
  if (payload !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new UiError("NETWORK_ERROR", `The service could not be reached (${e.message}).`);
  }
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = body && body.error;
    throw new UiError(err ? err.code : `HTTP_${resp.status}`, err ? err.message : resp.statusText);
  }
  return body;
}

// S3 answers errors as XML: <Error><Code>..</Code><Message>..</Message></Error>.
async function uploadToS3(job, file) {
  const form = new FormData();
  for (const [name, value] of Object.entries(job.upload_fields)) form.append(name, value);
  if (!("Content-Type" in job.upload_fields)) form.append("Content-Type", file.type || "application/octet-stream");
  form.append("file", file); // must be the last field
  let resp;
  try {
    resp = await fetch(job.upload_url, { method: "POST", body: form });
  } catch (e) {
    throw new UiError("UPLOAD_FAILED",
      `The storage server refused the upload or could not be reached (${e.message}). ` +
      "Only image files up to " + Math.round(job.max_bytes / 1048576) + " MB are accepted.");
  }
  if (!resp.ok) {
    const xml = new DOMParser().parseFromString(await resp.text(), "application/xml");
    const pick = (tag) => { const el = xml.querySelector(tag); return el ? el.textContent : ""; };
    const code = pick("Code") || `HTTP_${resp.status}`;
    let message = pick("Message") || resp.statusText;
    if (code === "EntityTooLarge") message = `The photo is too large (at most ${job.max_bytes} bytes).`;
    else if (!file.type.startsWith("image/")) message = `Only images can be uploaded, this file is "${file.type || "unknown"}". ${message}`;
    throw new UiError(`UPLOAD_REJECTED: ${code}`, message);
  }
}

function showResult(job, result) {
  if (result.status === "failed") {
    const err = result.error || { code: "FAILED", message: "The photo could not be analysed." };
    showError(err.code, err.message);
    return;
  }
  const c = result.classification;
  $("category").textContent = c.category.replace(/_/g, " ");
  $("item").textContent = c.item_name;
  $("disposal").textContent = c.disposal_instructions;
  $("recyclable").textContent = c.recyclable ? "yes" : "no";
  $("confidence").textContent = `${Math.round(c.confidence * 100)} %`;
  const cache = result.cache;
  $("cache").textContent = cache ? `${cache.hit ? "hit" : "miss"} (${cache.source})` : "unknown";
  $("cache").dataset.hit = cache && cache.hit ? "true" : "false";
  const by = result.answered_by;
  const simulated = Boolean(by && by.simulated);
  $("model").textContent = by ? by.model + (simulated ? " (simulator)" : "") : "unknown";
  $("simulated").hidden = !simulated;
  $("result").hidden = false;
  setStatus("Done.", "done");
}

function follow(job) {
  return new Promise((resolve) => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams({ job_id: job.job_id, token: job.token });
    const ws = new WebSocket(`${scheme}://${location.host}/api/v1/waste/ws?${query}`);
    let done = false;
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "state") setStatus(msg.state === "queued" ? "Analysing…" : `State: ${msg.state}`, msg.state);
      else if (msg.type === "result") { done = true; showResult(job, msg.result); resolve(); }
      else if (msg.type === "error") showError(msg.error.code, msg.error.message);
    };
    ws.onclose = (event) => {
      if (!done) showError("CONNECTION_LOST", `The live connection closed before the result arrived (code ${event.code}).`);
      resolve();
    };
  });
}

async function analyze(file) {
  reset();
  try {
    setStatus("Preparing the upload…", "preparing");
    // The upload policy pins this exact type; the API refuses types it does not accept (no SVG, no HTML).
    let job;
    try {
      job = await api("POST", "/api/v1/waste/analyze", null, { content_type: file.type || "application/octet-stream" });
    } catch (e) {
      if (e instanceof UiError && e.code === "CONTENT_TYPE_NOT_ALLOWED") {
        throw new UiError("UPLOAD_REJECTED: CONTENT_TYPE_NOT_ALLOWED",
          `Only images can be uploaded, this file is "${file.type || "unknown"}". ${e.message}`);
      }
      throw e;
    }
    setStatus("Uploading…", "uploading");
    await uploadToS3(job, file);
    setStatus("Confirming…", "confirming");
    await api("POST", `/api/v1/waste/upload-complete/${encodeURIComponent(job.job_id)}`, job.token);
    $("photo").src = job.image_url; // through the CDN
    $("result").hidden = false;
    setStatus("Analysing…", "queued");
    await follow(job);
  } catch (e) {
    if (e instanceof UiError) showError(e.code, e.message);
    else showError("CLIENT_ERROR", String(e));
  }
}

$("photo").addEventListener("error", () => {
  if ($("photo").getAttribute("src")) $("photo-note").textContent = "The photo could not be loaded from the CDN.";
});
$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = ""; // so that choosing the same photo again is a new change
  if (file) analyze(file);
});
