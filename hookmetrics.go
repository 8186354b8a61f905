package starling

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/starling-mqtt/starling/internal/auth/httpauth"
)

// hookCollector exposes the HTTP authentication hook's counters:
// mqtt_auth_http_requests_total{result} (calls to the backend, by
// outcome) and mqtt_auth_http_cache_hits_total.
type hookCollector struct{ st *httpauth.Stats }

var (
	hookCallsDesc = prometheus.NewDesc("mqtt_auth_http_requests_total",
		"Calls to the HTTP authentication hook's backend, by result (allow, deny, ignore, error).", []string{"result"}, nil)
	hookHitsDesc = prometheus.NewDesc("mqtt_auth_http_cache_hits_total",
		"HTTP authentication hook requests answered from the cache.", nil, nil)
)

func (h hookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hookCallsDesc
	ch <- hookHitsDesc
}

func (h hookCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range []struct {
		name string
		n    uint64
	}{{"allow", h.st.Allow.Load()}, {"deny", h.st.Deny.Load()}, {"ignore", h.st.Ignore.Load()}, {"error", h.st.Error.Load()}} {
		ch <- prometheus.MustNewConstMetric(hookCallsDesc, prometheus.CounterValue, float64(r.n), r.name)
	}
	ch <- prometheus.MustNewConstMetric(hookHitsDesc, prometheus.CounterValue, float64(h.st.CacheHits.Load()))
}
