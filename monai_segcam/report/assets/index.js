// Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
// The index table of a Seg-CAM review report: one row per case, worst first (the lowest relevance mass in the
// explained region of any of its maps); the ⚑ column names every flagged map of the case whatever the selector shows.
// The selector refines: the statistics columns show each case's worst map, or the chosen map; sort by any column
// (click its header), filter by name, show flagged cases only (any map, or the chosen one), change the threshold.
(function () {
  "use strict";
  const data = window.SEGCAM_INDEX;
  const WORST = "worst map of each case";
  const state = { map: WORST, threshold: data.flag_threshold, filter: "", flaggedOnly: false, sortKey: "flag", sortDir: 1 };

  function mapId(entry) { return entry.layer + " · " + entry.method + " · class " + entry["class"]; }
  function finite(v) { return typeof v === "number" && isFinite(v); }
  function fmt(v) {
    if (!finite(v)) return "–";
    return Number.isInteger(v) || Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3);
  }
  function flagged(entry) { return !!entry && finite(entry.relevance_mass_region) && entry.relevance_mass_region < state.threshold; }
  function relevance(entry) { return entry && finite(entry.relevance_mass_region) ? entry.relevance_mass_region : null; }
  function worst(row) {  // the map with the lowest relevance mass in the region (maps without one: the first)
    return row.maps.reduce(function (best, m) {
      return relevance(m) !== null && (relevance(best) === null || relevance(m) < relevance(best)) ? m : best;
    }, row.maps[0]);
  }
  function selected(row) { return state.map === WORST ? worst(row) : row.maps.find(function (m) { return mapId(m) === state.map; }); }
  function flaggedMaps(row) { return row.maps.filter(flagged); }
  function caseFlagged(row) { return state.map === WORST ? flaggedMaps(row).length > 0 : flagged(selected(row)); }
  function meanDice(row) {
    const values = Object.values(row.dice).filter(finite);
    return values.length ? values.reduce(function (a, b) { return a + b; }, 0) / values.length : null;
  }

  const mapIds = [];
  const diceClasses = [];
  data.cases.forEach(function (row) {
    row.maps.forEach(function (m) { if (mapIds.indexOf(mapId(m)) < 0) mapIds.push(mapId(m)); });
    Object.keys(row.dice).forEach(function (c) { if (diceClasses.indexOf(c) < 0) diceClasses.push(c); });
  });
  const anyDice = diceClasses.length > 0;

  const columns = [
    { key: "flag", title: "⚑ flagged maps", text: true, value: function (r) { return relevance(worst(r)); }, cell: function (r) {
      return flaggedMaps(r).map(function (m) { return "<span class=\"flag\">⚑</span> " + escapeHtml(mapId(m)); }).join("<br>");
    } },
    { key: "thumb", title: "", sortable: false, cell: function (r) { return "<a href=\"" + r.page + "\"><img src=\"" + r.thumb + "\" alt=\"\"></a>"; } },
    { key: "name", title: "case", text: true, value: function (r) { return r.name; }, cell: function (r) { return "<a href=\"" + r.page + "\">" + escapeHtml(r.name) + "</a>"; } },
  ];
  if (anyDice) {
    columns.push({ key: "dice", title: "mean Dice", value: meanDice });
    diceClasses.forEach(function (c) { columns.push({ key: "dice" + c, title: "Dice " + c, value: function (r) { const v = r.dice[c]; return finite(v) ? v : null; } }); });
  }
  columns.push({ key: "map", title: "map shown", text: true, value: function (r) { const m = selected(r); return m ? mapId(m) : null; } });
  [["relevance_mass_region", "relevance mass in region"], ["relevance_mass_label", "relevance mass in label"],
    ["pointing_game_label", "pointing game (label)"], ["max", "CAM max (full resolution)"], ["region_voxels", "region voxels"]].forEach(function (pair) {
    columns.push({ key: pair[0], title: pair[1], value: function (r) { const m = selected(r); return m && finite(m[pair[0]]) ? m[pair[0]] : null; } });
  });

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }[c]; });
  }

  function compare(a, b) {
    const column = columns.find(function (c) { return c.key === state.sortKey; });
    const va = column.value(a), vb = column.value(b);
    if (va === null || va === undefined) return (vb === null || vb === undefined) ? 0 : 1;  // missing values last
    if (vb === null || vb === undefined) return -1;
    if (typeof va === "string") return state.sortDir * String(va).localeCompare(String(vb));
    return state.sortDir * (va - vb);
  }

  function render() {
    const table = document.getElementById("cases");
    let rows = data.cases.filter(function (r) {
      return r.name.toLowerCase().indexOf(state.filter.toLowerCase()) >= 0 && (!state.flaggedOnly || caseFlagged(r));
    });
    if (state.sortKey) rows = rows.slice().sort(compare);
    const head = "<thead><tr>" + columns.map(function (c) {
      const cls = [c.text ? "name" : "", state.sortKey === c.key ? (state.sortDir > 0 ? "sorted-asc" : "sorted-desc") : ""].join(" ").trim();
      return "<th data-key=\"" + c.key + "\"" + (cls ? " class=\"" + cls + "\"" : "") + ">" + c.title + "</th>";
    }).join("") + "</tr></thead>";
    const body = "<tbody>" + rows.map(function (r) {
      return "<tr data-case=\"" + escapeHtml(r.name) + "\"" + (flaggedMaps(r).length ? " class=\"flagged\"" : "") + ">" + columns.map(function (c) {
        const cls = [c.text ? "name" : "", c.key === "relevance_mass_region" && flagged(selected(r)) ? "flagged-map" : ""].join(" ").trim();
        const content = c.cell ? c.cell(r) : c.text ? escapeHtml(c.value(r) === null ? "–" : c.value(r)) : fmt(c.value(r));
        return "<td data-key=\"" + c.key + "\"" + (cls ? " class=\"" + cls + "\"" : "") + ">" + content + "</td>";
      }).join("") + "</tr>";
    }).join("") + "</tbody>";
    table.innerHTML = head + body;
    document.getElementById("shown").textContent = rows.length + " of " + data.cases.length + " cases shown";
  }

  function controls() {
    const root = document.getElementById("controls");
    root.innerHTML =
      "<label>statistics of <select id=\"map\">" + [WORST].concat(mapIds).map(function (id) { return "<option>" + escapeHtml(id) + "</option>"; }).join("") + "</select></label>" +
      "<label>flag threshold <input id=\"threshold\" type=\"number\" min=\"0\" max=\"1\" step=\"0.05\" value=\"" + state.threshold + "\"></label>" +
      "<label>filter <input id=\"filter\" type=\"search\" placeholder=\"case name\"></label>" +
      "<label><input id=\"flagged-only\" type=\"checkbox\"> flagged only</label><span id=\"shown\"></span>";
    document.getElementById("map").addEventListener("change", function (e) { state.map = e.target.value; render(); });
    document.getElementById("threshold").addEventListener("input", function (e) {
      const v = parseFloat(e.target.value); if (isFinite(v)) { state.threshold = v; render(); }
    });
    document.getElementById("filter").addEventListener("input", function (e) { state.filter = e.target.value; render(); });
    document.getElementById("flagged-only").addEventListener("change", function (e) { state.flaggedOnly = e.target.checked; render(); });
    document.getElementById("cases").addEventListener("click", function (e) {
      const th = e.target.closest("th");
      if (!th) return;
      const column = columns.find(function (c) { return c.key === th.dataset.key; });
      if (!column || column.sortable === false) return;
      state.sortDir = state.sortKey === column.key ? -state.sortDir : 1;  // first click: ascending (the flag column: worst first)
      state.sortKey = column.key;
      render();
    });
  }

  controls();
  render();
  document.body.dataset.ready = "1";
})();
