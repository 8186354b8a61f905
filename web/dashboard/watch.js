// Starling dashboard: a small subscribe-and-watch client beside the
// publish form. It subscribes over the page's own MQTT connection with a
// subscription identifier of its own, so that it lists exactly the
// messages its subscription brought (not the feeds' or the topic tree's),
// newest first, the last 200. Payloads are shown as text, never as HTML.
'use strict';
(() => {
  const S = window.starling;
  const { $, el } = S;
  const SUB_ID = 4242;
  const KEEP = 200;
  let watching = null;

  const carries = (packet) => {
    const id = packet.properties && packet.properties.subscriptionIdentifier;
    return Array.isArray(id) ? id.includes(SUB_ID) : id === SUB_ID;
  };

  S.onMessage.push((topic, payload, packet) => {
    if (!watching || !carries(packet)) return;
    const li = el('li');
    li.dataset.topic = topic;
    const view = S.payloadView({ raw: new Uint8Array(payload.subarray(0, 4096)), size: payload.length, view: null });
    const flags = [`QoS ${packet.qos}`];
    if (packet.retain) flags.push('retained');
    const p = packet.properties || {};
    if (p.contentType) flags.push(p.contentType);
    li.append(el('time', '', new Date().toLocaleTimeString()), el('span', 'topic', topic),
      view.json ? el('pre', 'payload', view.text) : el('code', 'payload', view.text), el('span', 'flags', flags.join(' · ')));
    const ul = $('#watch-list');
    ul.prepend(li);
    while (ul.children.length > KEEP) ul.lastChild.remove();
    $('#watch-status').textContent = `watching ${watching}: ${ul.children.length} shown`;
  });

  $('#watch-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = $('#watch-filter').value.trim();
    const c = S.client();
    if (!S.validFilter(f)) return ($('#watch-status').textContent = 'not a valid topic filter');
    if (!c || !c.connected) return ($('#watch-status').textContent = 'not connected');
    if (watching) c.unsubscribe(watching);
    const qos = Number($('#watch-qos').value);
    c.subscribe(f, { qos, properties: { subscriptionIdentifier: SUB_ID } }, (err, granted, suback) => {
      const code = suback && suback.granted ? suback.granted[0] : granted && granted[0] && granted[0].qos;
      if (code >= 128 || (err && !(suback && suback.granted))) {
        watching = null;
        $('#watch-unsub').disabled = true;
        $('#watch-status').textContent = `subscription to ${f} refused` + (code >= 128 ? ` (reason 0x${code.toString(16)})` : ': ' + err.message);
        return;
      }
      watching = f;
      $('#watch-unsub').disabled = false;
      $('#watch-status').textContent = `watching ${f} (QoS ${code})`;
    });
  });

  $('#watch-unsub').addEventListener('click', () => {
    const c = S.client();
    if (watching && c) c.unsubscribe(watching);
    $('#watch-status').textContent = watching ? 'stopped watching ' + watching : '';
    watching = null;
    $('#watch-unsub').disabled = true;
  });
  $('#watch-clear').addEventListener('click', () => $('#watch-list').replaceChildren());
  // A new connection holds none of the page's subscriptions: watch again.
  S.onLive.push(() => { if (watching) { const f = watching; watching = null; $('#watch-filter').value = f; $('#watch-sub').click(); } });
  S.onLogout.push(() => { watching = null; $('#watch-unsub').disabled = true; });
})();
