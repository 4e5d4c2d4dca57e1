// Loupe's scene map: OpenLayers over a scene's tiles, read through Loupe's access-checked routes
// (apps/web/maps.py). Bundled by `make vendor` (esbuild) into vendor/loupe-map/loupe-map.{js,css}.
//
// Each .loupe-map element (remote-sensing viewer) becomes a map in the scene's own coordinates (its CRS, north
// up; pixels when it has none): pan and zoom to full resolution, a scale bar, any band preset or index with a
// scene-wide percentile stretch, the pointer's pixel and coordinates, a click's band values, and the tiles the
// chosen answer read outlined and numbered. A basemap only where the operator configured one (apps/web/basemap.py):
// the map then drawn in Web Mercator, the scene reprojected onto it (proj4), the scene's opacity adjustable;
// else nothing is fetched from outside Loupe.

import "ol/ol.css";
import Feature from "ol/Feature.js";
import Map from "ol/Map.js";
import View from "ol/View.js";
import Attribution from "ol/control/Attribution.js";
import ScaleLine from "ol/control/ScaleLine.js";
import { defaults as defaultControls } from "ol/control/defaults.js";
import Polygon from "ol/geom/Polygon.js";
import TileLayer from "ol/layer/Tile.js";
import VectorLayer from "ol/layer/Vector.js";
import { addProjection, get as getProjection, transform, transformExtent } from "ol/proj.js";
import Projection from "ol/proj/Projection.js";
import { register } from "ol/proj/proj4.js";
import VectorSource from "ol/source/Vector.js";
import XYZ from "ol/source/XYZ.js";
import { Fill, Stroke, Style, Text } from "ol/style.js";
import TileState from "ol/TileState.js";
import TileGrid from "ol/tilegrid/TileGrid.js";
import proj4 from "proj4";

let maps = 0;

function made(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, value));
  if (text) node.textContent = text;
  return node;
}

function chooser(label, names, className) {
  const select = made("select", { "aria-label": label, class: className });
  names.forEach((name) => select.append(made("option", { value: name }, name)));
  return select;
}

// A Web Mercator view round a scene (its extent there, its width in pixels): the land around it (its size again
// on each side) to pan over, zoom from all of that down to a quarter of a scene pixel.
function mercatorView(sceneExtent, widthPixels) {
  const [x0, y0, x1, y1] = sceneExtent;
  const [w, h] = [x1 - x0, y1 - y0];
  return new View({
    projection: "EPSG:3857", extent: [x0 - w, y0 - h, x1 + w, y1 + h], constrainOnlyCenter: true,
    showFullExtent: true, minResolution: w / widthPixels / 4, maxResolution: (3 * Math.max(w, h)) / 256,
  });
}

// Each band's histogram over the scene (its own value range scaled to the plot's width), and the values the
// stretch shows black and white as dashed lines in the band's colour. Returns whether anything was drawn.
const BAND_COLOURS = ["#d32f2f", "#388e3c", "#1976d2"];
function drawHistogram(canvas, said) {
  const histogram = said.histogram;
  if (said.index || !histogram || !histogram.bands.length) return false;
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  const low = Math.min(...histogram.bands.map((band) => band.low));
  const high = Math.max(...histogram.bands.map((band) => band.high));
  const span = high > low ? high - low : 1;
  const xOf = (value) => ((value - low) / span) * (width - 1);
  const tallest = Math.max(1, ...histogram.bands.flatMap((band) => band.counts));
  histogram.bands.forEach((band, n) => {
    const colour = histogram.bands.length === 1 ? "#424242" : BAND_COLOURS[n % BAND_COLOURS.length];
    const step = (band.high - band.low) / band.counts.length;
    context.strokeStyle = colour;
    context.lineWidth = 1.5;
    context.setLineDash([]);
    context.beginPath();
    band.counts.forEach((count, k) => {
      const x = xOf(band.low + (k + 0.5) * step);
      const y = height - 1 - (Math.sqrt(count) / Math.sqrt(tallest)) * (height - 4); // square root: small peaks show
      if (k) context.lineTo(x, y); else context.moveTo(x, y);
    });
    context.stroke();
    context.setLineDash([3, 3]);
    [said.low[n], said.high[n]].forEach((value) => {
      context.beginPath();
      context.moveTo(xOf(value), 0);
      context.lineTo(xOf(value), height);
      context.stroke();
    });
  });
  canvas.setAttribute("aria-label", `Histogram of ${histogram.bands.length === 1 ? "the band" : "each band"} over the scene, `
    + `values ${number(low)} to ${number(high)}; dashed lines: what the stretch shows black and white`);
  return true;
}

