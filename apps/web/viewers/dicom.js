// Loupe's DICOM viewer: Cornerstone3D over a case's frames, read through Loupe's access-checked routes
// (apps/web/stack.py). Bundled by `make vendor` (esbuild) into vendor/loupe-dicom/loupe-dicom.js.
//
// Each .loupe-stack element (core.plugins.frame_stack_element) becomes a viewer: mouse wheel scrolls the
// series, the left button does the chosen tool (window/level by default), the middle button pans, the right
// one zooms; cine plays at the file's frame rate or a chosen one; lengths in mm from Pixel Spacing and
// rectangle ROIs with their mean (HU for CT); the frame's de-identified header in a tag browser.
// Everything from a file or a server is shown with textContent, never as HTML.

import {
  RenderingEngine, Enums, cache, eventTarget, imageLoader, init as initCore, metaData, utilities,
} from "@cornerstonejs/core";
import {
  Enums as ToolEnums, LengthTool, PanTool, RectangleROITool, StackScrollTool, ToolGroupManager,
  WindowLevelTool, ZoomTool, addTool, annotation, init as initTools, utilities as toolUtilities,
} from "@cornerstonejs/tools";

const SCHEME = "loupe";
const FRAME_HEADER = "X-Loupe-Frame";
const TOOLS = [
  ["Window/level", WindowLevelTool.toolName],
  ["Pan", PanTool.toolName],
  ["Zoom", ZoomTool.toolName],
  ["Length (mm)", LengthTool.toolName],
  ["ROI mean", RectangleROITool.toolName],
];
const facts = new Map(); // imageId -> what the server said of that frame
const firstFacts = new Map(); // stack base -> the first frame's facts (for frames not loaded yet)
const modalities = new Map(); // stack base -> modality
let started = null;
let viewers = 0;

// -- loading frames: at most two requests at once (one job per user runs on the server), the frame on
// screen ahead of prefetching, a busy answer (429) asked again
const waiting = [];
let running = 0;

function queued(url, urgent) {
  return new Promise((resolve, reject) => {
    (urgent ? waiting.unshift.bind(waiting) : waiting.push.bind(waiting))({ url, resolve, reject });
    pump();
  });
}

function pump() {
  while (running < 2 && waiting.length) {
    const job = waiting.shift();
    running += 1;
    fetched(job.url).then(job.resolve, job.reject).finally(() => { running -= 1; pump(); });
  }
}

async function fetched(url, tries = 30) {
  for (;;) {
    const answer = await fetch(url, { credentials: "same-origin" });
    if (answer.status === 429 && tries-- > 0) {
      await new Promise((wake) => setTimeout(wake, 250));
      continue;
    }
    if (!answer.ok) {
      const said = await answer.json().catch(() => ({}));
      throw new Error(said.detail || `the server answered ${answer.status}`);
    }
    return answer;
  }
}

const baseOf = (imageId) => imageId.slice(SCHEME.length + 1).replace(/\/\d+\.bin$/, "");

function loadFrame(imageId, options = {}) {
  const promise = queued(imageId.slice(SCHEME.length + 1), !options.loupePrefetch).then(async (answer) => {
    const said = JSON.parse(answer.headers.get(FRAME_HEADER));
    const buffer = await answer.arrayBuffer();
    facts.set(imageId, said);
    if (!firstFacts.has(baseOf(imageId))) firstFacts.set(baseOf(imageId), said);
    return frameImage(imageId, said, buffer);
  });
  return { promise };
}

function frameImage(imageId, said, buffer) {
  const Typed = { int16: Int16Array, float32: Float32Array, uint8: Uint8Array }[said.dtype];
  const scalarData = new Typed(buffer);
  const { rows, columns, samples } = said;
  const voxelManager = utilities.VoxelManager.createImageVoxelManager({
    height: rows, width: columns, numberOfComponents: samples, scalarData, id: imageId,
  });
  let low = Infinity;
  let high = -Infinity;
  for (let i = 0; i < scalarData.length; i += 1) {
    const value = scalarData[i];
    if (value < low) low = value;
    if (value > high) high = value;
  }
  const [center, width] = said.window || [(low + high) / 2, Math.max(high - low, 1)];
  const [rowSpacing, columnSpacing] = said.spacing || [1, 1];
  return {
    imageId, rows, columns, height: rows, width: columns, color: samples === 3, rgba: false,
    numberOfComponents: samples, slope: 1, intercept: 0, windowCenter: center, windowWidth: width,
    minPixelValue: low, maxPixelValue: high, rowPixelSpacing: rowSpacing, columnPixelSpacing: columnSpacing,
    invert: Boolean(said.invert), sizeInBytes: buffer.byteLength, getCanvas: undefined, voxelManager,
    getPixelData: () => voxelManager.getScalarData(),
  };
}

