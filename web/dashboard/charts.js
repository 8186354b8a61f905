// Starling dashboard: charts over real time. The broker keeps its own
// history (GET /api/v1/history: 1 h at 1 s, 24 h at 1 min), so a page
// opened or reloaded draws the past at once; the overview feed adds a
// point a second. Times are the broker's clock. Two points further apart
// than 2.5 steps are not joined: the gap is a stretch the broker was down
// or not reachable. Drawn as SVG with a time axis, no library.
'use strict';
(() => {
  const S = window.starling;
  const { $ } = S;
  const SVGNS = $('#chart').namespaceURI; // the SVG namespace (a name, not a place the page loads from)
  const RANGES = { '5m': 300e3, '1h': 3600e3, '24h': 86400e3 };
  const KEEP = 3700e3;          // ms of 1 s points kept in the page
  let range = '5m';
  let pts = [];                 // 1 s points: {t, in, out, dropped, bin, bout, conn}, by t
  let day = [];                 // 1 min points for the 24 h range
  let skew = 0;                 // Date.now() - the broker's clock
  let dayAt = 0;

  const fromAPI = (h) => h.t.map((t, i) => ({ t, in: h.messages_received_per_second[i], out: h.messages_sent_per_second[i],
    dropped: h.messages_dropped_per_second[i], bin: h.bytes_received_per_second[i], bout: h.bytes_sent_per_second[i],
    conn: h.clients_connected[i] }));

  // load asks the broker for its history; the page's own points older
  // than the answer (from before a broker restart) stay, so their gap does.
  async function load() {
    try {
      const h = await S.api('GET', 'history?range=1h');
      skew = Date.now() - h.now;
      const got = fromAPI(h);
      if (got.length) {
        const first = got[0].t, last = got[got.length - 1].t;
        pts = pts.filter((p) => p.t < first).concat(got, pts.filter((p) => p.t > last + 500));
      }
      $('#history-status').textContent = '';
      if (range === '24h') await loadDay();
    } catch (e) {
      $('#history-status').textContent = 'history unavailable (' + e.message + '): from now on only';
    }
    draw();
  }

  async function loadDay() {
    const h = await S.api('GET', 'history?range=24h');
    day = fromAPI(h);
    dayAt = Date.now();
  }

  S.onLive.push(load);
  S.onLogout.push(() => { pts = []; day = []; draw(); });
  S.onOverview.push((o) => {
    if (!o.t) return;
    skew = Date.now() - o.t;
    const last = pts[pts.length - 1];
    if (last && o.t - last.t < 500) return; // the history has this second
    pts.push({ t: o.t, in: o.messages_received_per_second, out: o.messages_sent_per_second, dropped: o.messages_dropped_per_second,
      bin: o.bytes_received_per_second || 0, bout: o.bytes_sent_per_second || 0, conn: o.clients_connected });
    while (pts.length && pts[0].t < o.t - KEEP) pts.shift();
    if (range === '24h' && Date.now() - dayAt > 60e3) loadDay().then(draw, () => {});
  });
  S.onTick.push(draw);
  S.chartPoints = () => pts.slice(); // for tests: the 1 s points held

  document.querySelectorAll('button.range').forEach((b) => b.addEventListener('click', async () => {
    range = b.dataset.range;
    document.querySelectorAll('button.range').forEach((x) => x.setAttribute('aria-pressed', String(x === b)));
    if (range === '24h') {
      try { await loadDay(); } catch (e) { $('#history-status').textContent = '24 h history unavailable: ' + e.message; }
    }
    draw();
  }));

  const node = (tag, attrs, text) => {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const TICKS = [10e3, 30e3, 60e3, 300e3, 600e3, 1800e3, 3600e3, 3 * 3600e3, 6 * 3600e3];
  const label = (t, span) => new Date(t).toLocaleTimeString([], span > 3600e3 ? { hour: '2-digit', minute: '2-digit', hour12: false } :
    { hour: '2-digit', minute: '2-digit', second: span <= 300e3 ? '2-digit' : undefined, hour12: false });

  // chart draws series (keys of the points, each a CSS class) of ps over
  // [from, to] into svg, and sets data-gaps to the gaps it shows.
  function chart(svg, ps, keys, from, to, step, unit) {
    const show = unit === 'B/s' ? (v) => S.fmtBytes(v) + '/s' : (v) => S.fmt(v) + unit;
    const W = Math.max(200, Math.round(svg.clientWidth || 600)), H = 150;
    const L = 58, R = 8, T = 8, B = 22;
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const shown = ps.filter((p) => p.t >= from && p.t <= to);
    const peak = Math.max(1, ...shown.map((p) => Math.max(...keys.map((k) => p[k] || 0))));
    const x = (t) => (L + (t - from) * (W - L - R) / (to - from)).toFixed(1);
    const y = (v) => (T + (H - T - B) * (1 - v / peak)).toFixed(1);
    const kids = [node('rect', { class: 'plot', x: L, y: T, width: W - L - R, height: H - T - B })];
    // Time axis: round ticks, about one per 90 px.
    const every = TICKS.find((d) => (W - L - R) / ((to - from) / d) >= 90) || TICKS[TICKS.length - 1];
    for (let t = Math.ceil(from / every) * every; t <= to; t += every) {
      kids.push(node('line', { class: 'grid', x1: x(t), x2: x(t), y1: T, y2: H - B }));
      if (x(t) < W - R - 28) kids.push(node('text', { class: 'tick', x: x(t), y: H - 6, 'text-anchor': 'middle' }, label(t, to - from)));
    }
    kids.push(node('text', { class: 'tick ymax', x: L - 4, y: T + 9, 'text-anchor': 'end' }, show(peak)),
      node('text', { class: 'tick', x: L - 4, y: H - B, 'text-anchor': 'end' }, '0'));
    let gaps = 0;
    const maxGap = 2.5 * step;
    for (const k of keys) {
      const d = shown.map((p, i) => {
        const gap = i === 0 || p.t - shown[i - 1].t > maxGap;
        if (gap && i > 0 && k === keys[0]) gaps++;
        return `${gap ? 'M' : 'L'}${x(p.t)},${y(p[k] || 0)}`;
      }).join(' ');
      const path = node('path', { class: 'line ' + k, d });
      if (svg.id === 'chart' && (k === 'in' || k === 'out')) path.id = 'line-' + k;
      kids.push(path);
    }
    const last = shown.length ? shown[shown.length - 1].t : 0;
    if (last && to - last > maxGap) gaps++; // the gap up to now
    svg.replaceChildren(...kids);
    svg.dataset.gaps = gaps;
    svg.dataset.points = shown.length;
    svg.dataset.peak = peak;
  }

  function draw() {
    const to = Date.now() - skew, span = RANGES[range], from = to - span;
    const ps = range === '24h' ? day : pts;
    const step = range === '24h' ? 60e3 : 1e3;
    chart($('#chart'), ps, ['in', 'out', 'dropped'], from, to, step, '/s');
    chart($('#chart-conn'), ps, ['conn'], from, to, step, '');
    chart($('#chart-bytes'), ps, ['bin', 'bout'], from, to, step, 'B/s');
  }
})();
