// Command starling-bench is Starling's load tool, a command of its own (not
// a subcommand of the broker): it drives any MQTT broker over tcp://, ws://,
// ssl:// or wss:// with MQTT 3.1.1 or 5.0, using Starling's codec, and
// prints one line of JSON per run on stdout and a readable summary on
// stderr. The engine is internal/loadgen; docs/benchmarks.md has the
// figures and bench/compare.sh the side-by-side comparison.
//
//	starling-bench -url tcp://127.0.0.1:1883 -scenario fanout -subs 100 -qos 0
//	starling-bench -url ws://127.0.0.1:8080/mqtt -scenario latency -rate 50000
//	starling-bench -scenario idle -conns 10000 -broker-pid $(pidof starling)
//	starling-bench -url tcp://127.0.0.1:1883 -sub-url tcp://127.0.0.1:1884,tcp://127.0.0.1:1885 -scenario fanout
//
// Publishers connect to -url; subscribers to -url too, or round robin over
// the brokers listed in -sub-url (cluster nodes, to measure routing between
// them). The JSON's sub_urls says where subscribers connected.
//
// Scenarios: fanin (8 publishers on bench/fanin/<i>, 1 subscriber on
// bench/fanin/+), fanout (1 publisher, -subs subscribers on one topic),
// pairs (-pubs publisher/subscriber pairs on distinct topics), latency (open
// loop at -rate, 10k msg/s by default), idle (-conns idle connections;
// broker RSS per connection with -broker-pid) and connstorm (-conns
// subscribed connections opened at once, then one publish to all).
//
// Every run stops by itself: durations, drains and connection counts are
// bounded, and only loopback hosts (in -url and every -sub-url) are
// accepted unless -allow-remote is given. Exit status: 0 on success, 1 when the run failed (or, with
// -strict, lost or duplicated a message in closed loop), 2 on bad flags.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/starling-mqtt/starling/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg loadgen.Config
	fs := flag.NewFlagSet("starling-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.URL, "url", "tcp://127.0.0.1:1883", "broker `URL`: tcp://, ws:// (path /mqtt by default), ssl:// or wss://")
	subURL := fs.String("sub-url", "", "subscribers' broker `URLs`, comma-separated: subscribers are spread over them round robin (default: -url)")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a host that is not a loopback address")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "do not verify the broker's certificate (ssl://, wss://)")
	fs.BoolVar(&cfg.WSDeflate, "ws-deflate", false, "offer permessage-deflate on ws:// and wss:// (used if the broker accepts)")
	fs.StringVar(&cfg.Scenario, "scenario", "fanin", "`scenario`: "+strings.Join(loadgen.Scenarios, ", "))
	version := fs.Uint("version", 4, "MQTT protocol `level`: 4 (3.1.1) or 5")
	qos := fs.Uint("qos", 0, "QoS of publishes and subscriptions: 0 or 1")
	fs.IntVar(&cfg.Size, "size", 64, "payload `bytes` (at least 24: nonce, publisher, sequence, timestamp)")
	fs.IntVar(&cfg.Subs, "subs", 0, "subscribers (default: fanin 1, fanout 100, latency 1)")
	fs.IntVar(&cfg.Pubs, "pubs", 0, "publishers (default: fanin 8, fanout 1, pairs 100, latency 1, slow 8)")
	fs.IntVar(&cfg.SlowSubs, "slow-subs", 0, "slow: subscribers that never read, beside -subs that do (default 1)")
	fs.IntVar(&cfg.Conns, "conns", 0, "connections for idle and connstorm (default 1000)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: total `msgs/s` offered; 0 = closed loop (latency: 10000)")
	fs.BoolVar(&cfg.Persistent, "persistent", false, "subscribers keep their sessions (clean start off; MQTT 5: expiry 300 s); they outlive the run")
	fs.IntVar(&cfg.Window, "window", 64, "messages in flight per publisher (closed loop; QoS 1 PUBACK window)")
	fs.IntVar(&cfg.Lead, "lead", 0, "closed loop: how far a publisher may run ahead of its slowest subscriber (0: -window); -window then bounds only QoS 1 PUBACKs")
	fs.DurationVar(&cfg.Duration, "duration", 0, "measured window (default 5s)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "warm-up before the measured window")
	fs.DurationVar(&cfg.Drain, "drain", 0, "at most this long to wait for the last deliveries (default 3s)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "connections set up at once")
	fs.IntVar(&cfg.BrokerPID, "broker-pid", 0, "broker `pid` whose RSS to read (/proc/PID/status) for idle, connstorm and slow")
	fs.DurationVar(&cfg.Settle, "settle", 0, "idle: wait before reading RSS after opening (default 1s)")
	fs.StringVar(&cfg.ClientID, "client-id", "", "client ID `prefix` (default random)")
	fs.StringVar(&cfg.Topic, "topic", "bench", "topic `prefix`")
	strict := fs.Bool("strict", false, "exit 1 on any error, failed connection, or loss or duplicate in closed loop")
	quiet := fs.Bool("q", false, "print only the JSON line")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "starling-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *version > 5 || *qos > 2 {
		fmt.Fprintln(stderr, "starling-bench: -version must be 4 or 5, -qos 0 or 1")
		return 2
	}
	cfg.Version, cfg.QoS = byte(*version), byte(*qos)
	cfg.SubURLs = loadgen.SplitURLs(*subURL)
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "starling-bench:", err)
		return 2
	}
	res, err := loadgen.Run(ctx, cfg)
	if res != nil {
		line, jerr := json.Marshal(res)
		if jerr != nil {
			fmt.Fprintln(stderr, "starling-bench:", jerr)
			return 1
		}
		fmt.Fprintln(stdout, string(line))
		if !*quiet {
			fmt.Fprint(stderr, res.Summary())
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "starling-bench:", err)
		return 1
	}
	if *strict {
		if err := res.Check(); err != nil {
			fmt.Fprintln(stderr, "starling-bench: strict:", err)
			return 1
		}
	}
	return 0
}
