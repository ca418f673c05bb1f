// curate report: the interactive map. Data strings are only ever set with textContent.
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('curate-data').textContent);
  const status = document.getElementById('map-status');
  const api = { ready: false, n: data.n };
  window.curateReport = api;

  function decode(b64, Type) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer);
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const x = decode(data.x, Float32Array);
  const y = decode(data.y, Float32Array);
  const thumb = decode(data.thumb, Int32Array);
  const fields = data.fields.map((f) => ({ ...f, codes: decode(f.codes, Uint16Array) }));
  const nbrs = data.nbrs ? decode(data.nbrs, Int32Array) : null;
  const n = data.n;

  function thumbSrc(i) {
    const t = thumb[i];
    return t >= 0 ? data.thumbDir.split('/').map(encodeURIComponent).join('/') + '/' + data.thumbs[t] + '.webp' : null;
  }

  // ---- scatterplot (regl-scatterplot, WebGL) -----------------------------------------------------
  const canvas = document.getElementById('map-canvas');
  const size = n < 2000 ? 6 : n < 20000 ? 4 : n < 200000 ? 2.5 : 1.5;
  const scatterplot = createScatterplot({
    canvas,
    width: 'auto',
    height: 'auto',
    backgroundColor: '#ffffff',
    pointSize: size,
    pointSizeSelected: 3,
    pointOutlineWidth: 2,
    opacity: n < 50000 ? 0.85 : 0.6,
    pointColorActive: '#111827',
    pointColorHover: '#111827',
    lassoColor: '#3b6fd8',
    lassoOnLongPress: false,
    deselectOnDblClick: true,
    deselectOnEscape: true,
  });
  api.scatterplot = scatterplot;

  const select = document.getElementById('colour-by');
  fields.forEach((f, k) => {
    const o = el('option', '', f.name);
    o.value = String(k);
    select.appendChild(o);
  });
  let current = 0;

  function legend(f) {
    const box = document.getElementById('legend');
    box.replaceChildren(el('div', 'legend-title', f.name));
    f.labels.forEach((label, k) => {
      if (!f.counts[k]) return;
      const row = el('div', 'legend-row');
      const sw = el('span', 'swatch');
      sw.style.background = f.colours[k];
      row.append(sw, el('span', 'legend-label', label), el('span', 'legend-count', f.counts[k].toLocaleString()));
      row.title = label;
      box.appendChild(row);
    });
  }

  function colourBy(k) {
    current = k;
    const f = fields[k];
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = f.codes[i];
    scatterplot.set({ colorBy: 'valueA', pointColor: f.colours });
    legend(f);
    return scatterplot.draw({ x, y, valueA: values }, { zDataType: 'categorical', preventFilterReset: true });
  }

  // ---- hover card ----------------------------------------------------------------------------------
  const card = document.getElementById('hover-card');
  function describe(i, box) {
    const src = thumbSrc(i);
    if (src) {
      const img = el('img');
      img.src = src;
      img.alt = '';
      box.appendChild(img);
    }
    box.appendChild(el('div', 'path', data.paths[i]));
    for (const f of fields) {
      const label = f.labels[f.codes[i]];
      if (label === '(missing)') continue;
      const kv = el('div', 'kv', f.name + ': ');
      kv.appendChild(el('b', '', label));
      box.appendChild(kv);
    }
  }
  scatterplot.subscribe('pointOver', (i) => {
    card.replaceChildren();
    describe(i, card);
    const [px, py] = scatterplot.getScreenPosition(i) || [0, 0];
    card.hidden = false; // measure the filled card, then keep it inside the map
    const w = canvas.clientWidth;
    const h = card.offsetHeight || 240;
    card.style.left = (px > w - 280 ? px - 270 : px + 14) + 'px';
    card.style.top = Math.max(4, py + 14 + h > canvas.clientHeight ? py - h - 14 : py + 14) + 'px';
  });
  scatterplot.subscribe('pointOut', () => { card.hidden = true; });

  // ---- click: neighbours; lasso: the selected images -------------------------------------------
  const picked = document.getElementById('picked');
  const pickedTitle = document.getElementById('picked-title');
  const pickedTiles = document.getElementById('picked-tiles');
  function tile(i, note) {
    const fig = el('figure', 'tile');
    fig.dataset.row = String(i);
    const th = el('div', 'thumb');
    const src = thumbSrc(i);
    if (src) {
      const img = el('img');
      img.loading = 'lazy';
      img.src = src;
      img.alt = '';
      th.appendChild(img);
    } else th.appendChild(el('span', 'nothumb', 'no thumbnail'));
    const cap = el('figcaption');
    cap.appendChild(el('div', 'path', data.paths[i].split('/').pop()));
    if (note) cap.appendChild(el('div', 'meta', note));
    fig.title = data.paths[i];
    fig.append(th, cap);
    return fig;
  }
  function nearestOnMap(i, k) {
    const best = [];
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      const d = (x[j] - x[i]) ** 2 + (y[j] - y[i]) ** 2;
      if (best.length < k || d < best[best.length - 1][0]) {
        best.push([d, j]);
        best.sort((a, b) => a[0] - b[0]);
        if (best.length > k) best.pop();
      }
    }
    return best.map((b) => b[1]);
  }
  scatterplot.subscribe('select', ({ points }) => {
    pickedTiles.replaceChildren();
    if (points.length === 1) {
      const i = points[0];
      const near = nbrs ? Array.from(nbrs.subarray(i * data.k, (i + 1) * data.k)) : nearestOnMap(i, 8);
      pickedTitle.textContent = (nbrs ? 'Nearest neighbours (embedding) of ' : 'Nearest on the map of ') + data.paths[i];
      pickedTiles.appendChild(tile(i, 'clicked'));
      near.forEach((j, r) => pickedTiles.appendChild(tile(j, 'neighbour ' + (r + 1))));
    } else {
      pickedTitle.textContent = points.length.toLocaleString() + ' points selected' +
        (points.length > 48 ? ' (first 48 shown)' : '');
      points.slice(0, 48).forEach((j) => pickedTiles.appendChild(tile(j)));
    }
    picked.hidden = false;
  });
  scatterplot.subscribe('deselect', () => { picked.hidden = true; });

  // a gallery tile locates its image on the map
  document.addEventListener('click', (ev) => {
    const fig = ev.target.closest && ev.target.closest('.tile[data-row]');
    if (!fig || fig.closest('#picked')) return;
    const i = Number(fig.dataset.row);
    document.getElementById('map').scrollIntoView({ behavior: 'smooth' });
    scatterplot.select([i]);
    scatterplot.zoomToPoints([i], { padding: 8, transition: true });
  });

  select.addEventListener('change', () => colourBy(Number(select.value)));
  document.getElementById('reset-view').addEventListener('click', () => scatterplot.reset());

  const t0 = performance.now();
  const drawn = fields.length ? colourBy(0) : scatterplot.draw({ x, y });
  drawn.then(() => {
    api.ready = true;
    api.drawMs = performance.now() - t0;
    document.body.dataset.ready = '1';
    status.textContent = n.toLocaleString() + ' points';
  });
})();
