// Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
// The 3D viewer of a Seg-CAM report case page: three orthogonal planes drawn on 2D canvases from the case's volumes
// (gzipped uint8 NIfTI-1, base64, in <case>.js; no network, works from file://). Volumes lie on one RAS-ordered grid
// (axis 0 points right, 1 anterior, 2 superior); CAMs on a coarser copy of it, interpolated trilinearly. Planes follow
// the package's one display convention (monai_segcam.visualize.planes, as every PNG): the patient's right on the left
// (radiological) in the axial and coronal planes, anterior on the left in the sagittal one, anterior / superior at the
// top: the u axis is drawn from its last index (left) to its first.
(function () {
  "use strict";

  const PLANES = [
    { name: "axial", fixed: 2, u: 0, v: 1, left: "R", right: "L", top: "A", bottom: "P" },
    { name: "coronal", fixed: 1, u: 0, v: 2, left: "R", right: "L", top: "S", bottom: "I" },
    { name: "sagittal", fixed: 0, u: 1, v: 2, left: "A", right: "P", top: "S", bottom: "I" },
  ];
  const DISPLAY = 340;  // CSS pixels of the largest physical extent

  function decodeBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  async function gunzip(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  function parseNifti(bytes, shape) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (view.getInt32(0, true) !== 348) throw new Error("not a little-endian NIfTI-1 volume");
    const dims = [view.getInt16(42, true), view.getInt16(44, true), view.getInt16(46, true)];
    if (view.getInt16(70, true) !== 2) throw new Error("expected uint8 NIfTI data");
    if (dims.join() !== shape.join()) throw new Error("volume of shape " + dims + ", expected " + shape);
    const offset = Math.round(view.getFloat32(108, true));
    return bytes.subarray(offset, offset + dims[0] * dims[1] * dims[2]);
  }

  function lut(stops) {
    const table = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const p = (i / 255) * (stops.length - 1);
      const lo = Math.min(Math.floor(p), stops.length - 2);
      const t = p - lo;
      for (let c = 0; c < 3; c++) table[i * 3 + c] = Math.round(stops[lo][c] * (1 - t) + stops[lo + 1][c] * t);
    }
    return table;
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(function (kv) {
      if (kv[0] === "text") node.textContent = kv[1]; else node.setAttribute(kv[0], kv[1]);
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function unique(values) { return values.filter(function (v, i) { return values.indexOf(v) === i; }); }

  function fmt(v) { return Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(3); }

  class Viewer {
    constructor(root, data) {
      this.root = root;
      this.data = data;
      this.shape = data.shape;
      this.cache = {};
      this.luts = {};
      Object.entries(data.colormaps).forEach(function (kv) { this.luts[kv[0]] = lut(kv[1]); }, this);
      const first = data.maps.reduce(function (best, m) {  // the worst map opens: the lowest relevance mass in the region
        const v = m.relevance_mass_region, b = best ? best.relevance_mass_region : null;
        return typeof v === "number" && (typeof b !== "number" || v < b) ? m : best;
      }, data.maps[0]);
      const image = data.volumes.image;
      this.imageRange = [image.inter, image.inter + 255 * image.slope];
      this.state = {
        map: first ? first.key : null, cmap: data.default_colormap, camOn: !!first, camOpacity: 0.5, camThreshold: 0.2,
        seg: data.volumes.segmentation ? "outline" : "off", segOpacity: 0.4, label: data.volumes.label ? "dotted" : "off",
        level: (this.imageRange[0] + this.imageRange[1]) / 2, width: this.imageRange[1] - this.imageRange[0],
        pos: first ? first.peak.slice() : this.shape.map(function (n) { return Math.floor(n / 2); }),
      };
      this.colors = {};
      data.classes.forEach(function (c) { this.colors[c.index] = c.color; }, this);
    }

    async volume(key) {
      if (!this.cache[key]) {
        const entry = this.data.volumes[key];
        this.cache[key] = gunzip(decodeBase64(entry.nifti_gz_base64)).then(function (bytes) {
          return { codes: parseNifti(bytes, entry.shape), shape: entry.shape, slope: entry.slope, inter: entry.inter, max: entry.max };
        });
      }
      return this.cache[key];
    }

    // A CAM's real values on the viewer's grid (trilinear from its own, coarser grid), and the maximum of the stored
    // (downsampled) map, which the colours and the colour bar are scaled to.
    async camField(key) {
      if (this.field && this.field.key === key) return this.field;
      const cam = await this.volume(key);
      const shape = this.shape, cs = cam.shape, values = new Float32Array(shape[0] * shape[1] * shape[2]);
      const axes = [0, 1, 2].map(function (d) {
        const lo = new Int32Array(shape[d]), t = new Float32Array(shape[d]);
        for (let x = 0; x < shape[d]; x++) {
          const c = Math.min(cs[d] - 1, Math.max(0, ((x + 0.5) * cs[d]) / shape[d] - 0.5));
          lo[x] = Math.min(Math.floor(c), Math.max(cs[d] - 2, 0));
          t[x] = cs[d] > 1 ? c - lo[x] : 0;
        }
        return { lo: lo, t: t, step: cs[d] > 1 ? 1 : 0 };
      });
      const at = function (x, y, z) { return cam.codes[x + cs[0] * (y + cs[1] * z)]; };
      let max = cam.max === undefined ? 0 : cam.max, n = 0;
      for (let z = 0; z < shape[2]; z++) {
        const z0 = axes[2].lo[z], tz = axes[2].t[z], z1 = z0 + axes[2].step;
        for (let y = 0; y < shape[1]; y++) {
          const y0 = axes[1].lo[y], ty = axes[1].t[y], y1 = y0 + axes[1].step;
          for (let x = 0; x < shape[0]; x++, n++) {
            const x0 = axes[0].lo[x], tx = axes[0].t[x], x1 = x0 + axes[0].step;
            const c00 = at(x0, y0, z0) * (1 - tx) + at(x1, y0, z0) * tx, c10 = at(x0, y1, z0) * (1 - tx) + at(x1, y1, z0) * tx;
            const c01 = at(x0, y0, z1) * (1 - tx) + at(x1, y0, z1) * tx, c11 = at(x0, y1, z1) * (1 - tx) + at(x1, y1, z1) * tx;
            const code = (c00 * (1 - ty) + c10 * ty) * (1 - tz) + (c01 * (1 - ty) + c11 * ty) * tz;
            values[n] = code * cam.slope + cam.inter;
            if (cam.max === undefined && values[n] > max) max = values[n];
          }
        }
      }
      this.field = { key: key, values: values, max: max };
      return this.field;
    }

    currentMap() { return this.data.maps.find(function (m) { return m.key === this.state.map; }, this) || null; }

    // controls ------------------------------------------------------------------------------------------------------

    build() {
      const self = this, s = this.state, maps = this.data.maps;
      const controls = el("div", { class: "controls" });
      function select(id, label, options, value, onChange) {
        const node = el("select", { id: id }, options.map(function (o) { return el("option", { value: o[0], text: o[1] }); }));
        node.value = String(value);
        node.addEventListener("change", function () { onChange(node.value); });
        controls.appendChild(el("label", { text: label + " " }, [node]));
        return node;
      }
      function slider(id, label, min, max, step, value, onInput) {
        const node = el("input", { id: id, type: "range", min: min, max: max, step: step });
        node.value = value;
        node.addEventListener("input", function () { onInput(parseFloat(node.value)); });
        controls.appendChild(el("label", { text: label + " " }, [node]));
        return node;
      }
      if (maps.length) {
        const names = {};
        this.data.classes.forEach(function (c) { names[c.index] = c.name; });
        this.layerSelect = select("layer", "layer", unique(maps.map(function (m) { return m.layer; })).map(function (v) { return [v, v]; }),
          this.currentMap().layer, function (v) { self.switchMap("layer", v); });
        this.methodSelect = select("method", "method", unique(maps.map(function (m) { return m.method; })).map(function (v) { return [v, v]; }),
          this.currentMap().method, function (v) { self.switchMap("method", v); });
        this.classSelect = select("class", "class", unique(maps.map(function (m) { return m["class"]; })).map(function (v) { return [String(v), v + (names[v] ? " (" + names[v] + ")" : "")]; }),
          this.currentMap()["class"], function (v) { self.switchMap("class", parseInt(v, 10)); });
        const toggle = el("input", { id: "cam-on", type: "checkbox" });
        toggle.checked = true;
        toggle.addEventListener("change", function () { s.camOn = toggle.checked; self.render(); });
        controls.appendChild(el("label", { text: "CAM " }, [toggle]));
        select("colormap", "colour map", Object.keys(this.data.colormaps).map(function (k) { return [k, k]; }), s.cmap, function (v) { s.cmap = v; self.render(); });
        slider("cam-opacity", "opacity", 0, 1, 0.05, s.camOpacity, function (v) { s.camOpacity = v; self.render(); });
        slider("cam-threshold", "hide below", 0, 1, 0.05, s.camThreshold, function (v) { s.camThreshold = v; self.render(); });
        const peak = el("button", { id: "peak", type: "button", text: "go to peak" });
        peak.addEventListener("click", function () { s.pos = self.currentMap().peak.slice(); self.render(); });
        controls.appendChild(peak);
      }
      if (this.data.volumes.segmentation) {
        select("seg-mode", "segmentation", [["outline", "outline"], ["fill", "fill"], ["off", "off"]], s.seg, function (v) { s.seg = v; self.render(); });
        slider("seg-opacity", "fill opacity", 0, 1, 0.05, s.segOpacity, function (v) { s.segOpacity = v; self.render(); });
      }
      if (this.data.volumes.label) {
        select("label-mode", "label", [["dotted", "dotted outline"], ["off", "off"]], s.label, function (v) { s.label = v; self.render(); });
      }
      const span = this.imageRange[1] - this.imageRange[0] || 1;
      this.levelSlider = slider("level", "window level", this.imageRange[0], this.imageRange[1], span / 255, s.level, function (v) { s.level = v; self.render(); });
      this.widthSlider = slider("width", "width", span / 255, 2 * span, span / 255, s.width, function (v) { s.width = v; self.render(); });
      const reset = el("button", { id: "window-reset", type: "button", text: "reset window" });
      reset.addEventListener("click", function () {
        s.level = (self.imageRange[0] + self.imageRange[1]) / 2; s.width = span;
        self.levelSlider.value = s.level; self.widthSlider.value = s.width; self.render();
      });
      controls.appendChild(reset);
      this.root.appendChild(controls);
      this.legend = el("div", { class: "legend" });
      this.root.appendChild(this.legend);
      this.buildPlanes();
      this.info = el("div", { class: "info" });
      this.root.appendChild(this.info);
      document.querySelectorAll("table.maps tbody tr").forEach(function (row) {
        row.addEventListener("click", function () { self.showMap(row.dataset.map); });
      });
    }

    buildPlanes() {
      const self = this, shape = this.shape, spacing = this.data.spacing;
      const extent = Math.max(shape[0] * spacing[0], shape[1] * spacing[1], shape[2] * spacing[2]);
      const scale = DISPLAY / extent;
      const container = el("div", { class: "planes" });
      this.planes = PLANES.map(function (plane) {
        const w = shape[plane.u], h = shape[plane.v];
        const canvas = el("canvas", { id: "canvas-" + plane.name });
        canvas.width = Math.max(1, Math.round(w * spacing[plane.u] * scale));
        canvas.height = Math.max(1, Math.round(h * spacing[plane.v] * scale));
        const buffer = el("canvas");
        buffer.width = w; buffer.height = h;
        const sliderNode = el("input", { id: "slice-" + plane.name, type: "range", min: 0, max: shape[plane.fixed] - 1, step: 1 });
        sliderNode.addEventListener("input", function () { self.state.pos[plane.fixed] = parseInt(sliderNode.value, 10); self.render(); });
        const title = el("div", { text: plane.name });
        const pick = function (event) {
          if (event.type === "pointermove" && !event.buttons) return;
          const rect = canvas.getBoundingClientRect();
          const x = Math.floor(((event.clientX - rect.left) / rect.width) * w);
          const y = Math.floor(((event.clientY - rect.top) / rect.height) * h);
          self.state.pos[plane.u] = Math.min(w - 1, Math.max(0, w - 1 - x));
          self.state.pos[plane.v] = Math.min(h - 1, Math.max(0, h - 1 - y));
          self.render();
        };
        canvas.addEventListener("pointerdown", pick);
        canvas.addEventListener("pointermove", pick);
        container.appendChild(el("div", { class: "plane" }, [title, canvas, sliderNode]));
        return { def: plane, canvas: canvas, buffer: buffer, slider: sliderNode, title: title, w: w, h: h };
      });
      this.root.appendChild(container);
    }

    switchMap(attribute, value) {
      const current = this.currentMap();
      const wanted = { layer: current.layer, method: current.method, "class": current["class"] };
      wanted[attribute] = value;
      const exact = this.data.maps.find(function (m) { return m.layer === wanted.layer && m.method === wanted.method && m["class"] === wanted["class"]; });
      const any = this.data.maps.find(function (m) { return m[attribute] === value; });
      this.showMap((exact || any).key);
    }

    showMap(key) {
      const map = this.data.maps.find(function (m) { return m.key === key; });
      if (!map) return;
      this.state.map = key;
      this.layerSelect.value = map.layer;
      this.methodSelect.value = map.method;
      this.classSelect.value = String(map["class"]);
      document.querySelectorAll("table.maps tbody tr").forEach(function (row) { row.classList.toggle("selected", row.dataset.map === key); });
      this.render();
    }

    // drawing -------------------------------------------------------------------------------------------------------

    async render() {
      const ticket = (this.ticket = (this.ticket || 0) + 1);
      const map = this.currentMap();
      const layers = await Promise.all([
        this.volume("image"),
        this.data.volumes.segmentation ? this.volume("segmentation") : null,
        this.data.volumes.label ? this.volume("label") : null,
        map ? this.camField(map.key) : null,
      ]);
      if (ticket !== this.ticket) return;  // a newer render is on its way
      const vols = { image: layers[0], seg: layers[1], label: layers[2], cam: layers[3] };
      this.planes.forEach(function (plane) { this.drawPlane(plane, vols); }, this);
      this.drawLegend(map, vols.cam ? vols.cam.max : 0);
      this.drawInfo(vols);
      this.root.dataset.rendered = String((parseInt(this.root.dataset.rendered || "0", 10)) + 1);
      document.body.dataset.ready = "1";
    }

    index(x, y, z) { return x + this.shape[0] * (y + this.shape[1] * z); }

    classesAt(volume, i) {
      if (!volume) return [];
      const code = volume.codes[i];
      if (!this.data.multi_label) return code ? [code] : [];
      const out = [];
      for (let c = 0; c < 8; c++) if ((code >> c) & 1) out.push(c);
      return out;
    }

    inClass(volume, i, c) {
      const code = volume.codes[i];
      return this.data.multi_label ? ((code >> c) & 1) === 1 : code === c;
    }

    drawPlane(plane, vols) {
      const s = this.state, def = plane.def, w = plane.w, h = plane.h, self = this;
      const ctx = plane.buffer.getContext("2d");
      const pixels = ctx.createImageData(w, h);
      const out = pixels.data;
      const low = s.level - s.width / 2, table = this.luts[s.cmap];
      const coord = [0, 0, 0];
      coord[def.fixed] = s.pos[def.fixed];
      const voxel = function (u, v) {
        coord[def.u] = u; coord[def.v] = v;
        return self.index(coord[0], coord[1], coord[2]);
      };
      const boundary = function (volume, u, v, c) {
        const neighbours = [[u - 1, v], [u + 1, v], [u, v - 1], [u, v + 1]];
        return neighbours.some(function (n) { return n[0] < 0 || n[1] < 0 || n[0] >= w || n[1] >= h || !self.inClass(volume, voxel(n[0], n[1]), c); });
      };
      for (let v = 0; v < h; v++) {
        for (let u = 0; u < w; u++) {
          const i = voxel(u, v);
          const value = vols.image.codes[i] * vols.image.slope + vols.image.inter;
          const g = Math.min(255, Math.max(0, ((value - low) / s.width) * 255));
          let r = g, gr = g, b = g;
          if (vols.cam && s.camOn && vols.cam.max > 0) {
            const t = vols.cam.values[i] / vols.cam.max;
            if (t >= s.camThreshold && t > 0) {
              const k = Math.min(255, Math.round(t * 255)) * 3, a = s.camOpacity;
              r = r * (1 - a) + table[k] * a; gr = gr * (1 - a) + table[k + 1] * a; b = b * (1 - a) + table[k + 2] * a;
            }
          }
          if (vols.seg && s.seg !== "off") {
            const classes = this.classesAt(vols.seg, i);
            for (let n = 0; n < classes.length; n++) {
              const color = this.colors[classes[n]] || [255, 255, 255];
              if (s.seg === "fill") {
                const a = s.segOpacity;
                r = r * (1 - a) + color[0] * a; gr = gr * (1 - a) + color[1] * a; b = b * (1 - a) + color[2] * a;
              } else if (boundary(vols.seg, u, v, classes[n])) {
                r = color[0]; gr = color[1]; b = color[2];
              }
            }
          }
          if (vols.label && s.label !== "off" && (u + v) % 2 === 0) {
            const classes = this.classesAt(vols.label, i);
            for (let n = 0; n < classes.length; n++) {
              if (boundary(vols.label, u, v, classes[n])) {
                const color = this.colors[classes[n]] || [255, 255, 255];
                r = color[0]; gr = color[1]; b = color[2];
              }
            }
          }
          const o = ((h - 1 - v) * w + (w - 1 - u)) * 4;
          out[o] = r; out[o + 1] = gr; out[o + 2] = b; out[o + 3] = 255;
        }
      }
      ctx.putImageData(pixels, 0, 0);
      const view = plane.canvas.getContext("2d");
      view.imageSmoothingEnabled = false;
      view.drawImage(plane.buffer, 0, 0, plane.canvas.width, plane.canvas.height);
      this.drawCrosshair(plane, view);
      plane.slider.value = s.pos[def.fixed];
      plane.title.textContent = def.name + " " + (s.pos[def.fixed] + 1) + " / " + this.shape[def.fixed];
    }

    drawCrosshair(plane, view) {
      const def = plane.def, s = this.state;
      const sx = plane.canvas.width / plane.w, sy = plane.canvas.height / plane.h;
      const x = (plane.w - 1 - s.pos[def.u] + 0.5) * sx, y = (plane.h - 1 - s.pos[def.v] + 0.5) * sy;
      view.strokeStyle = "rgba(0, 255, 0, 0.7)";
      view.lineWidth = 1;
      view.beginPath();
      view.moveTo(x, 0); view.lineTo(x, plane.canvas.height);
      view.moveTo(0, y); view.lineTo(plane.canvas.width, y);
      view.stroke();
      view.fillStyle = "rgba(255, 255, 255, 0.85)";
      view.font = "12px sans-serif";
      view.textBaseline = "middle";
      view.textAlign = "left"; view.fillText(def.left, 3, plane.canvas.height / 2);
      view.textAlign = "right"; view.fillText(def.right, plane.canvas.width - 3, plane.canvas.height / 2);
      view.textAlign = "center"; view.textBaseline = "top"; view.fillText(def.top, plane.canvas.width / 2, 2);
      view.textBaseline = "bottom"; view.fillText(def.bottom, plane.canvas.width / 2, plane.canvas.height - 2);
    }

    drawLegend(map, camMax) {
      const legend = this.legend, s = this.state;
      legend.innerHTML = "";
      this.data.classes.forEach(function (c) {
        const color = "rgb(" + c.color.join(",") + ")";
        const item = el("span", { class: "legend-item" });
        if (this.data.volumes.segmentation) item.appendChild(el("span", { class: "swatch", style: "border-color:" + color }));
        if (this.data.volumes.label) item.appendChild(el("span", { class: "swatch dotted", style: "border-color:" + color }));
        item.appendChild(document.createTextNode(c.index + " " + c.name));
        legend.appendChild(item);
      }, this);
      const kinds = (this.data.volumes.segmentation ? "solid: segmentation" : "") + (this.data.volumes.label ? (this.data.volumes.segmentation ? ", " : "") + "dotted: label" : "");
      if (kinds) legend.appendChild(el("span", { text: "(" + kinds + ")" }));
      if (map && !(camMax > 0)) {  // an all-zero map is not drawn: the legend says so
        legend.appendChild(el("span", { id: "zero-map", text: "CAM " + map.method + " · " + map.layer + " · class " + map["class"] + ": zero map (no relevance anywhere; nothing drawn)" }));
      } else if (map) {
        const bar = el("canvas", { id: "colorbar" });
        bar.width = 120; bar.height = 12;
        const ctx = bar.getContext("2d"), table = this.luts[s.cmap];
        for (let x = 0; x < bar.width; x++) {
          const k = Math.round((x / (bar.width - 1)) * 255) * 3;
          ctx.fillStyle = "rgb(" + table[k] + "," + table[k + 1] + "," + table[k + 2] + ")";
          ctx.fillRect(x, 0, 1, bar.height);
        }
        legend.appendChild(el("span", { text: "CAM " + map.method + " · " + map.layer + " · class " + map["class"] + ": 0" }));
        legend.appendChild(bar);
        legend.appendChild(el("span", { id: "colorbar-max", text: fmt(camMax) }));
        legend.appendChild(el("span", { text: "(hidden below " + fmt(s.camThreshold * camMax) + ")" }));
        const shown = this.data.volumes[map.key].shape, full = map.full_shape || shown;
        const downsampled = shown.some(function (n, d) { return n !== full[d]; });
        if (downsampled || (typeof map.max === "number" && Math.abs(map.max - camMax) > 1e-6 * Math.max(1, Math.abs(map.max)))) {
          const why = downsampled ? "the map shown downsampled to " + shown.join("×") + " voxels from " + full.join("×") : "the map as stored for the viewer";
          legend.appendChild(el("span", { class: "downsampled", text: "· " + why + "; full-resolution maximum " +
            (typeof map.max === "number" ? fmt(map.max) : "unknown") + " (the table's max)" }));
        }
      }
    }

    drawInfo(vols) {
      const p = this.state.pos, i = this.index(p[0], p[1], p[2]);
      const parts = ["voxel (" + p.join(", ") + ")", "image " + fmt(vols.image.codes[i] * vols.image.slope + vols.image.inter)];
      if (vols.cam) parts.push("CAM " + fmt(vols.cam.values[i]));
      if (vols.seg) parts.push("segmentation " + (this.classesAt(vols.seg, i).join("+") || "0"));
      if (vols.label) parts.push("label " + (this.classesAt(vols.label, i).join("+") || "0"));
      this.info.textContent = parts.join(" · ");
    }
  }

  window.SegCAMViewer = {
    start: function (root, data) {
      if (!data) {
        root.appendChild(el("p", { class: "error", text: "The case's data file did not load." }));
        return null;
      }
      const viewer = new Viewer(root, data);
      viewer.build();
      if (data.maps.length) viewer.showMap(viewer.state.map); else viewer.render();
      return viewer;
    },
  };
})();
