// Starling dashboard: the cluster view. The broker publishes
// $SYS/starling/dashboard/cluster every second while watched: the nodes as
// this one sees them (connected or not; readiness is known for this node),
// the sessions each owns, and the nodes lost and rejoined since this node
// started. A single node shows itself alone.
'use strict';
(() => {
  const S = window.starling;
  const { $, el } = S;
  const WHAT = { lost: 'lost', rejoined: 'rejoined', joined: 'joined', ready: 'ready', not_ready: 'not ready' };

  S.feeds.cluster = (v) => {
    const up = v.nodes.filter((n) => n.connected).length;
    $('#cluster-summary').textContent = v.clustered
      ? `cluster ${v.name}: ${up} of ${v.expected_nodes} nodes connected · this node ${v.node} ${v.ready ? 'ready' : 'not ready'}`
      : 'single node: not clustered';
    $('#v-cluster').dataset.clustered = v.clustered;
    S.fill('#cluster-nodes', v.nodes.map((n) => {
      const state = !n.connected ? 'lost' : n.ready === false ? 'connected, not ready' : n.ready ? 'ready' : 'connected';
      const tr = S.row([n.name + (n.self ? ' (this node)' : ''), state, n.sessions < 0 ? '–' : n.sessions], { node: n.name, state: n.connected ? 'up' : 'down' });
      if (!n.connected) tr.classList.add('down');
      return tr;
    }), 'no nodes');
    const ul = el('ul', 'events');
    ul.id = 'cluster-events';
    for (const e of v.events) {
      const li = el('li', 'cl-' + e.event);
      li.dataset.node = e.node;
      li.dataset.event = e.event;
      li.append(el('time', '', new Date(e.t).toLocaleTimeString()), ' ', el('code', '', e.node), ' ', el('span', 'what', WHAT[e.event] || e.event));
      ul.append(li);
    }
    if (!v.events.length) ul.append(el('li', 'meta', v.clustered ? 'none since this node started' : 'none: a single node'));
    $('#cluster-events').replaceWith(ul);
  };
})();
