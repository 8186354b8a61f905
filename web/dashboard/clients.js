// Starling dashboard: client search and the client page. The search runs
// in the broker over every session (GET /api/v1/clients?q=...), a page at
// a time; the page shows one session as GET /api/v1/clients/{id} gives
// it, refreshed every 2 seconds while open, with Disconnect and Delete.
'use strict';
(() => {
  const S = window.starling;
  const { $, el } = S;
  const PAGE = 50;
  const REFRESH = 2000;
  let offset = 0, total = 0, shown = null, timer = 0, armed = false;
  // searches counts the searches started: only the newest one's answer is
  // shown. Clicking Next quickly starts several, and their answers may
  // come back in any order: an older page's rows under the newest offset
  // read "201–250 of 230".
  let searches = 0;

  $('#client-search-form').addEventListener('submit', (ev) => { ev.preventDefault(); offset = 0; search(); });
  $('#client-prev').addEventListener('click', () => { offset = Math.max(0, offset - PAGE); search(); });
  $('#client-next').addEventListener('click', () => { offset += PAGE; search(); });

  async function search() {
    const mine = ++searches, at = offset;
    const q = $('#client-q').value.trim();
    const state = $('#client-state').value;
    const note = $('#client-search-status');
    let path = `clients?limit=${PAGE}&offset=${at}&q=${encodeURIComponent(q)}`;
    if (state) path += '&connected=' + state;
    try {
      const v = await S.api('GET', path);
      if (mine !== searches) return; // a newer search's answer will be shown
      total = v.total;
      S.fill('#client-results', v.clients.map((c) => {
        const open = el('button', 'link', c.client_id);
        open.type = 'button';
        open.dataset.open = c.client_id;
        const tr = S.row([open, c.connected ? 'connected' : 'offline', c.username || '', c.remote || '',
          S.PROTO[c.protocol_version] || String(c.protocol_version || ''), c.subscriptions.length, c.queued], { clientId: c.client_id });
        if (c.client_id.startsWith('starling-dashboard-')) S.markDashboard(tr.firstChild, c.client_id);
        return tr;
      }), 'no client matches');
      note.textContent = total ? `${at + 1}–${at + v.clients.length} of ${total.toLocaleString('en')}` : 'no match';
      $('#client-prev').disabled = at === 0;
      $('#client-next').disabled = at + v.clients.length >= total;
    } catch (e) {
      if (mine === searches) note.textContent = 'search failed: ' + e.message;
    }
  }

  // A client ID in the search results or the connected clients opens its page.
  const opener = (ev) => {
    const b = ev.target.closest('[data-open]');
    if (b) return open(b.dataset.open);
    const td = ev.target.closest('#clients td.id');
    if (td) open(td.parentElement.dataset.clientId);
  };
  $('#client-results').addEventListener('click', opener);
  $('#clients').addEventListener('click', opener);
  $('#cp-close').addEventListener('click', () => { shown = null; clearInterval(timer); $('#v-client').hidden = true; });
  S.onLogout.push(() => { shown = null; clearInterval(timer); $('#v-client').hidden = true; });
  S.openClient = open;

  function open(id) {
    shown = id;
    armed = false;
    $('#cp-delete').textContent = 'Delete session';
    $('#v-client').hidden = false;
    $('#cp-id').textContent = id;
    $('#cp-status').textContent = 'loading…';
    clearInterval(timer);
    timer = setInterval(load, REFRESH);
    load().then(() => $('#v-client').scrollIntoView({ block: 'start' }));
  }

  const secs = (s) => (s === 4294967295 ? 'never expires' : s ? S.duration(s) : 'ends with the connection');
  const when = (t) => (t ? new Date(t).toLocaleString() : '');

  async function load() {
    const id = shown;
    if (!id) return;
    let c;
    try {
      c = await S.api('GET', 'clients/' + encodeURIComponent(id));
    } catch (e) {
      if (id === shown) $('#cp-status').textContent = e.message === 'no such client' ? 'no such session (ended or deleted)' : 'could not load: ' + e.message;
      $('#v-client').dataset.state = 'gone';
      return;
    }
    if (id !== shown) return;
    $('#v-client').dataset.state = c.connected ? 'connected' : 'offline';
    $('#cp-state').textContent = c.connected ? 'connected' : 'offline';
    $('#cp-status').textContent = 'updated ' + new Date().toLocaleTimeString();
    const f = c.flow || {}, d = c.dropped || {};
    const facts = [
      ['Protocol', 'MQTT ' + (S.PROTO[c.protocol_version] || c.protocol_version)],
      ['Listener', c.listener || '–'],
      ['Address', c.remote || '–'],
      ['User', c.username || '–'],
      ['TLS', c.tls ? (c.tls_version || 'yes') + (c.client_cert ? ' · ' + c.client_cert : '') : 'no'],
      ['Keep alive', c.keep_alive ? c.keep_alive + ' s' : 'off'],
      ['Connected at', when(c.connected_at) || '–'],
      ['Session expiry', secs(c.session_expiry_interval) + (c.persistent ? ' · persistent' : '')],
      ['Inflight', `${c.inflight} of ${c.inflight_window || '?'}` + (c.receive_maximum ? ` (Receive Maximum ${c.receive_maximum})` : '')],
      ['Queued', String(c.queued)],
      ['Held publishers', (f.held_seconds || 0).toFixed(1) + ' s'],
      ['Policy actions', String(f.policy_actions || 0) + (f.shedding ? ' · shedding now' : '')],
      ['Dropped', `queue full ${d.queue_full || 0}, expired ${d.expired || 0}, too large ${d.too_large || 0}, by policy ${f.dropped || 0}`],
      ['Replaced by newer', String(f.conflated || 0)],
      ['Will', c.will ? `${c.will.topic} · QoS ${c.will.qos}${c.will.retain ? ' · retained' : ''} · ${c.will.payload_bytes} B` +
        (c.will.delay_seconds ? ` · delay ${c.will.delay_seconds} s` : '') : 'none'],
      ['Last disconnect', c.disconnect_reason ? `${c.disconnect_reason} (${when(c.disconnected_at)})` : '–'],
    ];
    const dl = el('dl', 'facts');
    dl.id = 'cp-facts';
    for (const [k, v] of facts) {
      const div = el('div');
      div.dataset.fact = k;
      div.append(el('dt', '', k), el('dd', '', v));
      dl.append(div);
    }
    $('#cp-facts').replaceWith(dl);
    const RH = ['send retained', 'if new', 'never'];
    S.fill('#cp-subs', c.subscriptions.map((s) => S.row([s.filter, s.qos, s.no_local ? 'yes' : 'no', s.retain_as_published ? 'yes' : 'no',
      RH[s.retain_handling || 0], s.subscription_id || '', s.latest_value ? 'latest value' : s.sample ? 'sampled ' + s.sample : 'all'],
    { filter: s.filter })), 'none');
    $('#cp-kick').disabled = !c.connected;
  }

  $('#cp-kick').addEventListener('click', async () => {
    const id = shown;
    try {
      const v = await S.api('POST', 'clients/' + encodeURIComponent(id) + '/kick');
      $('#cp-status').textContent = v.kicked ? 'disconnected ' + id : id + ' was not connected';
      load();
    } catch (e) {
      $('#cp-status').textContent = 'could not disconnect: ' + e.message;
    }
  });

  // Delete asks once more on the button itself (no dialog to block the page).
  $('#cp-delete').addEventListener('click', async () => {
    const id = shown;
    if (!armed) {
      armed = true;
      $('#cp-delete').textContent = 'Confirm: delete session';
      return;
    }
    armed = false;
    $('#cp-delete').textContent = 'Delete session';
    try {
      await S.api('DELETE', 'clients/' + encodeURIComponent(id));
      $('#cp-status').textContent = 'session deleted';
      $('#v-client').dataset.state = 'deleted';
      clearInterval(timer);
      shown = null;
    } catch (e) {
      $('#cp-status').textContent = 'could not delete: ' + e.message;
    }
  });
})();
