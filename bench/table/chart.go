package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// A chart is one PNG of horizontal bars: a group of bars per row (cell ×
// transport × QoS), one bar per broker, each the mean of that broker's runs.
type chart struct {
	title string
	unit  func(float64) string // a bar's label
	log   bool                 // logarithmic scale, for figures spanning decades
	rows  []chartRow
}

type chartRow struct {
	label string
	means map[string]float64 // broker → mean; a broker left out has no bar
}

// Colours per broker, in the order brokers first appear.
var palette = []color.RGBA{
	{0x1f, 0x6f, 0xb4, 0xff}, // blue
	{0xe0, 0x7b, 0x10, 0xff}, // orange
	{0x2c, 0x9c, 0x3c, 0xff}, // green
	{0xb0, 0x30, 0x30, 0xff}, // red
}

const (
	barH     = 14
	barGap   = 3
	groupGap = 12
	labelW   = 170 // left column with the row labels
	plotW    = 560
	valueW   = 110 // room right of the longest bar for its value
	top      = 50  // title and legend
	margin   = 12
)

// charts groups the table's rows by what they measure. means holds, per
// row key, each broker's mean of the figure metric ranks by.
func charts(keys []key, means map[key]map[string]float64) []struct {
	name string
	c    chart
} {
	rate := chart{title: "Delivered messages per second (higher is better)", unit: si}
	lat := chart{title: "p99 latency at a fixed rate (lower is better, log scale)", unit: func(v float64) string { return strings.Replace(us(v), "µs", "us", 1) }, log: true}
	idle := chart{title: "Broker RSS per idle connection (lower is better)", unit: func(v float64) string { return fmt.Sprintf("%.1f KiB", v/1024) }}
	slow := chart{title: "Broker RSS growth while a subscriber does not read (lower is better)", unit: func(v float64) string { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }}
	storm := chart{title: "Connect storm, connections per second (higher is better)", unit: func(v float64) string { return si(v) + "/s" }}
	for _, k := range keys {
		row := chartRow{label: fmt.Sprintf("%s %s q%d", short(k.cell), k.transport, k.qos), means: means[k]}
		switch {
		case strings.HasPrefix(k.cell, "latency"):
			lat.rows = append(lat.rows, row)
		case k.cell == "idle":
			idle.rows = append(idle.rows, row)
		case k.cell == "connstorm":
			storm.rows = append(storm.rows, row)
		case k.cell == "slow":
			slow.rows = append(slow.rows, row)
		default:
			rate.rows = append(rate.rows, row)
		}
	}
	var out []struct {
		name string
		c    chart
	}
	for _, c := range []struct {
		name string
		c    chart
	}{{"throughput", rate}, {"latency", lat}, {"idle", idle}, {"slow", slow}, {"connstorm", storm}} {
		if len(c.c.rows) > 0 {
			out = append(out, c)
		}
	}
	return out
}

func short(cell string) string {
	if s, ok := map[string]string{
		"fanin": "fan-in 8>1", "fanout100": "fan-out 1>100", "fanout1000": "fan-out 1>1000",
		"pairs100": "100 pairs", "latency10k": "10k msg/s", "latency50k": "50k msg/s",
		"idle": "idle", "connstorm": "storm", "slow": "slow reader",
		"fanin1k": "fan-in 1 KiB", "fanin64k": "fan-in 64 KiB",
	}[cell]; ok {
		return s
	}
	return cell
}

// writePNGs writes one chart per group as PREFIX-<group>.png.
func writePNGs(prefix string, brokers []string, keys []key, means map[key]map[string]float64) ([]string, error) {
	var files []string
	for _, c := range charts(keys, means) {
		name := prefix + "-" + c.name + ".png"
		f, err := os.Create(name)
		if err != nil {
			return files, err
		}
		err = png.Encode(f, c.c.render(brokers))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return files, fmt.Errorf("write %s: %w", name, err)
		}
		files = append(files, name)
	}
	return files, nil
}

// render draws the chart. Bars are scaled to the largest mean in the chart
// (linear) or placed on a log scale from the smallest to the largest.
func (c chart) render(brokers []string) *image.RGBA {
	groupH := len(brokers)*(barH+barGap) + groupGap
	h := top + len(c.rows)*groupH + margin
	w := margin + labelW + plotW + valueW + margin
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)

	lo, hi := math.Inf(1), 0.0
	for _, r := range c.rows {
		for _, v := range r.means {
			if v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	scale := func(v float64) int {
		if v <= 0 || hi <= 0 {
			return 0
		}
		if c.log {
			// The smallest bar keeps a tenth of the width so it stays visible.
			if hi == lo {
				return plotW
			}
			f := 0.1 + 0.9*(math.Log(v)-math.Log(lo))/(math.Log(hi)-math.Log(lo))
			return int(f * plotW)
		}
		return int(v / hi * plotW)
	}

	text(img, margin, 18, c.title, color.Black)
	x := margin
	for i, b := range brokers {
		fill(img, image.Rect(x, 28, x+12, 40), palette[i%len(palette)])
		text(img, x+16, 38, b, color.Black)
		x += 16 + 7*len(b) + 20
	}
	y := top
	grey := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	fill(img, image.Rect(margin+labelW-1, top-4, margin+labelW, h-margin), grey)
	for _, r := range c.rows {
		text(img, margin, y+barH+2, r.label, color.Black)
		for i, b := range brokers {
			v, ok := r.means[b]
			by := y + i*(barH+barGap)
			if !ok {
				text(img, margin+labelW+4, by+barH-3, "-", color.Gray{0x80})
				continue
			}
			bw := scale(v)
			fill(img, image.Rect(margin+labelW, by, margin+labelW+bw, by+barH), palette[i%len(palette)])
			text(img, margin+labelW+bw+4, by+barH-3, c.unit(v), color.Black)
		}
		y += groupH
	}
	return img
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	draw.Draw(img, r, &image.Uniform{c}, image.Point{}, draw.Src)
}

// text draws s with its baseline at y. basicfont has ASCII glyphs only, so
// other runes are drawn as '?'.
func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: &image.Uniform{c}, Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(strings.Map(func(r rune) rune {
		if r > 0x7e {
			return '?'
		}
		return r
	}, s))
}
