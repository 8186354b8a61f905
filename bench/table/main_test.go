package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	in := strings.Join([]string{
		`{"broker":"starling","run":1,"cell":"fanin","transport":"tcp","qos":0,"result":{"delivered_per_s":300000}}`,
		`{"broker":"mosquitto","run":1,"cell":"fanin","transport":"tcp","qos":0,"result":{"delivered_per_s":100000,"lost":3}}`,
		`{"broker":"starling","run":2,"cell":"fanin","transport":"tcp","qos":0,"result":{"delivered_per_s":100000}}`,
		`{"broker":"mosquitto","run":2,"cell":"fanin","transport":"tcp","qos":0,"result":null}`,
		`{"broker":"starling","run":1,"cell":"latency10k","transport":"ws","qos":1,"result":{"rate":10000,"latency":{"p50_us":100,"p99_us":2000}}}`,
		`{"broker":"mosquitto","run":1,"cell":"latency10k","transport":"ws","qos":1,"result":{"rate":10000,"latency":{"p50_us":90,"p99_us":1000}}}`,
	}, "\n")
	var out bytes.Buffer
	if err := table(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"| starling | mosquitto |",
		"| fan-in 8→1, delivered msg/s | tcp | 0 | 300.0k · 100.0k | 100.0k ⚠ lost 3 · failed | 2.00× (mosquitto) |",
		"| 100 µs / 2.0 ms | 90 µs / 1.0 ms | 0.50× (mosquitto) |",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
}
