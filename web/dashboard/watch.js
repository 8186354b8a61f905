// Starling dashboard: a small subscribe-and-watch client beside the
// publish form. It subscribes over the page's own MQTT connection with a
// subscription identifier of its own, so that it lists exactly the
// messages its subscription brought (not the feeds' or the topic tree's),
// newest first, the last 200. Payloads are shown as text, never as HTML.
'use strict';
(() => {
  const S = window.starling;
  const { $, el } = S;
  const KEEP = 200;
  // Each SUBSCRIBE gets a new identifier, so that what an earlier
  // subscription still had on the way is not listed as the new one's.
  const FIRST_ID = 4242;
  let lastID = FIRST_ID - 1;
  let filter = null;  // the filter asked for, from Subscribe to Unsubscribe (or a refusal)
  let subID = 0;      // identifier of its latest SUBSCRIBE: messages carrying it are listed
  let granted = false; // its SUBACK came

  const carries = (packet, id) => {
    const ids = packet.properties && packet.properties.subscriptionIdentifier;
    return Array.isArray(ids) ? ids.includes(id) : ids === id;
  };

  // Listed from the moment the SUBSCRIBE is sent, not from its SUBACK
  // callback: the retained messages follow the SUBACK at once, and MQTT.js
  // may hand them to 'message' before it runs the subscribe callback (it
  // settles that through promises, later than the packets that came in
  // the same read).
  S.onMessage.push((topic, payload, packet) => {
    if (!subID || !carries(packet, subID)) return;
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
    if (granted) $('#watch-status').textContent = `watching ${filter}: ${ul.children.length} shown`;
  });

  $('#watch-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = $('#watch-filter').value.trim();
    const c = S.client();
    if (!S.validFilter(f)) return ($('#watch-status').textContent = 'not a valid topic filter');
    if (!c || !c.connected) return ($('#watch-status').textContent = 'not connected');
    if (filter) c.unsubscribe(filter);
    const qos = Number($('#watch-qos').value);
    const id = lastID = lastID >= 268435455 ? FIRST_ID : lastID + 1; // the largest identifier MQTT allows
    filter = f;
    subID = id;
    granted = false;
    $('#watch-status').textContent = `subscribing to ${f}`;
    c.subscribe(f, { qos, properties: { subscriptionIdentifier: id } }, (err, subs, suback) => {
      if (id !== subID) return; // replaced or ended meanwhile
      const code = suback && suback.granted ? suback.granted[0] : subs && subs[0] && subs[0].qos;
      if (code >= 128 || (err && !(suback && suback.granted))) {
        filter = null;
        subID = 0;
        $('#watch-unsub').disabled = true;
        $('#watch-status').textContent = `subscription to ${f} refused` + (code >= 128 ? ` (reason 0x${code.toString(16)})` : ': ' + err.message);
        return;
      }
      granted = true;
      $('#watch-unsub').disabled = false;
      $('#watch-status').textContent = `watching ${f} (QoS ${code})`;
    });
  });

  $('#watch-unsub').addEventListener('click', () => {
    const c = S.client();
    if (filter && c) c.unsubscribe(filter);
    $('#watch-status').textContent = filter ? 'stopped watching ' + filter : '';
    filter = null;
    subID = 0;
    granted = false;
    $('#watch-unsub').disabled = true;
  });
  $('#watch-clear').addEventListener('click', () => $('#watch-list').replaceChildren());
  // A new connection holds none of the page's subscriptions: watch again
  // (also a filter whose SUBACK the old connection never brought).
  S.onLive.push(() => {
    if (!filter) return;
    const f = filter;
    filter = null;
    subID = 0;
    $('#watch-filter').value = f;
    $('#watch-sub').click();
  });
  S.onLogout.push(() => { filter = null; subID = 0; granted = false; $('#watch-unsub').disabled = true; });
})();