// What Cornerstone asks of each frame: placement in mm (lengths, ROI areas), the modality (HU for CT), the
// file's window. Values arrive as modality values, so the rescale is 1/0.
function describe(type, imageId) {
  if (typeof imageId !== "string" || !imageId.startsWith(`${SCHEME}:`)) return undefined;
  const said = facts.get(imageId) || firstFacts.get(baseOf(imageId));
  if (type === "generalSeriesModule") return { modality: modalities.get(baseOf(imageId)) || "OT" };
  if (!said) return undefined;
  const index = Number(imageId.match(/(\d+)\.bin$/)[1]);
  if (type === "imagePixelModule") {
    const bits = said.dtype === "float32" ? 32 : said.dtype === "int16" ? 16 : 8;
    return {
      samplesPerPixel: said.samples, rows: said.rows, columns: said.columns,
      photometricInterpretation: said.samples === 3 ? "RGB" : said.invert ? "MONOCHROME1" : "MONOCHROME2",
      bitsAllocated: bits, bitsStored: bits, highBit: bits - 1, pixelRepresentation: said.dtype === "int16" ? 1 : 0,
    };
  }
  if (type === "imagePlaneModule") {
    const orientation = said.orientation || [1, 0, 0, 0, 1, 0];
    const spacing = said.spacing;
    return {
      rows: said.rows, columns: said.columns, frameOfReferenceUID: baseOf(imageId),
      imageOrientationPatient: orientation, rowCosines: orientation.slice(0, 3), columnCosines: orientation.slice(3),
      imagePositionPatient: (facts.has(imageId) && said.position) || [0, 0, index],
      pixelSpacing: spacing, rowPixelSpacing: spacing ? spacing[0] : null, columnPixelSpacing: spacing ? spacing[1] : null,
      usingDefaultValues: !spacing,
    };
  }
  if (type === "voiLutModule" && said.window) return { windowCenter: [said.window[0]], windowWidth: [said.window[1]] };
  if (type === "modalityLutModule") return { rescaleSlope: 1, rescaleIntercept: 0 };
  return undefined;
}

function start() {
  started ||= (async () => {
    await initCore();
    initTools();
    [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, RectangleROITool].forEach(addTool);
    imageLoader.registerImageLoader(SCHEME, loadFrame);
    metaData.addProvider(describe, 10000);
  })();
  return started;
}

// -- the page: small DOM helpers, text only
function made(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, value));
  if (text) node.textContent = text;
  return node;
}

function windowChoices(info) {
  const choices = [["as stored", info.window]];
  Object.entries(info.presets || {}).forEach(([name, window]) => choices.push([name, window]));
  choices.push(["full range", null]);
  return choices;
}

function measurementText(entry) {
  const stats = Object.values(entry.data.cachedStats || {})[0];
  if (!stats) return null;
  const tool = entry.metadata.toolName;
  if (tool === LengthTool.toolName && Number.isFinite(stats.length)) {
    return `Length ${stats.length.toFixed(1)} ${stats.unit || "px"}`;
  }
  if (tool === RectangleROITool.toolName && Number.isFinite(stats.mean)) {
    const unit = stats.modalityUnit ? ` ${stats.modalityUnit}` : "";
    return `ROI mean ${stats.mean.toFixed(1)}${unit} (SD ${stats.stdDev.toFixed(1)}), area ${stats.area.toFixed(1)} ${stats.areaUnit}`;
  }
  return null;
}

