// Starling dashboard: logs in to the broker over MQTT over WebSocket on
// this page's origin (/mqtt) and shows the broker's live feeds
// ($SYS/starling/dashboard/...), the $SYS/broker tree and a topic tree of a
// chosen filter: the page subscribes to the filter for the payloads and the
// retained flags, and takes the rates from the broker's topics feed. Plain
// JS, no framework;
// everything from the network is shown with textContent, never as HTML.
'use strict';
(() => {
  const FEED = '$SYS/starling/dashboard/';
  const SYS = '$SYS/broker/';
  const STALE_AFTER = 3500; // ms without an overview after which the figures are shown as stale
  const MAX_TOPICS = 2000;
  const PAYLOAD_KEEP = 4096;  // bytes of a topic's last payload kept (JSON longer than this is not pretty-printed)
  const PAYLOAD_SHOWN = 200;  // characters of a payload shown on one line
  const PRETTY_MAX = 2000;    // characters of pretty-printed JSON shown
  const SUBS_EVERY = 2000;    // ms between two subscriber counts

  // The other scripts of the page (clients.js, history.js, ...) hook in
  // here: feeds they handle, and calls on login, logout and each overview.
  const S = window.starling = { feeds: {}, onLive: [], onOverview: [], onLogout: [], onTick: [], onMessage: [] };
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  let client = null;
  let clientID = '';              // this page's MQTT client ID
  let auth = '';                  // Basic credentials for the management API
  let admin = null;               // the login may use the management API: null until known
  let user = '';                  // the login's user name
  let filter = null;              // topic filter of the tree, subscribed
  let topics = new Map();         // topic -> {count, raw, size, view, retained, subs}
  let rates = new Map();          // topic -> {m, b}: messages and bytes per second, from the topics feed
  let ratesTruncated = false;     // the feed left quieter topics out
  let ratesAt = 0;                // when the last topics feed came
  let topicsFull = false;
  let overviewAt = 0;             // when the last overview came
  const own = new Map();          // this page's subscriptions: filter -> granted
  const sys = new Map();

  const setState = (state, text) => {
    const s = $('#status');
    s.dataset.state = state;
    s.textContent = text || state;
  };

  // ---- login ----
  $('#login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    connect($('#user').value, $('#password').value);
  });
  $('#logout').addEventListener('click', () => logout(''));

  function connect(username, password) {
    if (client) client.end(true);
    $('#login-error').textContent = '';
    setAdmin(null, '');
    setState('connecting', 'connecting');
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/mqtt';
    const opts = {
      clientId: clientID = 'starling-dashboard-' + Math.random().toString(16).slice(2, 10),
      protocolVersion: 5,
      clean: true,
      connectTimeout: 5000,
      reconnectPeriod: 2000,
      keepalive: 30,
    };
    user = username;
    auth = 'Basic ' + btoa(unescape(encodeURIComponent(username + ':' + password)));
    if (username) opts.username = username;
    if (password) opts.password = password;
    const c = mqtt.connect(url, opts);
    client = c;
    c.on('connect', () => {
      if (c !== client) return;
      setState('connected', 'connected');
      $('#login').hidden = true;
      $('#app').hidden = false;
      $('#logout').hidden = false;
      own.clear(); // a new connection: the broker holds none of the page's subscriptions
      const feeds = [FEED + '#', SYS + '#'];
      c.subscribe(feeds, { qos: 0 }, (err, _subs, suback) => {
        // MQTT.js reports a refusal in the SUBACK (a reason code of 128 or
        // more) as an error too, with the SUBACK: that is the ACL's answer.
        if (err && !(suback && suback.granted)) return setState('error', 'subscribe failed: ' + err.message);
        noteGranted(feeds, suback);
        // The broker's ACL decides what this login reads: say what it
        // refused rather than show empty figures as if the broker were idle.
        const refused = [FEED + '#', SYS + '#'].filter((f) => own.get(f) === false);
        const n = $('#acl-note');
        n.hidden = !refused.length;
        n.textContent = refused.length ? 'The broker\'s ACL does not let this user read ' + refused.join(' and ') +
          (own.get(FEED + '#') === false ? ': no live figures, clients or alerts.' : '.') +
          ' The topic tree shows the topics this user may read.' : '';
        setState('live', 'live');
        S.onLive.forEach((f) => f());
      });
      if (filter) c.subscribe(filter, TREE_SUB, (_err, _subs, suback) => noteGranted([filter], suback));
      else watch($('#filter').value.trim()); // the default filter from the first login
      checkAdmin();
    });
    c.on('message', onMessage);
    c.on('error', (err) => {
      if (c !== client) return;
      // 0x86 bad user name or password, 0x87 not authorized (v5); 4 and 5 (v3)
      if ([134, 135, 4, 5].includes(err.code)) return logout('Login refused: ' + err.message);
      setState('error', 'error: ' + err.message);
    });
    c.on('offline', () => { if (c === client) setState('offline', 'offline, retrying'); });
  }

  function logout(message) {
    if (client) client.end(true);
    client = null;
    auth = '';
    setAdmin(null, '');
    overviewAt = 0;
    S.onLogout.forEach((f) => f());
    setState('logged-out', 'logged out');
    $('#app').hidden = true;
    $('#logout').hidden = true;
    $('#login').hidden = false;
    $('#login-error').textContent = message;
  }

  function onMessage(topic, payload, packet) {
    if (topic.startsWith(FEED)) {
      let v;
      try { v = JSON.parse(payload.toString()); } catch { return; }
      if (topic === FEED + 'overview') overview(v);
      else if (topic === FEED + 'clients') clients(v);
      else if (topic === FEED + 'top') top(v);
      else if (topic === FEED + 'topics') topicRates(v);
      else if (topic === FEED + 'sessions') sessions(v);
      else if (topic === FEED + 'alerts') alerts(v);
      else if (topic === FEED + 'trace') trace(v);
      else if (S.feeds[topic.slice(FEED.length)]) S.feeds[topic.slice(FEED.length)](v);
    } else if (topic.startsWith(SYS)) {
      sys.set(topic.slice(SYS.length), payload.toString());
    }
    if (filter && matches(filter, topic)) seen(topic, payload, packet.retain);
    S.onMessage.forEach((f) => f(topic, payload, packet));
  }

  // noteGranted records which of the page's subscriptions the broker
  // granted, from the SUBACK's reason codes in the order of the filters
  // (128 or more refused it).
  function noteGranted(filters, suback) {
    const codes = (suback && suback.granted) || [];
    filters.forEach((f, i) => { if (codes[i] !== undefined) own.set(f, (codes[i] & 128) === 0); });
  }

  // ---- overview and chart ----
  const fmt = (n) => (n >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString('en') : n.toFixed(1));

  function overview(o) {
    $('#m-connected').textContent = fmt(o.clients_connected);
    $('#m-sessions').textContent = fmt(o.sessions);
    $('#m-in').textContent = fmt(o.messages_received_per_second);
    $('#m-out').textContent = fmt(o.messages_sent_per_second);
    $('#m-dropped').textContent = fmt(o.messages_dropped_per_second);
    const q = o.queued_bytes || 0;
    const bound = o.max_queued_bytes ? ' of ' + fmtBytes(o.max_queued_bytes) : '';
    $('#m-queued').textContent = fmtBytes(q) + bound + ' · ' + fmt(o.holds_per_second || 0);
    $('#m-queued').classList.toggle('bad', !!o.max_queued_bytes && q > o.max_queued_bytes * 0.8);
    // The broker counts every session's subscriptions; this page's own
    // are left out, as the Retained card leaves out the $SYS tree.
    const mine = [...own.values()].filter(Boolean).length;
    $('#m-subs').textContent = fmt(Math.max(0, o.subscriptions - mine));
    $('#m-subs').title = `not counting this page's own ${mine}`;
    $('#m-retained').textContent = fmt(o.retained);
    $('#version').textContent = 'starling ' + (o.version || '');
    $('#uptime').textContent = 'up ' + duration(o.uptime_seconds);
    const cl = $('#cluster');
    if (o.cluster) {
      const up = (o.cluster.peers || []).length + 1;
      cl.hidden = false;
      cl.textContent = 'node ' + o.cluster.node + ' · ' + up + '/' + o.cluster.expected_nodes + ' nodes' +
        (o.cluster.ready ? '' : ' · syncing');
      cl.dataset.state = up < o.cluster.expected_nodes || !o.cluster.ready ? 'degraded' : 'ok';
      cl.title = 'cluster ' + o.cluster.name + ': ' + [o.cluster.node].concat(o.cluster.peers || []).join(', ');
    } else {
      cl.hidden = true;
    }
    overviewAt = Date.now();
    freshness();
    if (Date.now() - ratesAt > 1500) renderTree(); // else with the next rates
    renderSys();
    countSubscribers();
    S.onOverview.forEach((f) => f(o));
  }

  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  }

  // freshness greys out the figures when no overview came for
  // STALE_AFTER (the broker is down or the connection lost): they are the
  // last known, not the current ones. It runs with each overview and
  // every second.
  function freshness() {
    const stale = !!overviewAt && Date.now() - overviewAt > STALE_AFTER;
    $('#app').classList.toggle('stale', stale);
    $('#stale-note').hidden = !stale;
    if (stale) $('#stale-note').textContent = 'no figures from the broker since ' + new Date(overviewAt).toLocaleTimeString() +
      ': the values shown are the last known';
    S.onTick.forEach((f) => f());
    // The tree is drawn with each overview; without them (the ACL keeps
    // this login from the feeds, or the broker is away) once a second.
    if (client && filter && Date.now() - overviewAt > 1500 && Date.now() - ratesAt > 1500) renderTree();
  }
  setInterval(freshness, 1000);

  // ---- clients ----
  const PROTO = { 3: '3.1', 4: '3.1.1', 5: '5' };

  function clients(v) {
    const tbody = el('tbody');
    for (const c of v.connected) {
      const tr = el('tr');
      tr.dataset.clientId = c.client_id;
      const d = c.dropped || {};
      const f = c.flow || {};
      const dropped = (d.queue_full || 0) + (d.expired || 0) + (d.too_large || 0) + (f.dropped || 0);
      const held = f.held_seconds ? f.held_seconds.toFixed(1) + ' s' : '0';
      for (const [cls, x] of [['id', c.client_id], ['remote', c.remote || ''], ['proto', PROTO[c.protocol_version] || c.protocol_version],
        ['tls', c.tls ? (c.tls_version || 'TLS') + (c.client_cert ? ' · ' + c.client_cert : '') : 'no'],
        ['keepalive', c.keep_alive ? c.keep_alive + ' s' : 'off'],
        ['subs', c.subscriptions], ['inflight', c.inflight], ['queued', c.queued], ['held', held], ['dropped', dropped]]) {
        tr.append(el('td', cls, String(x)));
      }
      const dtd = tr.lastChild;
      dtd.title = `queue full ${d.queue_full || 0}, expired ${d.expired || 0}, too large ${d.too_large || 0}, ` +
        `slow-consumer policy ${f.dropped || 0} (${f.policy_actions || 0} actions), replaced by newer ${f.conflated || 0}`;
      if (dropped) dtd.classList.add('bad');
      const itd = tr.querySelector('td.inflight');
      if (c.inflight_window) itd.title = `of its window ${c.inflight_window} (its Receive Maximum, or max_inflight if smaller)`;
      if (c.inflight_window && c.inflight >= c.inflight_window) itd.classList.add('bad');
      const htd = dtd.previousSibling;
      htd.title = 'time publishers were held back because this client\'s queue was full';
      if (f.shedding || f.policy_actions) htd.classList.add('bad');
      if (c.dashboard) markDashboard(tr.firstChild, c.client_id);
      const kick = el('button', 'kick', 'Disconnect');
      kick.type = 'button';
      kick.dataset.clientId = c.client_id;
      const td = el('td');
      td.append(kick);
      tr.append(td);
      tbody.append(tr);
    }
    $('#clients tbody').replaceWith(tbody);
    $('#clients-note').textContent = v.truncated ? `first ${v.connected.length} shown` : `${v.connected.length}`;
    const ul = el('ul', 'events');
    ul.id = 'events';
    for (const e of v.events) {
      const li = el('li', e.event);
      li.dataset.clientId = e.client_id;
      li.append(el('time', '', new Date(e.t).toLocaleTimeString()), ' ',
        el('span', 'what', e.event), ' ', el('code', '', e.client_id), ' ', el('span', 'meta', e.remote || ''));
      ul.append(li);
    }
    $('#events').replaceWith(ul);
  }

  // Disconnect a client through the management API, with the login's
  // credentials (the API answers 403 when no admin credentials are set).
  $('#clients').addEventListener('click', async (ev) => {
    const id = ev.target.dataset && ev.target.dataset.clientId;
    if (!id || !ev.target.classList.contains('kick')) return;
    const note = $('#action-status');
    note.textContent = 'disconnecting ' + id + '…';
    try {
      const body = await api('POST', 'clients/' + encodeURIComponent(id) + '/kick');
      note.textContent = body.kicked ? 'disconnected ' + id : id + ' was not connected';
    } catch (e) {
      note.textContent = 'could not disconnect ' + id + ': ' + e.message;
    }
  });

  // ---- topic tree ----
  // The tree shows each topic's latest value: sampled delivery (the broker
  // sends the newest message of a topic at most once a second), so an open
  // dashboard does not double the broker's output.
  const TREE_SUB = { qos: 0, rap: true, properties: { userProperties: { 'latest-value': '1s' } } };
  $('#topic-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    watch($('#filter').value.trim());
  });

  // watch makes f the tree's filter, replacing the previous one.
  function watch(f) {
    if (!validFilter(f)) return ($('#topic-status').textContent = 'not a valid topic filter');
    if (client && filter && client.connected) {
      client.unsubscribe(filter);
      own.delete(filter);
    }
    filter = f;
    topics = new Map();
    topicsFull = false;
    $('#topic-status').textContent = 'watching ' + f;
    if (client && client.connected) client.subscribe(f, TREE_SUB, (_err, _subs, suback) => noteGranted([f], suback));
    renderTree();
  }

  function validFilter(f) {
    if (!f || f.length > 65535) return false;
    const lv = f.split('/');
    return lv.every((l, i) => (l === '#' ? i === lv.length - 1 : !l.includes('#') && (l === '+' || !l.includes('+'))));
  }

  // matches is MQTT topic matching; a wildcard first level does not match
  // $-topics [MQTT-4.7.2-1].
  function matches(f, topic) {
    const fl = f.split('/'), tl = topic.split('/');
    if (topic.startsWith('$') && (fl[0] === '#' || fl[0] === '+')) return false;
    for (let i = 0; i < fl.length; i++) {
      if (fl[i] === '#') return true;
      if (i >= tl.length || (fl[i] !== '+' && fl[i] !== tl[i])) return false;
    }
    return fl.length === tl.length;
  }

  // topicRates keeps the broker's per-topic rates of the last interval; a
  // topic not in the feed had no message then.
  function topicRates(v) {
    rates = new Map(v.topics.map((t) => [t.topic, { m: t.messages_per_second, b: t.bytes_per_second }]));
    ratesTruncated = v.truncated;
    ratesAt = Date.now();
    renderTree();
  }

  function seen(topic, payload, retained) {
    let t = topics.get(topic);
    if (!t) {
      if (topics.size >= MAX_TOPICS) { topicsFull = true; return; }
      t = { count: 0, raw: null, size: 0, view: null, retained: false, subs: undefined };
      topics.set(topic, t);
    }
    t.count++;
    // A copy of the first bytes: the message's buffer is not ours to keep.
    t.raw = new Uint8Array(payload.subarray(0, PAYLOAD_KEEP));
    t.size = payload.length;
    t.view = null; // rendered again when next shown
    // The subscription keeps the retain flag as published (rap): a
    // retained message sets the badge, an empty one (a delete) clears it,
    // a plain message leaves it: the broker still holds the retained one.
    if (retained) t.retained = payload.length > 0;
  }

  const clip = (s, n) => (s.length > n ? s.slice(0, n) + '…' : s);
  const hex2 = (c) => c.toString(16).padStart(2, '0');

  // oneLine shows control characters as escapes, so a payload stays on one line.
  const oneLine = (s) => s.replace(/[\u0000-\u001f\u007f]/g, (c) =>
    ({ '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c] || '\\x' + hex2(c.charCodeAt(0)));

  // payloadView renders a topic's last payload once: JSON objects and
  // arrays pretty-printed, other UTF-8 text on one line, anything else as
  // printable ASCII and \xNN escapes; always cut to a bounded length. The
  // result goes into the page as text (textContent), never as HTML.
  function payloadView(t) {
    if (t.view) return t.view;
    const cut = t.size > t.raw.length;
    let text = null;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(t.raw, { stream: cut }); // a cut may end mid-character
    } catch { /* not UTF-8 */ }
    let view = null;
    if (text !== null && !cut && /^\s*[[{]/.test(text)) {
      try {
        view = { json: true, text: clip(JSON.stringify(JSON.parse(text), null, 2), PRETTY_MAX) };
      } catch { /* not JSON */ }
    }
    if (!view) {
      let shown;
      if (text !== null) shown = oneLine(text.slice(0, PAYLOAD_SHOWN));
      else shown = Array.from(t.raw.subarray(0, PAYLOAD_SHOWN), (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '\\x' + hex2(b))).join('');
      const more = cut || (text !== null ? text.length > PAYLOAD_SHOWN : t.raw.length > PAYLOAD_SHOWN);
      view = { json: false, text: shown + (more ? '…' : '') };
    }
    t.view = view;
    return view;
  }

  // countSubscribers asks the broker, every SUBS_EVERY ms at most, how
  // many subscriptions match each topic of the tree, this page's own left
  // out (the management API reads the broker's subscription index).
  let subsAt = 0, subsBusy = false, subsNote = '';
  async function countSubscribers() {
    if (subsBusy || !admin || !topics.size || Date.now() - subsAt < SUBS_EVERY) return;
    subsBusy = true;
    subsAt = Date.now();
    const asked = topics;
    try {
      const v = await api('POST', 'subscribers', { topics: [...asked.keys()], except_client: clientID });
      for (const [name, n] of Object.entries(v.subscribers)) {
        const t = asked.get(name);
        if (t) t.subs = n;
      }
      subsNote = '';
      if (asked === topics) renderTree();
    } catch (e) {
      subsAt = Date.now() + 8 * SUBS_EVERY; // the API may be off: ask less often
      subsNote = 'subscriber counts unavailable: ' + e.message;
    } finally {
      subsBusy = false;
    }
  }

  const fmtBytes = (n) => (n >= 1e6 ? fmt(n / 1e6) + ' MB' : n >= 1e3 ? fmt(n / 1e3) + ' kB' : fmt(n) + ' B');

  // sumRates adds up the rates of a node and everything under it.
  function sumRates(node) {
    const r = node.stat ? rates.get(node.path) : undefined;
    let m = r ? r.m : 0, b = r ? r.b : 0;
    for (const child of node.children.values()) {
      const s = sumRates(child);
      m += s.m;
      b += s.b;
    }
    node.sum = { m, b };
    return node.sum;
  }

  // rateSpans shows a node's rates; data-rate and data-bytes hold the
  // exact figures.
  function rateSpans(r, total) {
    const known = r || (!ratesTruncated && ratesAt > 0); // no topics feed yet: unknown, not 0
    const m = r ? r.m : 0, b = r ? r.b : 0;
    const rs = el('span', total ? 'rate total' : 'rate', (total ? 'Σ ' : '') + (known ? fmt(m) : '–') + ' msg/s');
    const bs = el('span', total ? 'bytes total' : 'bytes', (known ? fmtBytes(b) : '–') + '/s');
    rs.dataset.rate = bs.dataset.rate = m;
    rs.dataset.bytes = bs.dataset.bytes = b;
    if (total) rs.title = bs.title = 'sum over this topic and the topics under it';
    return [rs, bs];
  }

  function renderTree() {
    const root = { children: new Map() };
    for (const [topic, t] of topics) {
      let node = root;
      let path = '';
      for (const level of topic.split('/')) {
        path = path === '' && node === root ? level : path + '/' + level;
        if (!node.children.has(level)) node.children.set(level, { path, children: new Map(), stat: null });
        node = node.children.get(level);
      }
      node.stat = t;
    }
    const ul = el('ul', 'tree');
    ul.id = 'tree';
    const build = (parent, node) => {
      for (const [name, child] of [...node.children].sort((a, b) => a[0].localeCompare(b[0]))) {
        const li = el('li');
        li.dataset.topic = child.path;
        const row = el('div', 'row');
        row.append(el('span', 'name', name === '' ? '(empty)' : name));
        if (child.children.size) row.append(...rateSpans(child.sum, true));
        if (child.stat) {
          const s = child.stat;
          row.append(...rateSpans(rates.get(child.path), false), el('span', 'count', s.count + ' msgs'));
          if (s.subs !== undefined) {
            const subs = el('span', 'subs', s.subs + (s.subs === 1 ? ' subscriber' : ' subscribers'));
            subs.title = 'subscriptions on this broker whose filter matches the topic, this page\'s own not counted';
            row.append(subs);
          }
          if (s.retained) row.append(el('span', 'badge', 'retained'));
          const p = payloadView(s);
          row.append(p.json ? el('pre', 'payload json', p.text) : el('code', 'payload', p.text));
        }
        li.append(row);
        if (child.children.size) {
          const sub = el('ul');
          build(sub, child);
          li.append(sub);
        }
        parent.append(li);
      }
    };
    sumRates(root);
    build(ul, root);
    $('#tree').replaceWith(ul);
    if (filter) $('#topic-status').textContent = `watching ${filter}: ${topics.size} topics` + (topicsFull ? ` (limit ${MAX_TOPICS} reached)` : '') +
      (subsNote ? ' · ' + subsNote : '');
  }

  // ---- management API ----
  const NOT_ADMIN = 'this user is not an admin';

  // api calls the management API with the login's credentials and returns
  // the decoded answer; an error carries the API's message. The
  // X-Requested-With header makes the API answer a refused login with a
  // plain 401, without the challenge that would bring up the browser's
  // own password prompt over the page.
  async function api(method, path, body) {
    if (admin === false) throw new Error(NOT_ADMIN);
    const opts = { method, headers: { Authorization: auth, 'X-Requested-With': 'starling-dashboard' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch('api/v1/' + path, opts);
    const j = await r.json().catch(() => ({}));
    if (r.status === 401 && auth) {
      setAdmin(false, NOT_ADMIN);
      throw new Error(NOT_ADMIN);
    }
    if (!r.ok) throw new Error(j.error || 'HTTP ' + r.status);
    return j;
  }

  // checkAdmin asks the management API once after a login whether the
  // user is an admin. A user who is not still sees the live views, as far
  // as the broker's ACL lets them read; the actions say why they are off.
  async function checkAdmin() {
    const mine = auth;
    try {
      await api('GET', 'stats');
      if (mine === auth) setAdmin(true, '');
      browseRetained();
    } catch (e) {
      if (mine !== auth || admin === false) return;
      // The API may be off (403) or unreachable: the actions say so when used.
      setAdmin(null, 'management API unavailable: ' + e.message);
    }
  }

  // setAdmin records whether the login may use the management API and
  // shows why not.
  function setAdmin(v, why) {
    admin = v;
    document.body.dataset.admin = v === true ? 'yes' : v === false ? 'no' : '';
    const n = $('#admin-note');
    n.hidden = !why;
    n.textContent = v === false
      ? 'Logged in as ' + (user || '(no user name)') + ', but this user is not an admin: the live views show what the broker lets this user read; ' +
        'disconnecting clients, publishing here, retained messages, lookups, traces and subscriber counts need an admin login.'
      : why;
    if (v === false) {
      $('#retained-status').textContent = NOT_ADMIN;
      fill('#retained', [], NOT_ADMIN);
    }
  }

  // row builds a table row of text cells; numbers get the num class.
  function row(cells, data) {
    const tr = el('tr');
    for (const [k, v] of Object.entries(data || {})) tr.dataset[k] = v;
    for (const c of cells) {
      if (c instanceof Node) { const td = el('td'); td.append(c); tr.append(td); continue; }
      tr.append(el('td', typeof c === 'number' ? 'num' : '', typeof c === 'number' ? fmt(c) : String(c)));
    }
    return tr;
  }

  function fill(sel, rows, empty) {
    const tbody = el('tbody');
    for (const r of rows) tbody.append(r);
    if (!rows.length && empty) {
      const tr = el('tr');
      const td = el('td', 'meta', empty);
      td.colSpan = 8;
      tr.append(td);
      tbody.append(tr);
    }
    $(sel + ' tbody').replaceWith(tbody);
  }

  // ---- top topics and clients ----
  function top(v) {
    fill('#top-topics', v.topics.map((t) => row([t.topic, t.messages_per_second, t.bytes_per_second, t.deliveries_per_second], { topic: t.topic }))
      .concat(v.other ? [row(['(other topics)', v.other.messages_per_second, v.other.bytes_per_second, v.other.deliveries_per_second])] : []),
    'no messages');
    fill('#top-clients', v.clients.map((c) => {
      const tr = row([c.client_id, c.messages_in_per_second, c.bytes_in_per_second,
        c.messages_out_per_second, c.bytes_out_per_second], { clientId: c.client_id });
      if (c.dashboard) markDashboard(tr.firstChild, c.client_id);
      return tr;
    }), 'no traffic');
    $('#top-note').textContent = `per second, over the last ${fmt(v.interval_seconds)} s`;
  }

  // markDashboard tags a client cell as a dashboard's own connection (the
  // broker marks client IDs starting starling-dashboard-), so its load is
  // not mistaken for a device's.
  function markDashboard(td, id) {
    const b = el('span', 'badge dashboard', id === clientID ? 'this page' : 'dashboard');
    b.title = 'the dashboard\'s own MQTT connection: its feeds and sampled topic tree';
    td.append(' ', b);
  }

  // ---- sessions, shared groups, who receives ----
  function sessions(v) {
    fill('#sessions', v.sessions.map((s) => row([s.client_id, s.connected ? 'connected' : 'offline', s.session_expiry_interval,
      s.subscriptions, s.inflight, s.queued], { clientId: s.client_id })));
    $('#sessions-note').textContent = v.truncated ? `first ${v.sessions.length} of ${v.total}` : String(v.total);
    const ul = el('ul', 'events');
    ul.id = 'shared';
    for (const g of v.shared) {
      const li = el('li');
      li.dataset.group = g.group;
      li.append(el('code', 'what', '$share/' + g.group + '/' + g.filter), ' ',
        el('span', 'meta', g.members.map((m) => m.client_id + (m.connected ? '' : ' (offline)')).join(', ')));
      ul.append(li);
    }
    if (!v.shared.length) ul.append(el('li', 'meta', 'none'));
    $('#shared').replaceWith(ul);
  }

  $('#lookup-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = $('#lookup-topic').value.trim();
    const note = $('#lookup-status');
    try {
      const v = await api('GET', 'receivers?topic=' + encodeURIComponent(t));
      fill('#lookup', v.receivers.map((r) => row([r.client_id, r.filter, r.share_group || '', r.qos,
        r.connected ? 'yes' : 'no', r.allowed ? 'allowed' : 'denied'], { clientId: r.client_id })));
      note.textContent = `${t}: ${v.deliveries} ${v.deliveries === 1 ? 'delivery' : 'deliveries'}` +
        (v.receivers.some((r) => r.share_group) ? ' (one member per share group)' : '');
    } catch (e) {
      fill('#lookup', []);
      note.textContent = 'lookup failed: ' + e.message;
    }
  });

  // ---- alerts ----
  let alertsSeen = 0;
  function alerts(v) {
    const ul = el('ul', 'events');
    ul.id = 'alerts';
    for (const a of v.alerts) {
      const li = el('li', a.kind + (a.acked ? ' acked' : ''));
      li.dataset.kind = a.kind;
      if (a.client_id) li.dataset.clientId = a.client_id;
      li.append(el('time', '', new Date(a.t).toLocaleTimeString()), ' ', el('span', 'what', a.kind.replace('_', ' ')), ' ',
        el('code', '', a.client_id || ''), ' ', el('span', 'meta', a.detail));
      // One entry per client and kind: how often, since when, how many dropped.
      if (a.times > 1) {
        li.append(' ', el('span', 'times', `${a.times}× since ${new Date(a.first).toLocaleTimeString()}` +
          (a.count ? `, ${a.count.toLocaleString('en')} dropped in all` : '')));
      }
      if (a.acked) {
        li.append(' ', el('span', 'badge acked', 'acknowledged'));
      } else {
        const b = el('button', 'ack small', 'Acknowledge');
        b.type = 'button';
        b.dataset.kind = a.kind;
        b.dataset.client = a.client_id || '';
        li.append(' ', b);
      }
      ul.append(li);
    }
    if (!v.alerts.length) ul.append(el('li', 'meta', 'none'));
    $('#alerts').replaceWith(ul);
    const fresh = v.alerts.filter((a) => a.t > alertsSeen && !a.acked).length;
    $('#alert-count').textContent = fresh ? String(fresh) : '';
  }
  // Acknowledge one alert, or all: the broker keeps the mark while the
  // alert goes on being raised, and drops it when it comes back later.
  async function ack(body, what) {
    try {
      const v = await api('POST', 'alerts/ack', body);
      $('#ack-status').textContent = `acknowledged ${v.acknowledged} ${what}`;
    } catch (e) {
      $('#ack-status').textContent = 'could not acknowledge: ' + e.message;
    }
  }
  $('#v-alerts').addEventListener('click', (ev) => {
    const b = ev.target.closest('button.ack');
    if (!b) return;
    if (b.id === 'ack-all') return ack({}, 'alerts');
    b.disabled = true;
    ack(b.dataset.client ? { kind: b.dataset.kind, client_id: b.dataset.client } : { kind: b.dataset.kind }, b.dataset.kind.replace('_', ' '));
  });
  document.querySelector('a[href="#v-alerts"]').addEventListener('click', () => {
    alertsSeen = Date.now();
    $('#alert-count').textContent = '';
  });

  // ---- publish ----
  $('#publish-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const note = $('#publish-status');
    const body = {
      topic: $('#pub-topic').value.trim(),
      payload: $('#pub-payload').value,
      qos: Number($('#pub-qos').value),
      retain: $('#pub-retain').checked,
    };
    const opt = (k, v) => { if (v) body[k] = v; };
    opt('content_type', $('#pub-content-type').value.trim());
    opt('response_topic', $('#pub-response-topic').value.trim());
    opt('correlation_data', $('#pub-correlation').value);
    opt('message_expiry_interval', Number($('#pub-expiry').value) || 0);
    if ($('#pub-utf8').checked) body.payload_format = 1;
    const ups = $('#pub-user').value.split('\n').map((l) => l.trim()).filter(Boolean);
    if (ups.length) {
      body.user_properties = ups.map((l) => {
        const i = l.indexOf('=');
        return i < 0 ? { key: l, value: '' } : { key: l.slice(0, i).trim(), value: l.slice(i + 1).trim() };
      });
    }
    try {
      const v = await api('POST', 'publish', body);
      note.textContent = `published to ${body.topic}: ${v.delivered} ${v.delivered === 1 ? 'session' : 'sessions'}`;
      if (body.retain) browseRetained();
    } catch (e) {
      note.textContent = 'publish failed: ' + e.message;
    }
  });

  // ---- retained messages ----
  $('#retained-form').addEventListener('submit', (ev) => { ev.preventDefault(); browseRetained(); });

  async function browseRetained() {
    const f = $('#retained-filter').value.trim() || '#';
    const note = $('#retained-status');
    try {
      const v = await api('GET', 'retained?limit=200&filter=' + encodeURIComponent(f));
      fill('#retained', v.retained.map((m) => {
        const del = el('button', 'delete', 'Delete');
        del.type = 'button';
        del.dataset.topic = m.topic;
        const p = m.payload !== undefined ? m.payload : 'base64:' + m.payload_base64;
        return row([m.topic, p.length > 200 ? p.slice(0, 200) + '…' : p, m.qos, del], { topic: m.topic });
      }), 'none');
      $('#retained tbody').querySelectorAll('td:nth-child(2)').forEach((td) => td.classList.add('payload'));
      note.textContent = `${v.retained.length}${v.truncated ? '+' : ''} on ${f}`;
    } catch (e) {
      note.textContent = 'browse failed: ' + e.message;
    }
  }

  $('#retained').addEventListener('click', async (ev) => {
    const t = ev.target.dataset && ev.target.dataset.topic;
    if (t === undefined || !ev.target.classList.contains('delete')) return;
    const note = $('#retained-status');
    try {
      await api('DELETE', 'retained/' + encodeURIComponent(t));
      note.textContent = 'deleted ' + t;
      await browseRetained();
      note.textContent = 'deleted ' + t;
    } catch (e) {
      note.textContent = 'could not delete ' + t + ': ' + e.message;
    }
  });

  // ---- trace ----
  const MAX_TRACE = 200; // rows kept on the page
  $('#trace-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const kind = $('#trace-kind').value, target = $('#trace-target').value.trim();
    const note = $('#trace-status');
    try {
      await api('POST', 'trace', { [kind]: target });
      $('#trace tbody').replaceChildren();
      note.textContent = 'tracing ' + (kind === 'topic' ? 'topic ' : 'client ') + target;
    } catch (e) {
      note.textContent = 'trace failed: ' + e.message;
    }
  });
  $('#trace-stop').addEventListener('click', async () => {
    try {
      await api('DELETE', 'trace');
      $('#trace-status').textContent = 'stopped';
    } catch (e) {
      $('#trace-status').textContent = 'stop failed: ' + e.message;
    }
  });

  function trace(v) {
    const tbody = $('#trace tbody');
    for (const e of v.events) {
      const p = e.payload !== undefined ? e.payload : e.payload_base64 ? 'base64:' + e.payload_base64 : '';
      const tr = row([new Date(e.t).toLocaleTimeString(), e.client_id || '', e.direction === 'in' ? '→' : '←', e.type,
        e.topic || '', e.qos, e.size, p], { type: e.type, direction: e.direction, topic: e.topic || '' });
      tr.children[2].className = e.direction;
      tr.children[2].title = e.direction === 'in' ? 'from the client' : 'to the client';
      tr.children[7].classList.add('payload');
      tbody.prepend(tr);
    }
    while (tbody.children.length > MAX_TRACE) tbody.lastChild.remove();
    const notes = [];
    if (v.dropped) notes.push(`${v.dropped} packets not shown (rate limit)`);
    if (v.dashboard_hidden) notes.push(`${v.dashboard_hidden} packets of dashboards left out`);
    if (notes.length) $('#trace-status').textContent = notes.join(' · ');
  }

  Object.assign(S, { api, el, $, fmt, fmtBytes, row, fill, duration, markDashboard, PROTO, validFilter, payloadView,
    clientID: () => clientID, client: () => client, admin: () => admin });

  function renderSys() {
    const tbody = el('tbody');
    for (const k of [...sys.keys()].sort()) {
      const tr = el('tr');
      tr.append(el('td', '', k), el('td', '', sys.get(k)));
      tbody.append(tr);
    }
    $('#sys tbody').replaceWith(tbody);
  }
})();