const number = (value) => (Number.isInteger(value) ? String(value) : value.toPrecision(6).replace(/\.?0+$/, ""));

async function mount(element) {
  element.dataset.ready = "1";
  const base = element.dataset.map;
  const status = made("p", { class: "loupe-map-readout", role: "status" }, "Opening the map…");
  element.replaceChildren(status);
  let info;
  try {
    const answer = await fetch(`${base}/info.json`, { credentials: "same-origin" });
    if (!answer.ok) throw new Error(`the server answered ${answer.status}`);
    info = await answer.json();
  } catch (problem) {
    status.textContent = `The map could not be opened: ${problem.message}`;
    return;
  }
  maps += 1;
  const [a, , c, , e, f] = info.transform || [1, 0, 0, 0, -1, 0];
  const square = Math.abs(Math.abs(a) - Math.abs(e)) <= 0.01 * Math.abs(a);
  const geo = Boolean(info.transform) && square;
  const pixel = geo ? Math.abs(a) : 1;
  // map coordinates of a pixel corner: the scene's CRS when it has one (north up), else pixels with y up
  const toX = (col) => (geo ? a * col + c : col);
  const toY = (row) => (geo ? e * row + f : -row);
  const fromMap = ([x, y]) => (geo ? [(x - c) / a, (y - f) / e] : [x, -y]);
  const extent = [toX(0), toY(info.height), toX(info.width), toY(0)];
  const projection = new Projection({ code: `loupe-scene-${maps}`, units: geo ? info.units : "pixels", extent });
  // Over a basemap the map is drawn in Web Mercator, the basemap's own projection, and the scene's tiles are
  // reprojected into it (proj4 knows the scene's CRS); without one, in the scene's CRS itself.
  const basemap = geo && info.basemap && info.proj4 ? info.basemap : null;
  if (basemap) {
    proj4.defs(projection.getCode(), info.proj4);
    addProjection(projection);
    register(proj4);
  }
  const mercator = getProjection("EPSG:3857");
  const toView = (xy) => (basemap ? transform(xy, projection, mercator) : xy);
  const toScene = (xy) => (basemap ? transform(xy, mercator, projection) : xy);
  const shown = basemap ? transformExtent(extent, projection, mercator) : extent; // the scene in the view's terms
  const resolutions = Array.from({ length: info.max_level + 1 }, (_, z) => pixel * 2 ** (info.max_level - z));
  const grid = new TileGrid({ origin: [toX(0), toY(0)], resolutions, tileSize: info.tile, extent });

  const toolbar = made("div", { class: "loupe-map-tools", role: "toolbar" });
  const viewSelect = chooser("Bands shown", info.views, "loupe-map-view");
  const stretchSelect = chooser("Stretch", info.stretches, "loupe-map-stretch");
  toolbar.append(made("label", {}, "Show "), viewSelect, made("label", {}, " stretch "), stretchSelect);
  const target = made("div", { class: "loupe-map-screen" });
  const values = made("p", { class: "loupe-map-values" }, "Click the map for the pixel's band values.");
  element.replaceChildren(toolbar, target, status, values);
  status.textContent = geo ? `Coordinates in ${info.crs}` : "This scene has no coordinates: positions in pixels.";

  const tileUrl = () => {
    const query = `view=${encodeURIComponent(viewSelect.value)}&stretch=${encodeURIComponent(stretchSelect.value)}`;
    return ([z, x, y]) => `${base}/${z}/${x}_${y}.jpg?${query}`;
  };
  // An edge tile comes at its true size (a 276 px scene: 256 and 20 px wide); OpenLayers would stretch it to
  // a whole tile, so it is drawn at its size into a tile-sized canvas, the rest left clear.
  const loadTile = (tile, src) => {
    const image = new Image();
    image.onload = () => {
      if (image.naturalWidth === info.tile && image.naturalHeight === info.tile) return tile.setImage(image);
      const canvas = made("canvas", { width: String(info.tile), height: String(info.tile) });
      canvas.getContext("2d").drawImage(image, 0, 0);
      return tile.setImage(canvas);
    };
    image.onerror = () => tile.setState(TileState.ERROR);
    image.src = src;
  };
  const tiles = new XYZ({ projection, tileGrid: grid, tileUrlFunction: tileUrl(), tileLoadFunction: loadTile,
    crossOrigin: null, transition: 0 });
  const scene = new TileLayer({ source: tiles });
  const layers = [scene];
  if (basemap) {
    const under = new XYZ({ url: basemap.url, attributions: basemap.attribution || undefined, crossOrigin: null });
    layers.unshift(new TileLayer({ source: under, className: "loupe-basemap" }));
    const opacity = made("input", { type: "range", min: "0", max: "100", value: "100", class: "loupe-map-opacity",
      "aria-label": "Scene opacity over the basemap" });
    opacity.addEventListener("input", () => scene.setOpacity(Number(opacity.value) / 100));
    toolbar.append(made("label", {}, " scene opacity "), opacity);
    element.dataset.basemap = "1";
  }
  const answers = new VectorSource();
  const boxes = JSON.parse(element.dataset.boxes || "[]");
  boxes.forEach(([x0, y0, x1, y1], n) => {
    const ring = [[toX(x0), toY(y0)], [toX(x1), toY(y0)], [toX(x1), toY(y1)], [toX(x0), toY(y1)], [toX(x0), toY(y0)]]
      .map(toView);
    const feature = new Feature(new Polygon([ring]));
    feature.setStyle(new Style({
      stroke: new Stroke({ color: "#ffd600", width: 2 }), fill: new Fill({ color: "rgba(255,214,0,0.08)" }),
      text: new Text({ text: String(n + 1), font: "bold 14px sans-serif", fill: new Fill({ color: "#ffd600" }),
        stroke: new Stroke({ color: "#000", width: 3 }) }),
    }));
    answers.addFeature(feature);
  });
  const controls = defaultControls({ attribution: false });
  if (geo) controls.push(new ScaleLine({ units: "metric" }));
  if (basemap && basemap.attribution) controls.push(new Attribution({ collapsible: false }));
  const map = new Map({
    target, controls,
    layers: [...layers, new VectorLayer({ source: answers })],
    view: basemap ? mercatorView(shown, info.width)
      : new View({ projection, resolutions, extent, constrainOnlyCenter: true, showFullExtent: true }),
  });
  map.getView().fit(shown, { size: map.getSize() || [target.clientWidth, target.clientHeight] });

  // what the stretch maps to black and white, band by band, over the whole scene, and the bands' histograms
  const range = made("p", { class: "loupe-map-stretch-range" });
  const plot = made("canvas", { class: "loupe-map-histogram", width: "320", height: "64", role: "img" });
  toolbar.after(range, plot);
  const describeStretch = async () => {
    const query = `view=${encodeURIComponent(viewSelect.value)}&stretch=${encodeURIComponent(stretchSelect.value)}`;
    try {
      const answer = await fetch(`${base}/stretch.json?${query}`, { credentials: "same-origin" });
      if (!answer.ok) throw new Error(`the server answered ${answer.status}`);
      const said = await answer.json();
      range.textContent = said.index ? `${viewSelect.value} from −1 (blue) to 1 (dark green)`
        : "Black to white: " + said.bands.map((band, n) => `band ${band} ${number(said.low[n])}–${number(said.high[n])}`).join(" · ");
      plot.hidden = !drawHistogram(plot, said);
    } catch (problem) {
      range.textContent = `The stretch could not be read: ${problem.message}`;
      plot.hidden = true;
    }
  };
  describeStretch();
  const refresh = () => {
    tiles.setTileUrlFunction(tileUrl(), `${viewSelect.value}|${stretchSelect.value}`);
    describeStretch();
  };
  viewSelect.addEventListener("change", refresh);
  stretchSelect.addEventListener("change", refresh);

  const where = (coordinate) => {
    const [col, row] = fromMap(toScene(coordinate)).map(Math.floor);
    const inside = col >= 0 && row >= 0 && col < info.width && row < info.height;
    return { col, row, inside };
  };
  map.on("pointermove", (event) => {
    const { col, row, inside } = where(event.coordinate);
    if (!inside) return;
    const [x, y] = toScene(event.coordinate);
    const digits = info.units === "degrees" ? 6 : 1; // a tenth of a metre, or about a tenth of a metre in degrees
    status.textContent = `Pixel x ${col}, y ${row}` + (geo ? ` · ${info.crs} ${x.toFixed(digits)}, ${y.toFixed(digits)}` : "");
  });
  map.on("singleclick", async (event) => {
    const { col, row, inside } = where(event.coordinate);
    if (!inside) return;
    values.textContent = `Reading pixel x ${col}, y ${row}…`;
    try {
      const answer = await fetch(`${base}/pixel/${col}_${row}.json`, { credentials: "same-origin" });
      if (!answer.ok) throw new Error((await answer.json().catch(() => ({}))).detail || `the server answered ${answer.status}`);
      const said = await answer.json();
      const bands = said.values.map((value, n) => `band ${n + 1} ${value === null ? "no data" : number(value)}`).join(", ");
      const place = said.lat === undefined || said.lat === null ? ""
        : ` · ${Math.abs(said.lat).toFixed(5)}° ${said.lat >= 0 ? "N" : "S"}, ${Math.abs(said.lon).toFixed(5)}° ${said.lon >= 0 ? "E" : "W"}`;
      // an index shown: its value here, from the two bands' values ((a - b) / (a + b), as the tiles are drawn)
      const pair = (info.indices || {})[viewSelect.value];
      let index = "";
      if (pair) {
        const [first, second] = pair.map((band) => said.values[band - 1]);
        index = first === null || second === null || first + second === 0 ? ` · ${viewSelect.value} no value`
          : ` · ${viewSelect.value} ${((first - second) / (first + second)).toFixed(3)}`;
      }
      values.textContent = `Pixel x ${said.col}, y ${said.row}: ${bands}${index}${place}`;
      values.dataset.values = JSON.stringify(said.values);
    } catch (problem) {
      values.textContent = `The pixel could not be read: ${problem.message}`;
    }
  });
  // what the tests and a reader's scripts may ask: the map, and scene pixels to screen pixels
  element.loupeMap = {
    map, tiles, scene,
    toScreen: (col, row) => map.getPixelFromCoordinate(toView([toX(col), toY(row)])),
  };
  map.once("rendercomplete", () => { element.dataset.shown = "1"; });
  tiles.once("tileloadend", () => requestAnimationFrame(() => requestAnimationFrame(() => {
    element.dataset.firstDrawn = String(performance.now()); // when a first tile is on screen (loupe bench viewer)
  })));
}

const mountAll = () => document.querySelectorAll(".loupe-map:not([data-ready])").forEach(mount);
new MutationObserver(mountAll).observe(document.documentElement, { childList: true, subtree: true });
mountAll();
