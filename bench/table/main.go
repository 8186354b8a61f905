// Command table reads the JSON lines bench/compare.sh collects (one per run:
// broker, run, cell, transport, qos and starling-bench's result) and prints
// the markdown comparison table: one row per cell × transport × QoS, one
// column per broker with every run's figure, and Starling's ratio to the
// best peer (> 1 means Starling is better, whichever way the figure goes).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/starling-mqtt/starling/internal/loadgen"
)

type line struct {
	Broker    string          `json:"broker"`
	Run       int             `json:"run"`
	Cell      string          `json:"cell"`
	Transport string          `json:"transport"`
	QoS       int             `json:"qos"`
	Result    *loadgen.Result `json:"result"`
}

type key struct {
	cell, transport string
	qos             int
}

func main() {
	pngPrefix := flag.String("png", "", "also write bar charts as `PREFIX`-<group>.png (throughput, latency, idle, connstorm)")
	flag.Parse()
	t, err := table(os.Stdin, os.Stdout)
	if err == nil && *pngPrefix != "" {
		var files []string
		files, err = writePNGs(*pngPrefix, t.brokers, t.keys, t.means)
		for _, f := range files {
			fmt.Fprintln(os.Stderr, "table: wrote", f)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "table:", err)
		os.Exit(1)
	}
}

// parsed is what table read: the rows in order, the brokers in order of
// appearance, and each broker's mean figure per row.
type parsed struct {
	keys    []key
	brokers []string
	means   map[key]map[string]float64
}

// metric returns the figure a cell is ranked by, whether higher is better,
// and the text shown for one run.
func metric(cell string, r *loadgen.Result) (v float64, higher bool, text string) {
	var warn []string
	if r.Lost > 0 {
		warn = append(warn, fmt.Sprintf("lost %d", r.Lost))
	}
	if r.Duplicates > 0 {
		warn = append(warn, fmt.Sprintf("dup %d", r.Duplicates))
	}
	if r.ConnectFailures > 0 {
		warn = append(warn, fmt.Sprintf("%d conn failed", r.ConnectFailures))
	}
	switch {
	case strings.HasPrefix(cell, "latency"):
		if r.Latency == nil {
			return 0, false, "no data"
		}
		v, higher = r.Latency.P99, false
		text = fmt.Sprintf("%s / %s", us(r.Latency.P50), us(r.Latency.P99))
		if r.BacklogEnd > int64(r.Rate/10) {
			warn = append(warn, fmt.Sprintf("behind %d", r.BacklogEnd))
		}
	case cell == "idle":
		v, higher = r.RSSPerConnBytes, false
		text = fmt.Sprintf("%.1f KiB (%s conn/s)", v/1024, si(r.ConnsPerSec))
	case cell == "connstorm":
		v, higher = r.ConnsPerSec, true
		text = si(v) + "/s"
	case cell == "slow":
		// Ranked by how far the broker's memory grew while one subscriber
		// did not read; the reading subscriber's rate is shown beside it.
		v, higher = float64(r.RSSPeakKiB-r.RSSBeforeKiB)*1024, false
		text = fmt.Sprintf("+%.1f MiB, %s msg/s", v/(1<<20), si(r.DeliveredPerSec))
	default:
		v, higher = r.DeliveredPerSec, true
		text = si(v)
	}
	if len(warn) > 0 {
		text += " ⚠ " + strings.Join(warn, ", ")
	}
	return v, higher, text
}

func us(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.1f ms", v/1000)
	}
	return fmt.Sprintf("%.0f µs", v)
}

func si(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

var what = map[string]string{
	"fanin":      "fan-in 8→1, delivered msg/s",
	"fanin1k":    "fan-in 8→1, 1 KiB, delivered msg/s",
	"fanin64k":   "fan-in 8→1, 64 KiB, delivered msg/s",
	"slow":       "slow consumer: RSS growth, reader's msg/s",
	"fanout100":  "fan-out 1→100, delivered msg/s",
	"fanout1000": "fan-out 1→1000, delivered msg/s",
	"pairs100":   "100 pairs, delivered msg/s",
	"latency10k": "latency at 10k msg/s, p50 / p99",
	"latency50k": "latency at 50k msg/s, p50 / p99",
	"idle":       "broker RSS per idle connection",
	"connstorm":  "connect storm, connections/s",
}

func table(in io.Reader, out io.Writer) (parsed, error) {
	var keys []key
	var brokers []string
	allMeans := map[key]map[string]float64{}
	runs := map[key]map[string][]*loadgen.Result{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return parsed{}, err
		}
		k := key{l.Cell, l.Transport, l.QoS}
		if runs[k] == nil {
			runs[k] = map[string][]*loadgen.Result{}
			keys = append(keys, k)
		}
		if !slices.Contains(brokers, l.Broker) {
			brokers = append(brokers, l.Broker)
		}
		runs[k][l.Broker] = append(runs[k][l.Broker], l.Result)
	}
	if err := sc.Err(); err != nil {
		return parsed{}, err
	}
	var ours []string // Starling's variants, each with a ratio column
	for _, b := range brokers {
		if isStarling(b) {
			ours = append(ours, b)
		}
	}
	fmt.Fprintf(out, "| cell | transport | QoS | %s |", strings.Join(brokers, " | "))
	for _, b := range ours {
		fmt.Fprintf(out, " %s vs best peer |", b)
	}
	fmt.Fprintf(out, "\n|---|---|---|%s\n", strings.Repeat("---|", len(brokers)+len(ours)))
	for _, k := range keys {
		name := what[k.cell]
		if name == "" {
			name = k.cell
		}
		fmt.Fprintf(out, "| %s | %s | %d |", name, k.transport, k.qos)
		means := map[string]float64{}
		higher := true
		for _, b := range brokers {
			rs := runs[k][b]
			if len(rs) == 0 {
				fmt.Fprint(out, " — |")
				continue
			}
			var texts []string
			var sum float64
			n := 0
			for _, r := range rs {
				if r == nil {
					texts = append(texts, "failed")
					continue
				}
				v, h, t := metric(k.cell, r)
				higher = h
				texts = append(texts, t)
				sum += v
				n++
			}
			if n > 0 {
				means[b] = sum / float64(n)
			}
			fmt.Fprintf(out, " %s |", strings.Join(texts, " · "))
		}
		for _, b := range ours {
			fmt.Fprintf(out, " %s |", ratio(means, b, higher))
		}
		fmt.Fprintln(out)
		allMeans[k] = means
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Each broker cell lists every run (run 1 · run 2). The ratio compares the mean of Starling's runs with the best peer's mean;")
	fmt.Fprintln(out, "above 1 Starling is better (more msg/s or connections/s, lower p99 or fewer bytes per connection). ⚠ marks a run that lost")
	fmt.Fprintln(out, "or duplicated messages (closed loop owes none), fell behind its offered rate, or had failed connections.")
	return parsed{keys, brokers, allMeans}, nil
}

// isStarling tells Starling's own variants (starling, starling-mem) from
// the peers they are compared with.
func isStarling(broker string) bool { return strings.HasPrefix(broker, "starling") }

func ratio(means map[string]float64, ours string, higher bool) string {
	s, ok := means[ours]
	if !ok || s == 0 {
		return "—"
	}
	best, who := 0.0, ""
	for b, v := range means {
		if isStarling(b) || v == 0 {
			continue
		}
		if who == "" || (higher && v > best) || (!higher && v < best) {
			best, who = v, b
		}
	}
	if who == "" {
		return "—"
	}
	r := s / best
	if !higher {
		r = best / s
	}
	return fmt.Sprintf("%.2f× (%s)", r, who)
}
