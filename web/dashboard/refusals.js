// Starling dashboard: refusals and denials. The broker keeps the last 500
// (refused logins, ACL denials, refused WebSocket origins, slow-consumer
// actions and what other sources record) and publishes the newest 100 on
// $SYS/starling/dashboard/events every second while watched, so a page
// opened or reloaded later shows them within a second.
'use strict';
(() => {
  const S = window.starling;
  const { $, el } = S;
  const NAMES = { connect_refused: 'login refused', publish_denied: 'publish denied', subscribe_denied: 'subscribe denied',
    origin_refused: 'origin refused', slow_consumer: 'slow consumer' };
  const name = (k) => NAMES[k] || k.replace(/_/g, ' ');
  let last = null, seenAt = 0;

  S.feeds.events = (v) => { last = v; render(); };
  S.onLogout.push(() => { last = null; render(); });
  $('#refusal-kind').addEventListener('change', render);
  document.querySelector('a[href="#v-refusals"]').addEventListener('click', () => {
    seenAt = Date.now();
    $('#refusal-count').textContent = '';
  });

  function render() {
    const evs = last ? last.events : [];
    const kind = $('#refusal-kind').value;
    // The kind filter offers every kind the broker counted.
    const kinds = Object.keys((last && last.totals) || {}).sort();
    const sel = $('#refusal-kind');
    for (const k of kinds) {
      if (![...sel.options].some((o) => o.value === k)) sel.append(new Option(name(k), k));
    }
    S.fill('#refusals', evs.filter((e) => !kind || e.kind === kind).map((e) => {
      const tr = S.row([new Date(e.t).toLocaleTimeString(), name(e.kind), e.client_id || '', e.username || '', e.remote || '',
        e.topic || '', e.reason || '', e.count], { kind: e.kind, clientId: e.client_id || '' });
      tr.className = 'ev-' + e.kind;
      if (e.count > 1) tr.lastChild.title = 'first ' + new Date(e.first).toLocaleString();
      return tr;
    }), last ? 'none' : 'waiting for the broker');
    $('#refusal-totals').textContent = kinds.map((k) => `${name(k)} ${last.totals[k].toLocaleString('en')}`).join(' · ');
    const fresh = evs.filter((e) => e.t > seenAt).length;
    $('#refusal-count').textContent = fresh ? String(fresh) : '';
  }
})();
