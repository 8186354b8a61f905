package cluster

import "github.com/prometheus/client_golang/prometheus"

var (
	droppedDesc = prometheus.NewDesc("mqtt_cluster_messages_dropped_total",
		"Messages from other nodes dropped because this node fell behind (NATS slow consumer).", nil, nil)
	retainFailedDesc = prometheus.NewDesc("mqtt_cluster_retained_writes_failed_total",
		"Retained-message changes not replicated to the cluster after every retry.", nil, nil)
	queueFailedDesc = prometheus.NewDesc("mqtt_cluster_queue_writes_failed_total",
		"Writes of persistent sessions' queued or inflight messages (one per session and operation) the replicated stream did not confirm; the next resync writes them again.", nil, nil)
	relayedDesc = prometheus.NewDesc("mqtt_cluster_messages_relayed_total",
		"Messages for persistent sessions on another node that the node did not confirm in time, written to the relay stream for it instead.", nil, nil)
	relayFailedDesc = prometheus.NewDesc("mqtt_cluster_relay_writes_failed_total",
		"Messages for persistent sessions on another node not confirmed by it that the relay stream had not taken after 10 s (no leader or quorum); their publishers' acknowledgements wait until it does.", nil, nil)
	peersDesc = prometheus.NewDesc("mqtt_cluster_peers_connected",
		"Other cluster nodes this node has heard a heartbeat from within the last second.", nil, nil)
	fencedDesc = prometheus.NewDesc("mqtt_cluster_fenced",
		"1 while this node is fenced: out of touch with the majority of its cluster, or re-checking which sessions are its own after being so; it acknowledges nothing meanwhile.", nil, nil)
	batchesDesc = prometheus.NewDesc("mqtt_cluster_batches_sent_total",
		"NATS messages this node published carrying several messages (a batch); none while some node has not said it reads batches (an earlier release).", nil, nil)
	evictedDesc = prometheus.NewDesc("mqtt_cluster_sessions_evicted_total",
		"Sessions this node dropped because another node took them over while this one was out of touch.", nil, nil)
)

// Describe implements prometheus.Collector.
func (n *Node) Describe(ch chan<- *prometheus.Desc) {
	ch <- droppedDesc
	ch <- retainFailedDesc
	ch <- queueFailedDesc
	ch <- relayedDesc
	ch <- relayFailedDesc
	ch <- peersDesc
	ch <- fencedDesc
	ch <- evictedDesc
	ch <- batchesDesc
}

// Collect implements prometheus.Collector.
func (n *Node) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(n.Dropped()))
	ch <- prometheus.MustNewConstMetric(retainFailedDesc, prometheus.CounterValue, float64(n.retainFailed.Load()))
	ch <- prometheus.MustNewConstMetric(queueFailedDesc, prometheus.CounterValue, float64(n.mir.failed.Load()))
	ch <- prometheus.MustNewConstMetric(relayedDesc, prometheus.CounterValue, float64(n.rel.relayed.Load()))
	ch <- prometheus.MustNewConstMetric(relayFailedDesc, prometheus.CounterValue, float64(n.rel.failed.Load()))
	ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(len(n.Peers())))
	fenced := 0.0
	if n.lease.ready.Load() && !n.leaseValid() {
		fenced = 1
	}
	ch <- prometheus.MustNewConstMetric(fencedDesc, prometheus.GaugeValue, fenced)
	ch <- prometheus.MustNewConstMetric(evictedDesc, prometheus.CounterValue, float64(n.lease.evicted.Load()))
	ch <- prometheus.MustNewConstMetric(batchesDesc, prometheus.CounterValue, float64(n.out.batched.Load()))
}
