/// <reference lib="dom" />
/// <reference types="@webgpu/types" />
/**
 * The browser demo's page script: acquires the WebGPU adapter the browser gives, fetches
 * Fashion-MNIST from the demo server (or takes a folder of your own images, one subfolder per
 * class), trains the chosen model with the package's own modules and draws the loss and accuracy
 * curves and a grid of test predictions.
 *
 * Progress is exposed as `window.__demo` ({@linkcode DemoStatus}) for the end-to-end test.
 * Bundled for the browser by `deno task demo` (`cli/demo.ts`).
 *
 * @module
 */

import { getGpu, type Gpu, NoAdapterError } from "../gpu/mod.ts";
import {
  checkConfig,
  CLASS_NAMES,
  DEMO_MODELS,
  type DemoConfig,
  type DemoModel,
  DemoSession,
  type DemoState,
  type DemoStatus,
  type FashionMnist,
  fetchFashionMnist,
  PRESETS,
} from "./session.ts";
import { imageFolderFromFiles } from "./folder.ts";

declare global {
  interface Window {
    /** The demo's progress, read by the end-to-end test. */
    __demo: DemoStatus;
  }
}

/** Test images shown in the grid (the first 24, or fewer). */
let gridIndices = Array.from({ length: 24 }, (_, i) => i);
/** The class names of the data trained on. */
let classNames: readonly string[] = CLASS_NAMES;

const status: DemoStatus = {
  state: "starting",
  message: "",
  adapter: null,
  adapterInfo: null,
  config: null,
  steps: 0,
  lossSteps: [],
  losses: [],
  trainAcc: [],
  evals: [],
  testAcc: null,
  examplesPerSec: 0,
  meanExamplesPerSec: 0,
  elapsedSeconds: 0,
  predictions: [],
};
globalThis.window.__demo = status;

function $<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`demo page: #${id} is missing`);
  return el as T;
}

const ui = {
  notice: $<HTMLDivElement>("notice"),
  form: $<HTMLFormElement>("controls"),
  model: $<HTMLSelectElement>("model"),
  lr: $<HTMLInputElement>("lr"),
  batchSize: $<HTMLInputElement>("batchSize"),
  resize: $<HTMLInputElement>("resize"),
  steps: $<HTMLInputElement>("steps"),
  evalEvery: $<HTMLInputElement>("evalEvery"),
  folder: $<HTMLInputElement>("folder"),
  start: $<HTMLButtonElement>("start"),
  stop: $<HTMLButtonElement>("stop"),
  adapter: $<HTMLElement>("adapter"),
  state: $<HTMLElement>("state"),
  step: $<HTMLElement>("step"),
  epoch: $<HTMLElement>("epoch"),
  loss: $<HTMLElement>("loss"),
  trainAcc: $<HTMLElement>("trainAcc"),
  testAcc: $<HTMLElement>("testAcc"),
  speed: $<HTMLElement>("speed"),
  elapsed: $<HTMLElement>("elapsed"),
  chart: $<HTMLCanvasElement>("chart"),
  grid: $<HTMLDivElement>("grid"),
};

function setState(state: DemoState, message?: string, kind: "info" | "error" = "info"): void {
  status.state = state;
  ui.state.textContent = state;
  if (message !== undefined) {
    status.message = message;
    ui.notice.textContent = message;
    ui.notice.className = kind;
    ui.notice.hidden = message === "";
  }
  const busy = state === "training" || state === "loading" || state === "starting";
  const usable = state !== "no-webgpu" && !(state === "error" && gpu === null);
  ui.start.disabled = busy || !usable || data === null;
  ui.stop.disabled = state !== "training";
  for (const el of [ui.model, ui.lr, ui.batchSize, ui.resize, ui.steps, ui.evalEvery]) {
    el.disabled = state === "training";
  }
  ui.folder.disabled = busy || !usable;
}

// ------------------------------------------------------------------ configuration ----

const query = new URLSearchParams(location.search);
/** Extra settings that only the query sets. */
const hidden = {
  evalLimit: query.get("evalLimit"),
  testLimit: query.get("testLimit"),
  seed: query.get("seed"),
};

function fillForm(model: DemoModel, overrides: URLSearchParams | null): void {
  const p = PRESETS[model];
  ui.model.value = model;
  for (const k of ["lr", "batchSize", "resize", "steps", "evalEvery"] as const) {
    ui[k].value = overrides?.get(k) ?? String(p[k]);
  }
}

