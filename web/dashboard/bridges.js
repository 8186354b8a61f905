// Starling dashboard: the bridges view. Bridges to other brokers report
// their state through the management API (GET /api/v1/bridges), polled
// every 2 seconds while logged in: each bridge's remote, whether it is
// connected, the messages queued for it, sent, received and dropped, and
// its last error. A bridge that is down is also named on the overview.
'use strict';
(() => {
  const S = window.starling;
  const { $, el } = S;
  const REFRESH = 2000;
  let timer = 0, mine = 0;

  S.onLive.push(() => { clearInterval(timer); timer = setInterval(load, REFRESH); load(); });
  S.onLogout.push(() => {
    clearInterval(timer);
    timer = 0;
    mine++; // an answer still on its way is for the previous login
    $('#bridge-summary').textContent = 'waiting for the broker';
    S.fill('#bridges', [], 'none');
    $('#bridge-note').hidden = true;
  });

  async function load() {
    const call = mine;
    // Ask only once the login is known to be an admin: a refused call
    // would put an error in the browser's console every 2 seconds.
    const admin = S.admin();
    if (admin !== true) {
      $('#bridge-summary').textContent = admin === false
        ? 'unavailable: bridges need an admin login (management API)'
        : 'waiting for the management API';
      $('#v-bridges').dataset.state = 'unavailable';
      return;
    }
    let v;
    try {
      v = await S.api('GET', 'bridges');
    } catch (e) {
      if (call !== mine) return;
      // Bridges are known through the management API only: a login that
      // may not use it sees why, rather than an empty list.
      $('#bridge-summary').textContent = 'unavailable: ' + e.message;
      $('#v-bridges').dataset.state = 'unavailable';
      return;
    }
    if (call !== mine) return;
    render(v || []);
  }

  function render(list) {
    const down = list.filter((b) => !b.connected);
    $('#bridge-summary').textContent = list.length
      ? `${list.length - down.length} of ${list.length} connected`
      : 'no bridges configured (bridges: in the config)';
    $('#v-bridges').dataset.state = down.length ? 'degraded' : 'ok';
    S.fill('#bridges', list.map((b) => {
      // The last error stays once the link is back, greyed, with its time.
      const err = el('span', b.connected ? 'meta' : '', b.last_error || '');
      if (b.last_error_at) {
        err.prepend(el('time', 'meta', new Date(b.last_error_at).toLocaleTimeString()), ' ');
        err.title = 'at ' + new Date(b.last_error_at).toLocaleString();
      }
      const tr = S.row([b.name, b.remote, b.connected ? 'connected' : 'disconnected', b.queued, b.sent, b.received, b.dropped, err],
        { bridge: b.name, state: b.connected ? 'up' : 'down' });
      if (!b.connected) tr.classList.add('down');
      return tr;
    }), 'no bridges');
    const note = $('#bridge-note');
    note.hidden = !down.length;
    note.dataset.bridges = down.map((b) => b.name).join(' ');
    note.textContent = down.map((b) => `Bridge ${b.name} to ${b.remote} is down` + (b.last_error ? ': ' + b.last_error : '') + '.').join(' ');
    if (down.length) {
      const a = el('a', '', 'Bridges');
      a.href = '#v-bridges';
      note.append(' See ', a, '.');
    }
  }
})();
