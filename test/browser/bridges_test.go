package browser

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/admin"
	"github.com/starling-mqtt/starling/internal/bridge"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
)

// The bridges view shows a bridge whose remote is down as disconnected
// with its last error, and the overview names it; once the remote comes up
// (a second Starling on the port nothing listened on), the view shows it
// connected, and a message published here counted as sent (acknowledged by
// the remote).
func TestDashboardBridgesView(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)

	var set atomic.Pointer[bridge.Set]
	srv := startServerWith(t, config.Default().Limits, nil, "127.0.0.1:0", func(o *admin.Options) {
		o.Bridges = func() any {
			if s := set.Load(); s != nil {
				return s.Status()
			}
			return []bridge.Status{}
		}
	})

	// A loopback port with nothing listening: the remote is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	remoteAddr := ln.Addr().String()
	ln.Close()
	remote := broker.New(config.Default().Limits, nil)
	var remoteWG sync.WaitGroup
	var remoteLn net.Listener
	t.Cleanup(func() {
		if remoteLn != nil {
			remoteLn.Close()
		}
		remote.Close(2 * time.Second)
		remoteWG.Wait()
	})

	// Short back-off, so the bridge finds the remote soon after it is up.
	bs := bridge.NewSet([]config.Bridge{{Name: "cloud", Remote: "mqtt://" + remoteAddr,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond,
		Topics: []config.BridgeTopic{{Direction: "out", Filter: "sensors/#", QoS: 1, RemotePrefix: "sites/17/"}}}},
		srv.b, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := bs.Start(time.Second); err != nil {
		t.Fatalf("start bridge: %v", err)
	}
	t.Cleanup(bs.Close) // before the brokers close (cleanups run last first)
	set.Store(bs)

	row := `document.querySelector('#bridges tr[data-bridge="cloud"]')`
	cells := row + `?.innerText`
	err = chromedp.Do(ctx,
		logIn(srv.url),
		chromedp.WaitVisible(chromedp.CSS(`#bridge-note[data-bridges="cloud"]`)),
		waitText(`#bridge-note`, func(s string) bool {
			return hasAll(s, "Bridge cloud to mqtt://"+remoteAddr+" is down", "connection refused")
		}),
	)
	if err != nil {
		t.Fatalf("overview, remote down: %v", err)
	}
	shot(t, ctx, `#bridge-note`, "overview-bridge-down.png")
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-bridges"]`)),
		waitText(`#bridge-summary`, is("0 of 1 connected")),
		chromedp.WaitVisible(chromedp.CSS(`#bridges tr.down[data-bridge="cloud"][data-state="down"]`)),
		waitJS(`(() => { const c = [...`+row+`.cells].map((td) => td.textContent);
			return c[1] === 'mqtt://`+remoteAddr+`' && c[2] === 'disconnected' && c[4] === '0' && /connection refused/.test(c[7]); })()`, cells),
	)
	if err != nil {
		t.Fatalf("remote down: %v", err)
	}
	shot(t, ctx, `#v-bridges`, "view-bridges-down.png")

	// The remote comes up on that port.
	remoteLn, err = net.Listen("tcp", remoteAddr)
	if err != nil {
		t.Fatalf("remote listen on %s (the port was taken meanwhile): %v", remoteAddr, err)
	}
	remoteWG.Add(1)
	go func() {
		defer remoteWG.Done()
		for {
			c, err := remoteLn.Accept()
			if err != nil {
				return
			}
			go remote.HandleConnOn(c, "tcp")
		}
	}()
	err = chromedp.Do(ctx,
		waitText(`#bridge-summary`, is("1 of 1 connected")),
		chromedp.WaitVisible(chromedp.CSS(`#bridges tr[data-bridge="cloud"][data-state="up"]`)),
		waitJS(`document.querySelector('#bridge-note').hidden`, `document.querySelector('#bridge-note').textContent`),
	)
	if err != nil {
		t.Fatalf("remote up: %v", err)
	}

	pub, _ := mqttClient(t, srv.tcpAddr, "sensor-hall")
	pctx, cancel := context.WithTimeout(ctx, brokertest.Patience(t))
	defer cancel()
	if _, err := pub.Publish(pctx, &paho.Publish{Topic: "sensors/hall/temp", QoS: 1, Payload: []byte("21.5")}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	err = chromedp.Do(ctx,
		waitJS(`(() => { const c = [...`+row+`.cells].map((td) => td.textContent);
			return c[2] === 'connected' && c[3] === '0' && c[4] === '1' && c[6] === '0'; })()`, cells),
	)
	if err != nil {
		t.Fatalf("sent after a publish: %v", err)
	}
	shot(t, ctx, `#v-bridges`, "view-bridges-up.png")

	// A login that is not an admin is told why it sees no bridges, and the
	// note of the previous login is gone.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#logout`)),
		chromedp.WaitVisible(chromedp.CSS(`#login-form`)),
		chromedp.SendKeys(chromedp.CSS(`#user`), "viewer"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "pw"),
		chromedp.Click(chromedp.CSS(`#login-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="live"]`)),
		waitText(`#bridge-summary`, is("unavailable: bridges need an admin login (management API)")),
		waitJS(`!document.querySelector('#bridges tr[data-bridge]') && document.querySelector('#bridge-note').hidden`,
			`document.querySelector('#bridges').innerText`),
	)
	if err != nil {
		t.Fatalf("not an admin: %v", err)
	}
}

// hasAll reports whether s contains every one of subs.
func hasAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