function readConfig(): DemoConfig {
  const model = ui.model.value as DemoModel;
  const p = PRESETS[model];
  const num = (
    s: string | null,
    fallback: number,
  ): number => (s === null || s === "" ? fallback : Number(s));
  return checkConfig({
    model,
    lr: num(ui.lr.value, p.lr),
    batchSize: num(ui.batchSize.value, p.batchSize),
    resize: num(ui.resize.value, p.resize),
    steps: num(ui.steps.value, p.steps),
    evalEvery: num(ui.evalEvery.value, p.evalEvery),
    evalLimit: num(hidden.evalLimit, p.evalLimit),
    testLimit: num(hidden.testLimit, p.testLimit),
    seed: num(hidden.seed, p.seed),
  });
}

{
  const m = query.get("model") ?? "lenet";
  fillForm(DEMO_MODELS.includes(m as DemoModel) ? m as DemoModel : "lenet", query);
}
ui.model.addEventListener("change", () => fillForm(ui.model.value as DemoModel, null));

// ------------------------------------------------------------------ drawing ----

const COLORS = {
  loss: "#2f6fde",
  train: "#e08a1e",
  test: "#1c9a5b",
  grid: "#e3e7ee",
  text: "#667085",
};

/** An exponential moving average, bias-corrected at the start. */
function smooth(v: number[], beta = 0.9): number[] {
  let m = 0;
  return v.map((x, i) => {
    m = beta * m + (1 - beta) * x;
    return m / (1 - beta ** (i + 1));
  });
}

/** Draws the loss (left axis) and the accuracies (right axis, 0..1) against the step. */
function drawChart(): void {
  const canvas = ui.chart;
  const dpr = globalThis.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d")!;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const pad = { l: 48, r: 48, t: 10, b: 34 };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  const xMax = Math.max(status.config?.steps ?? 1, status.steps, 1);
  const lossMax = Math.max(2.5, ...status.losses.filter(Number.isFinite)) * 1.05;
  const X = (step: number) => pad.l + (step / xMax) * pw;
  const YL = (v: number) => pad.t + ph - (Math.min(v, lossMax) / lossMax) * ph;
  const YA = (v: number) => pad.t + ph - v * ph;
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  // Grid and axes' labels.
  g.strokeStyle = COLORS.grid;
  g.fillStyle = COLORS.text;
  for (let i = 0; i <= 5; i++) {
    const y = pad.t + (ph * i) / 5;
    g.beginPath();
    g.moveTo(pad.l, y);
    g.lineTo(pad.l + pw, y);
    g.stroke();
    g.textAlign = "right";
    g.fillText((lossMax * (1 - i / 5)).toFixed(2), pad.l - 6, y + 4);
    g.textAlign = "left";
    g.fillText((1 - i / 5).toFixed(1), pad.l + pw + 6, y + 4);
  }
  g.textAlign = "center";
  // Step ticks at a round spacing (1, 2 or 5 times a power of ten), about six of them.
  const raw = xMax / 6;
  const pow = 10 ** Math.floor(Math.log10(Math.max(raw, 1)));
  const tick = [1, 2, 5, 10].map((m) => m * pow).find((t) => t >= raw) ?? 10 * pow;
  for (let s = 0; s <= xMax; s += Math.max(1, tick)) g.fillText(String(s), X(s), h - 18);
  g.fillText("step", pad.l + pw / 2, h - 3);
  const line = (
    xs: number[],
    ys: number[],
    y: (v: number) => number,
    color: string,
    width = 2,
    alpha = 1,
  ) => {
    if (xs.length === 0) return;
    g.globalAlpha = alpha;
    g.strokeStyle = color;
    g.fillStyle = color;
    g.lineWidth = width;
    g.beginPath();
    xs.forEach((x, i) => (i === 0 ? g.moveTo(X(x), y(ys[i])) : g.lineTo(X(x), y(ys[i]))));
    g.stroke();
    if (xs.length < 40 && alpha === 1) {
      xs.forEach((x, i) => {
        g.beginPath();
        g.arc(X(x), y(ys[i]), 2.5, 0, 2 * Math.PI);
        g.fill();
      });
    }
    g.globalAlpha = 1;
  };
  const noisy = status.lossSteps.length >= 40;
  if (noisy) {
    line(status.lossSteps, status.losses, YL, COLORS.loss, 1, 0.3);
    line(status.lossSteps, status.trainAcc, YA, COLORS.train, 1, 0.3);
  }
  line(status.lossSteps, noisy ? smooth(status.losses) : status.losses, YL, COLORS.loss);
  line(status.lossSteps, noisy ? smooth(status.trainAcc) : status.trainAcc, YA, COLORS.train);
  line(status.evals.map((e) => e.step), status.evals.map((e) => e.testAcc), YA, COLORS.test);
}

