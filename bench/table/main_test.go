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
	if _, err := table(strings.NewReader(in), &out); err != nil {
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

// The chart's bars are proportional to the means (linear scale), one colour
// per broker, and a broker without a figure gets no bar.
func TestChartBars(t *testing.T) {
	c := chart{title: "t", unit: si, rows: []chartRow{
		{label: "a", means: map[string]float64{"starling": 400, "mosquitto": 100}},
		{label: "b", means: map[string]float64{"starling": 200}},
	}}
	img := c.render([]string{"starling", "mosquitto"})
	// width counts the pixels of a broker's colour on the bar's middle line.
	width := func(row, broker int) int {
		groupH := 2*(barH+barGap) + groupGap
		y := top + row*groupH + broker*(barH+barGap) + barH/2
		n := 0
		for x := margin + labelW; x < margin+labelW+plotW+1; x++ {
			if img.RGBAAt(x, y) == palette[broker] {
				n++
			}
		}
		return n
	}
	if w := width(0, 0); w != plotW {
		t.Errorf("largest bar %d px, want the full %d", w, plotW)
	}
	if w := width(0, 1); w != plotW/4 {
		t.Errorf("a quarter of the largest: %d px, want %d", w, plotW/4)
	}
	if w := width(1, 0); w != plotW/2 {
		t.Errorf("half of the largest: %d px, want %d", w, plotW/2)
	}
	if w := width(1, 1); w != 0 {
		t.Errorf("no figure but a bar of %d px", w)
	}
}

// On a log scale the smallest bar keeps a tenth of the width and a value ten
// times as large as another sits proportionally further along.
func TestChartLogScale(t *testing.T) {
	c := chart{title: "t", unit: si, log: true}
	c.rows = []chartRow{{label: "a", means: map[string]float64{"x": 10, "y": 100, "z": 1000}}}
	img := c.render([]string{"x", "y", "z"})
	var ws []int
	for b := range 3 {
		y := top + b*(barH+barGap) + barH/2
		n := 0
		for x := margin + labelW; x <= margin+labelW+plotW; x++ {
			if img.RGBAAt(x, y) == palette[b] {
				n++
			}
		}
		ws = append(ws, n)
	}
	if ws[0] != plotW/10 || ws[2] != plotW || ws[1] != int(0.55*plotW) {
		t.Errorf("log bars %v, want [%d %d %d]", ws, plotW/10, int(0.55*plotW), plotW)
	}
}
