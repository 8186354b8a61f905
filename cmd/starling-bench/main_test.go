package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/starling-mqtt/starling/internal/loadgen"
	"github.com/starling-mqtt/starling/internal/testutil"
)

func TestRunPrintsJSONAndSummary(t *testing.T) {
	_, addr := testutil.StartBroker(t, nil)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"-url", "tcp://" + addr, "-scenario", "fanin",
		"-duration", "300ms", "-qos", "1", "-version", "5", "-strict"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one JSON line, got %d", len(lines))
	}
	var r loadgen.Result
	if err := json.Unmarshal([]byte(lines[0]), &r); err != nil {
		t.Fatal(err)
	}
	if r.Scenario != "fanin" || r.Pubs != 8 || r.Subs != 1 || r.QoS != 1 || r.Version != 5 || r.Lost != 0 {
		t.Errorf("result %+v", r)
	}
	if !strings.Contains(errb.String(), "delivered") {
		t.Errorf("no summary: %q", errb.String())
	}
}

func TestRunRefuses(t *testing.T) {
	for _, args := range [][]string{
		{"-url", "tcp://192.0.2.1:1883"},
		{"-sub-url", "tcp://127.0.0.1:1884,tcp://192.0.2.1:1883"},
		{"-scenario", "idle", "-sub-url", "tcp://127.0.0.1:1884"},
		{"-scenario", "bogus"},
		{"-version", "3"},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		if out.Len() != 0 {
			t.Errorf("%q: printed %q", args, out.String())
		}
	}
}

func TestRunSubURL(t *testing.T) {
	srv, addr := testutil.StartBroker(t, nil)
	ws := "ws://" + srv.HTTPAddr().String() + "/mqtt"
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"-url", "tcp://" + addr, "-sub-url", " " + ws + ",tcp://" + addr + ",",
		"-scenario", "fanout", "-subs", "4", "-duration", "300ms", "-strict", "-q"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r loadgen.Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.SubURLs) != 2 || r.SubURLs[0] != ws || r.SubURLs[1] != "tcp://"+addr || r.URL != "tcp://"+addr {
		t.Errorf("url %q sub_urls %q", r.URL, r.SubURLs)
	}
}