const cells: { el: HTMLDivElement; pred: HTMLSpanElement }[] = [];

/**
 * Builds the grid of test images (once the data is here): Fashion-MNIST dark on white as the
 * garments are photographed, your own images as they are (gray or RGB).
 */
function buildGrid(d: FashionMnist): void {
  ui.grid.replaceChildren();
  cells.length = 0;
  status.predictions = [];
  classNames = d.classes ?? CLASS_NAMES;
  gridIndices = Array.from({ length: Math.min(24, d.test.count) }, (_, i) => i);
  const { width: w, height: h, channels } = d.test;
  const invert = d.name === undefined;
  const plane = w * h;
  for (const index of gridIndices) {
    const label = d.test.labels[index];
    const cell = document.createElement("div");
    cell.className = "cell";
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const img = new ImageData(w, h);
    const px = d.test.images.subarray(index * channels * plane, (index + 1) * channels * plane);
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) {
        const v = px[(channels === 3 ? c * plane : 0) + i];
        img.data[4 * i + c] = invert ? 255 - v : v;
      }
      img.data[4 * i + 3] = 255;
    }
    canvas.getContext("2d")!.putImageData(img, 0, 0);
    const pred = document.createElement("span");
    pred.className = "pred";
    pred.textContent = "?";
    const truth = document.createElement("div");
    truth.className = "truth";
    truth.textContent = `(${classNames[label]})`;
    const top = document.createElement("div");
    top.append(pred);
    cell.append(canvas, top, truth);
    ui.grid.append(cell);
    cells.push({ el: cell, pred });
    status.predictions.push({ index, label, pred: -1 });
  }
}

function showPredictions(preds: Uint8Array): void {
  preds.forEach((p, i) => {
    const entry = status.predictions[i];
    entry.pred = p;
    cells[i].pred.textContent = classNames[p];
    cells[i].el.className = `cell ${p === entry.label ? "right" : "wrong"}`;
  });
}

function pct(v: number | null | undefined): string {
  return v === null || v === undefined ? "—" : `${(100 * v).toFixed(1)} %`;
}

// ------------------------------------------------------------------ running ----

let gpu: Gpu | null = null;
let data: FashionMnist | null = null;
let session: DemoSession | null = null;
let stopRequested = false;

function describeError(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

async function train(): Promise<void> {
  if (!gpu || !data) return;
  let config: DemoConfig;
  try {
    config = readConfig();
  } catch (err) {
    setState(status.state, describeError(err), "error");
    return;
  }
  session?.dispose();
  session = null;
  Object.assign(status, {
    config,
    steps: 0,
    lossSteps: [],
    losses: [],
    trainAcc: [],
    evals: [],
    testAcc: null,
    examplesPerSec: 0,
    meanExamplesPerSec: 0,
    elapsedSeconds: 0,
  });
  for (const el of [ui.step, ui.epoch, ui.loss, ui.trainAcc, ui.testAcc, ui.speed]) {
    el.textContent = "—";
  }
  stopRequested = false;
  setState(
    "training",
    `Training ${config.model} on ${data.name ?? "Fashion-MNIST"} on ${gpu.description}…`,
  );
  drawChart();
  const t0 = performance.now();
  const tick = () => {
    status.elapsedSeconds = (performance.now() - t0) / 1000;
    ui.elapsed.textContent = `${status.elapsedSeconds.toFixed(1)} s`;
  };
  let s: DemoSession;
  try {
    s = new DemoSession(gpu, data, config);
  } catch (err) {
    setState("ready", describeError(err), "error");
    return;
  }
  session = s;
  const predict = async () => showPredictions(await s.predict(gridIndices));
  try {
    await s.run({
      onChunk: (r) => {
        status.steps = r.step;
        status.lossSteps.push(r.step);
        status.losses.push(r.loss);
        status.trainAcc.push(r.trainAcc);
        status.examplesPerSec = r.examplesPerSec;
        status.meanExamplesPerSec = r.meanExamplesPerSec;
        ui.step.textContent = `${r.step} / ${config.steps}`;
        ui.epoch.textContent = r.epoch.toFixed(2);
        ui.loss.textContent = r.loss.toFixed(4);
        ui.trainAcc.textContent = pct(r.trainAcc);
        ui.speed.textContent = `${r.examplesPerSec.toFixed(0)} (mean ${
          r.meanExamplesPerSec.toFixed(0)
        })`;
        tick();
        drawChart();
      },
      onEval: (e) => {
        status.evals.push(e);
        status.testAcc = e.testAcc;
        ui.testAcc.textContent = `${pct(e.testAcc)} (${e.images} images, step ${e.step})`;
        tick();
        drawChart();
      },
      shouldStop: () => stopRequested,
    });
    await predict();
    tick();
    const stopped = stopRequested;
    setState(
      stopped ? "stopped" : "done",
      `${stopped ? "Stopped" : "Done"}: ${config.model}, ${status.steps} steps in ` +
        `${status.elapsedSeconds.toFixed(1)} s, test accuracy ${pct(status.testAcc)}.`,
    );
  } catch (err) {
    console.error(err);
    const lost = /instance dropped|instance reference|device.*lost|lost.*device/i.test(String(err));
    setState(
      "error",
      `Training failed: ${describeError(err)}` +
        (lost
          ? ". The browser's GPU process crashed or lost the device (a kernel may have run too " +
            "long for it); reload the page to try again, e.g. with a smaller batch."
          : ""),
      "error",
    );
  }
}

ui.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  void train();
});
ui.stop.addEventListener("click", () => {
  stopRequested = true;
  ui.stop.disabled = true;
});
addEventListener("resize", () => drawChart());
ui.folder.addEventListener("change", () => void loadFolder());

