package admin

import (
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/metrics"
)

// docsSource has every counter, bytes included.
type docsSource struct{}

func (docsSource) Counters() metrics.Counters {
	return metrics.Counters{HasBytes: true, MessagesIn: 1, BytesIn: 1, BytesOut: 1, ConnectedByProtocol: map[string]int64{"5.0": 1}}
}

// Details makes docsSource a Detailer, so the labelled metrics are checked too.
func (docsSource) Details() metrics.Details {
	return metrics.Details{DroppedByReason: map[string]uint64{"queue_full": 1}, AuthFailures: map[string]uint64{"not_authorized": 1}, Denied: map[string]uint64{"publish": 1}, LimitsExceeded: map[string]uint64{"max_connections": 1},
		Listeners: []metrics.ListenerCount{{Name: "tcp", Open: 1, Total: 1}}}
}

type nopPublisher struct{ topics map[string]bool }

func (p nopPublisher) Publish(topic string, _ []byte, _ byte, _ bool) (int, error) {
	p.topics[topic] = true
	return 0, nil
}

func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// serverMetrics are registered by the starling server beside the broker's
// (refusals, the HTTP hook); the root package's TestRefusalMetricsLint
// checks that they exist and are documented.
var serverMetrics = map[string]bool{"mqtt_ws_upgrade_refused_total": true, "mqtt_ws_auth_refused_total": true,
	"mqtt_auth_http_requests_total": true, "mqtt_auth_http_cache_hits_total": true}

// Every metric and $SYS topic the documentation names exists.
func TestDocNames(t *testing.T) {
	doc := readDoc(t)
	mfs, err := metrics.New(docsSource{}).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	for _, name := range regexp.MustCompile("`(mqtt_[a-z_]+)`").FindAllStringSubmatch(doc, -1) {
		if !have[name[1]] && !serverMetrics[name[1]] {
			t.Errorf("docs name metric %s, which does not exist", name[1])
		}
	}
	for name := range have {
		if strings.HasPrefix(name, "mqtt_") && !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("metric %s is not documented", name)
		}
	}

	pub := nopPublisher{map[string]bool{}}
	s := metrics.NewSys(docsSource{}, pub, metrics.SysOptions{})
	now := time.Now()
	s.Update(now)
	s.Update(now.Add(10 * time.Second))
	for _, m := range regexp.MustCompile("`(\\$SYS/broker/[^`]+)`").FindAllStringSubmatch(doc, -1) {
		topic := m[1]
		if strings.ContainsAny(topic, "#+") || strings.Contains(topic, "...") {
			continue
		}
		if !pub.topics[topic] {
			t.Errorf("docs name %s, which is not published", topic)
		}
	}
}

// The curl examples of the management API run against a real broker.
func TestDocCurlExamples(t *testing.T) {
	doc := readDoc(t)
	_, srv, addr := serve(t, Options{Checker: StaticChecker{"admin", "s3cret"}, LogLevel: new(slog.LevelVar)})
	dial(t, addr, "sensor-7").subscribe(t, "cmd/sensor-7/#")
	dial(t, addr, "pub").publish(t, "home/kitchen/temp", "21.5", true)
	dial(t, addr, "sensor-8") // deleted by an example

	// A command: "curl ... URL", continued over lines ending in a backslash.
	cmds := regexp.MustCompile(`(?m)^curl (?:[^\n]*\\\n)*[^\n]*$`).FindAllString(doc, -1)
	if len(cmds) < 7 {
		t.Fatalf("found %d curl examples", len(cmds))
	}
	urlRE := regexp.MustCompile(`'?http://127\.0\.0\.1:8080(/[^' ]*)'?`)
	bodyRE := regexp.MustCompile(`-d '([^']*)'`)
	methodRE := regexp.MustCompile(`-X ([A-Z]+)`)
	for _, cmd := range cmds {
		u := urlRE.FindStringSubmatch(cmd)
		if u == nil {
			t.Errorf("no URL in %q", cmd)
			continue
		}
		method := http.MethodGet
		if m := methodRE.FindStringSubmatch(cmd); m != nil {
			method = m[1]
		}
		var body string
		if b := bodyRE.FindStringSubmatch(cmd); b != nil {
			body = b[1]
			if method == http.MethodGet {
				method = http.MethodPost
			}
		}
		c := ""
		if strings.Contains(cmd, `-u "$ADMIN"`) {
			c = creds
		}
		code, resp, _ := do(t, srv, method, u[1], c, body)
		if code != http.StatusOK {
			t.Errorf("%s\n-> %d %s", cmd, code, resp)
		}
	}
}