async function mount(element) {
  element.dataset.ready = "1";
  const base = element.dataset.stack;
  const status = made("p", { class: "loupe-stack-status", role: "status" }, "Opening the images…");
  element.replaceChildren(status);
  let info;
  try {
    [info] = await Promise.all([fetched(`${base}/stack.json`).then((answer) => answer.json()), start()]);
  } catch (problem) {
    status.textContent = `The image viewer could not open: ${problem.message}`;
    return;
  }
  if (!info.count) {
    status.textContent = "No DICOM image in this case.";
    return;
  }
  modalities.set(base, info.modality);
  viewers += 1;
  const id = `loupe-stack-${viewers}`;

  const toolbar = made("div", { class: "loupe-stack-tools", role: "toolbar" });
  const toolButtons = TOOLS.map(([label, name]) => {
    const button = made("button", { type: "button", "data-tool": name }, label);
    toolbar.append(button);
    return button;
  });
  const windowSelect = made("select", { "aria-label": "Window preset", class: "loupe-stack-window" });
  windowChoices(info).forEach(([name], n) => windowSelect.append(made("option", { value: String(n) }, name)));
  const play = made("button", { type: "button", class: "loupe-stack-play" }, "▶ Play");
  const fps = made("input", { type: "number", min: "1", max: "120", step: "1", class: "loupe-stack-fps",
    "aria-label": "Frames per second", value: String(Math.round(info.fps || 10)) });
  const reset = made("button", { type: "button" }, "Reset view");
  const tagsButton = made("button", { type: "button", class: "loupe-stack-tags-button" }, "DICOM tags");
  toolbar.append(made("label", {}, "Window "), windowSelect, play, fps, made("span", {}, " fps "), reset, tagsButton);
  if (info.count < 2) [play, fps].forEach((node) => { node.disabled = true; });

  const screen = made("div", { class: "loupe-stack-screen", id });
  screen.addEventListener("contextmenu", (event) => event.preventDefault());
  const measurements = made("ul", { class: "loupe-stack-measurements", "aria-label": "Measurements" });
  const tags = made("div", { class: "loupe-stack-tags" });
  tags.hidden = true;
  const hint = made("p", { class: "hint" },
    "Wheel: next/previous image · left drag: the chosen tool · middle drag: pan · right drag: zoom.");
  element.replaceChildren(toolbar, screen, status, measurements, hint, tags);

  const engine = new RenderingEngine(id);
  engine.enableElement({ viewportId: id, type: Enums.ViewportType.STACK, element: screen });
  const viewport = engine.getViewport(id);
  const group = ToolGroupManager.createToolGroup(id);
  [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, LengthTool, RectangleROITool]
    .forEach((tool) => group.addTool(tool.toolName));
  group.addViewport(id, id);
  const { MouseBindings } = ToolEnums;
  group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });

  let current = WindowLevelTool.toolName;
  const choose = (name) => {
    group.setToolPassive(current);
    if (current === PanTool.toolName) group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    if (current === ZoomTool.toolName) group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    const extra = name === PanTool.toolName ? [{ mouseButton: MouseBindings.Auxiliary }]
      : name === ZoomTool.toolName ? [{ mouseButton: MouseBindings.Secondary }] : [];
    group.setToolActive(name, { bindings: [{ mouseButton: MouseBindings.Primary }, ...extra] });
    current = name;
    toolButtons.forEach((button) => button.setAttribute("aria-pressed", String(button.dataset.tool === name)));
  };
  toolButtons.forEach((button) => button.addEventListener("click", () => choose(button.dataset.tool)));
  group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  toolButtons.forEach((button) => button.setAttribute("aria-pressed", String(button.dataset.tool === current)));

  const imageIds = Array.from({ length: info.count }, (_, n) => `${SCHEME}:${base}/${n}.bin`);
  const describeView = () => {
    const index = viewport.getCurrentImageIdIndex();
    const { voiRange } = viewport.getProperties();
    const shown = voiRange ? utilities.windowLevel.toWindowLevel(voiRange.lower, voiRange.upper) : null;
    status.textContent = `Image ${index + 1} of ${info.count}` + (info.modality ? ` · ${info.modality}` : "")
      + (shown ? ` · window ${Math.round(shown.windowCenter)}/${Math.round(shown.windowWidth)}` : "");
  };
  const prefetch = () => {
    const index = viewport.getCurrentImageIdIndex();
    for (let n = 1; n <= Math.min(info.prefetch || 0, info.count - 1); n += 1) {  // none from a PACS
      const ahead = imageIds[(index + n) % info.count];
      if (!cache.getImageLoadObject(ahead)) {
        imageLoader.loadAndCacheImage(ahead, { loupePrefetch: true }).catch(() => {});
      }
    }
  };
  const listMeasurements = () => {
    const found = (annotation.state.getAllAnnotations() || [])
      .filter((entry) => entry.metadata && entry.metadata.referencedImageId?.startsWith(`${SCHEME}:${base}/`))
      .map(measurementText).filter(Boolean);
    measurements.replaceChildren(...found.map((text) => made("li", {}, text)));
  };
  screen.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => { describeView(); prefetch(); });
  screen.addEventListener(Enums.Events.VOI_MODIFIED, describeView);
  // the figures are final once the tool has rendered the finished annotation: listed then, once per frame
  let listing = false;
  const relist = () => {
    if (listing) return;
    listing = true;
    requestAnimationFrame(() => { listing = false; listMeasurements(); });
  };
  [ToolEnums.Events.ANNOTATION_COMPLETED, ToolEnums.Events.ANNOTATION_MODIFIED, ToolEnums.Events.ANNOTATION_REMOVED,
    ToolEnums.Events.ANNOTATION_RENDERED].forEach((name) => eventTarget.addEventListener(name, relist));

  windowSelect.addEventListener("change", () => {
    const [, window] = windowChoices(info)[Number(windowSelect.value)];
    if (window) {
      viewport.setProperties({ voiRange: utilities.windowLevel.toLowHighRange(window[1], window[0]) });
    } else {
      const image = cache.getImage(viewport.getCurrentImageId());
      viewport.setProperties({ voiRange: { lower: image.minPixelValue, upper: Math.max(image.maxPixelValue, image.minPixelValue + 1) } });
    }
    viewport.render();
    describeView();
  });

  let playing = false;
  const stop = () => {
    toolUtilities.cine.stopClip(screen);
    playing = false;
    play.textContent = "▶ Play";
  };
  const go = () => {
    toolUtilities.cine.playClip(screen, { framesPerSecond: Math.max(1, Math.min(120, Number(fps.value) || 10)), loop: true });
    playing = true;
    play.textContent = "⏸ Pause";
  };
  play.addEventListener("click", () => (playing ? stop() : go()));
  fps.addEventListener("change", () => { if (playing) { stop(); go(); } });
  reset.addEventListener("click", () => { viewport.resetCamera(); viewport.resetProperties(); viewport.render(); describeView(); });

  const showTags = async () => {
    const index = viewport.getCurrentImageIdIndex();
    tags.replaceChildren(made("p", {}, `Reading the header of image ${index + 1}…`));
    try {
      const said = await (await fetched(`${base}/${index}/tags.json`)).json();
      const table = made("table", { class: "loupe-stack-tag-table" });
      const head = made("tr");
      ["Tag", "Name", "VR", "Value"].forEach((name) => head.append(made("th", {}, name)));
      table.append(head);
      said.rows.forEach(([depth, tag, keyword, vr, value]) => {
        const row = made("tr");
        [`${"› ".repeat(depth)}${tag}`, keyword, vr, value].forEach((text) => row.append(made("td", {}, String(text))));
        table.append(row);
      });
      const filter = made("input", { type: "search", placeholder: "Filter tags", "aria-label": "Filter tags" });
      filter.addEventListener("input", () => {
        const wanted = filter.value.toLowerCase();
        [...table.rows].slice(1).forEach((row) => { row.hidden = !row.textContent.toLowerCase().includes(wanted); });
      });
      tags.replaceChildren(made("p", {}, `Header of image ${index + 1}, de-identified as stored`
        + (said.cut ? " (the first 2,000 elements)" : "")), filter, table);
    } catch (problem) {
      tags.replaceChildren(made("p", {}, `The header could not be read: ${problem.message}`));
    }
  };
  tagsButton.addEventListener("click", () => {
    tags.hidden = !tags.hidden;
    if (!tags.hidden) showTags();
  });
  screen.addEventListener(Enums.Events.STACK_NEW_IMAGE, () => { if (!tags.hidden) showTags(); });

  try {
    await viewport.setStack(imageIds, 0);
    viewport.render();
    requestAnimationFrame(() => { element.dataset.firstDrawn = String(performance.now()); }); // loupe bench viewer
    describeView();
    prefetch();
  } catch (problem) {
    status.textContent = `The first image could not be shown: ${problem.message || problem}`;
    return;
  }
  // what the tests and a reader's scripts may ask: the view, and image pixels to screen pixels
  element.loupeViewer = {
    viewport, imageIds, info, choose, play: go, stop,
    annotations: () => annotation.state.getAllAnnotations().map((entry) => ({
      tool: entry.metadata.toolName, points: entry.data.handles.points,
      image: entry.data.handles.points.map((point) => utilities.worldToImageCoords(viewport.getCurrentImageId(), point)),
      stats: entry.data.cachedStats,
    })),
    toScreen: (column, row) => {
      const world = utilities.imageToWorldCoords(viewport.getCurrentImageId(), [column, row]);
      return viewport.worldToCanvas(world);
    },
  };
  element.dataset.shown = "1";
}

// The bundle is loaded when the first viewer element appears: mount what is there now, and what comes later.
start(); // Cornerstone set up as soon as the bundle is loaded (often before any series is opened)
const mountAll = () => document.querySelectorAll(".loupe-stack:not([data-ready])").forEach(mount);
new MutationObserver(mountAll).observe(document.documentElement, { childList: true, subtree: true });
mountAll();