/** Loads the folder of images the user chose as the data to train on. */
async function loadFolder(): Promise<void> {
  const files = [...(ui.folder.files ?? [])];
  if (files.length === 0 || status.state === "training") return;
  const previous = data;
  data = null;
  setState("loading", `Reading ${files.length} files…`);
  try {
    const d = await imageFolderFromFiles(files);
    data = d;
    buildGrid(d);
    setState(
      "ready",
      `Ready: your folder ${d.name}, ${d.classes.length} classes (${d.classes.join(", ")}), ` +
        `${d.train.count} training and ${d.test.count} test images stored at ` +
        `${d.train.channels}×${d.train.height}×${d.train.width}. Press Train.`,
    );
  } catch (err) {
    data = previous;
    setState("ready", `Could not use that folder: ${describeError(err)}`, "error");
  }
}

async function init(): Promise<void> {
  setState("starting", "Requesting a WebGPU adapter…");
  drawChart();
  try {
    gpu = await getGpu();
  } catch (err) {
    if (err instanceof NoAdapterError) {
      ui.adapter.textContent = "none";
      const why = "gpu" in navigator
        ? "navigator.gpu.requestAdapter() gave no adapter"
        : "navigator.gpu is undefined: WebGPU is off, or the page is not a secure context";
      setState(
        "no-webgpu",
        `No WebGPU adapter: this browser does not give the page WebGPU (${why}), so the demo ` +
          "cannot train. Use a browser with WebGPU enabled, e.g. Chrome or Edge 113+ on a " +
          "machine with a GPU; on Linux start Chromium with --enable-unsafe-webgpu (without a GPU " +
          "add --enable-features=Vulkan --use-vulkan=swiftshader for its software adapter).",
        "error",
      );
      console.error(err);
    } else {
      setState("error", `Could not start WebGPU: ${describeError(err)}`, "error");
    }
    return;
  }
  const info = gpu.adapter.info;
  status.adapter = gpu.description;
  status.adapterInfo = {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    isFallbackAdapter:
      (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter ??
        null,
  };
  ui.adapter.textContent = `${gpu.description}${gpu.isCpu ? " (software / CPU adapter)" : ""}`;
  setState("loading", "Fetching Fashion-MNIST…");
  try {
    data = await fetchFashionMnist(new URL(".", location.href), (what) => {
      ui.notice.textContent = `Fashion-MNIST: ${what}…`;
    });
  } catch (err) {
    setState("error", `Could not load Fashion-MNIST: ${describeError(err)}`, "error");
    return;
  }
  buildGrid(data);
  setState(
    "ready",
    `Ready: ${data.train.count} training and ${data.test.count} test images on ${gpu.description}. ` +
      "Pick a model and press Train.",
  );
  if (query.get("autostart") === "1") await train();
}

void init();
