// The HIKARI page: pick a picture, POST /v1/cascade, show group → diagnosis (bars) → references → caption(s).
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;
let picture = null;

function headers() {
  const key = $("key").value || localStorage.getItem("hikari-key") || "";
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function option(select, value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  select.appendChild(o);
}

async function loadInfo() {
  const response = await fetch("/v1/info");
  info = await response.json();
  for (const name of info.stage3) {
    option($("stage3a"), name, name);
    option($("stage3b"), name, name);
  }
  if (info.stage3.length > 1) $("stage3b").value = info.stage3[1];
  else $("compare").disabled = true;
  const ks = info.references ? [0, 1, 2, 3, 5] : [0];
  for (const k of ks) option($("k"), k, k === 0 ? "none" : `${k}`);
  $("k").value = info.k_default;
  $("key-label").hidden = !info.api_key;
  if (info.api_key && !($("key").value || localStorage.getItem("hikari-key"))) askForKey(false);
  $("models").textContent = `Stage 1: ${info.stage1} · Stage 2: ${info.stage2} · Stage 3: ${info.stage3.join(", ")}` +
    (info.references ? " · reference index loaded" : " · no reference index");
}

function askForKey(refused) {
  document.querySelector("#input details").open = true;
  $("key-label").hidden = false;
  $("key").focus();
  setStatus(refused ? "The API key was refused: enter the key this server was started with (Options)."
    : "This server needs an API key: enter it under Options.", refused);
}

// Thumbnails come from the API too, so they need the key: fetched, then shown from a blob URL.
async function thumbnail(img, url) {
  try {
    const response = await fetch(url, { headers: headers() });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    img.src = URL.createObjectURL(await response.blob());
  } catch (err) {
    img.alt = `thumbnail unavailable (${err.message})`;
    img.classList.add("missing");
  }
}

function choose(file) {
  if (!file || !file.type.startsWith("image/")) {
    setStatus("That is not a picture: choose a PNG or JPEG file.", true);
    return;
  }
  picture = file;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("drop-text").hidden = true;
  $("run").disabled = false;
  setStatus(`${file.name} (${Math.round(file.size / 1024)} kB) — press Analyse.`);
}

function bars(container, probabilities, best) {
  container.replaceChildren();
  const rows = Object.entries(probabilities).sort((a, b) => b[1] - a[1]).slice(0, 5);
  for (const [name, p] of rows) {
    const row = document.createElement("div");
    row.className = name === best ? "row top" : "row";
    row.dataset.disease = name;
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span>` +
      `<span class="value"></span>`;
    row.querySelector(".name").textContent = name;
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
    container.appendChild(row);
  }
}

function show(result) {
  $("results").hidden = false;
  $("group").textContent = result.group.label;
  $("diagnosis").textContent = result.diagnosis.label;
  if (result.diagnosis.probabilities) {
    bars($("probabilities"), result.diagnosis.probabilities, result.diagnosis.label);
    $("probabilities-note").textContent = "Exact probability of each answer (top 5 of 10 diseases).";
  } else {
    $("probabilities").replaceChildren();
    $("probabilities-note").textContent = "Probabilities need the transformers engine.";
  }
  const gallery = $("references");
  gallery.replaceChildren();
  $("references-card").hidden = false;
  if (result.references.length === 0) {
    $("references-note").textContent = "No reference cases were retrieved for this request.";
  } else {
    const how = { user: "the picture and your text", stage3_caption: "the picture and the model's own caption" };
    $("references-note").textContent = `Most similar training cases, found by ${how[result.query_text_source] ||
      "the picture alone"}; the model saw them with their diagnoses.`;
  }
  for (const ref of result.references) {
    const figure = document.createElement("figure");
    figure.className = "reference";
    figure.innerHTML = `<img alt=""><figcaption><span class="label"></span><span class="score"></span></figcaption>`;
    thumbnail(figure.querySelector("img"), ref.thumbnail_url);
    figure.querySelector("img").alt = `reference case: ${ref.disease}`;
    figure.querySelector(".label").textContent = ref.disease;
    figure.querySelector(".score").textContent = `similarity ${ref.score.toFixed(3)}`;
    gallery.appendChild(figure);
  }
  const captions = $("captions");
  captions.replaceChildren();
  for (const [name, text] of Object.entries(result.captions)) {
    const div = document.createElement("div");
    div.className = "caption";
    div.dataset.model = name;
    div.innerHTML = "<h3></h3><p></p>";
    div.querySelector("h3").textContent = name;
    div.querySelector("p").textContent = text || "(empty caption)";
    captions.appendChild(div);
  }
  $("raw").textContent = JSON.stringify({ raw: result.raw, timings_ms: result.timings_ms, models: result.models,
    query_text: result.query_text }, null, 2);
}

async function run() {
  if (!picture) return;
  const form = new FormData();
  form.append("image", picture);
  form.append("text", $("text").value);
  form.append("k", $("k").value);
  const models = [$("stage3a").value];
  if ($("compare").checked && $("stage3b").value !== models[0]) models.push($("stage3b").value);
  form.append("stage3", models.join(","));
  $("run").disabled = true;
  setStatus("Running the cascade …");
  const start = performance.now();
  try {
    const response = await fetch("/v1/cascade", { method: "POST", body: form, headers: headers() });
    const body = await response.json();
    if (response.status === 401) {
      askForKey(Boolean($("key").value));
      return;
    }
    if (!response.ok) {
      setStatus(body.error ? body.error.message : `error ${response.status}`, true);
      return;
    }
    show(body);
    setStatus(`Done in ${((performance.now() - start) / 1000).toFixed(1)} s.`);
  } catch (err) {
    setStatus(`The server did not answer (${err}).`, true);
  } finally {
    $("run").disabled = false;
  }
}

$("file").addEventListener("change", (e) => choose(e.target.files[0]));
$("run").addEventListener("click", run);
$("compare").addEventListener("change", () => { $("stage3b-label").hidden = !$("compare").checked; });
$("key").addEventListener("change", () => localStorage.setItem("hikari-key", $("key").value));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); choose(e.dataTransfer.files[0]); });
document.addEventListener("paste", (e) => {
  const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
  if (item) choose(item.getAsFile());
});
loadInfo().catch((err) => setStatus(`Cannot reach the server (${err}).`, true));
