package browser

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/admin"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
)

// Three faults seen in the browser, each checked here in the page itself:
//   - a v5 subscriber with Receive Maximum 20 that stops acknowledging is
//     a slow consumer against its own window (20), not max_inflight;
//   - a client that drops a message every tick takes one alert line, with
//     how often and since when, and does not push the others out;
//   - the dashboard does not load the broker it watches: with one topic
//     flooded at about 100 msg/s, the page receives it once a second (its
//     topic tree gets each topic's latest value), and its row in the top
//     clients is tagged as this page.
func TestDashboardRoundTwoFaults(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 1000)
	// The $SYS tree at its default period (10 s), not every second as in
	// the other tests: the page's own load is then its feeds and its tree.
	srv := startServerWith(t, config.Default().Limits, nil, "127.0.0.1:0", func(o *admin.Options) { o.SysInterval = 10 * time.Second })

	// The laggard: Receive Maximum 20, acknowledges nothing.
	nc, err := net.DialTimeout("tcp", srv.tcpAddr, brokertest.Patience(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	lag := paho.NewClient(paho.ClientConfig{ClientID: "laggard", Conn: nc, EnableManualAcknowledgment: true})
	cctx, cancel := context.WithTimeout(t.Context(), brokertest.Patience(t))
	defer cancel()
	rm := uint16(20)
	if _, err := lag.Connect(cctx, &paho.Connect{ClientID: "laggard", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm}}); err != nil {
		t.Fatal(err)
	}
	if _, err := lag.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "slow/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	// A client whose Maximum Packet Size (30) every message exceeds.
	tinyClient(t, srv.tcpAddr, "tiny", 30, "big/#")

	pub, _ := mqttClient(t, srv.tcpAddr, "pump")
	pctx, stopPub := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // QoS 1 at 15 msg/s to the laggard, 10/s too large for tiny
		defer wg.Done()
		tk := time.NewTicker(66 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			pub.Publish(pctx, &paho.Publish{Topic: "slow/x", QoS: 1, Payload: []byte(strconv.Itoa(i))})
			if i%3 == 0 {
				pub.Publish(pctx, &paho.Publish{Topic: "big/x", QoS: 0, Payload: []byte(strings.Repeat("x", 100))})
			}
			select {
			case <-pctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(func() { stopPub(); wg.Wait() })
	flood, _ := mqttClient(t, srv.tcpAddr, "flood")
	steadyPublisher(t, flood, 10*time.Millisecond, map[string][]byte{"flood/a": []byte("0123456789")})

	err = chromedp.Do(ctx,
		logIn(srv.url),
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-alerts"]`)),
		waitText(`#alerts li.slow_consumer[data-client-id="laggard"]`, contains("inflight 20 of its window 20")),
		// One line for tiny's drops, raised again and again.
		waitText(`#alerts li.dropped[data-client-id="tiny"]`, func(s string) bool { return strings.Contains(s, "× since") }),
		waitJS(`document.querySelectorAll('#alerts li[data-client-id="tiny"]').length === 1`,
			`document.querySelector('#alerts').textContent`),
		// And the slow consumer's line is still there.
		chromedp.WaitVisible(chromedp.CSS(`#alerts li.slow_consumer[data-client-id="laggard"]`)),
	)
	if err != nil {
		t.Fatalf("alerts: %v", err)
	}
	shot(t, ctx, `#v-alerts`, "view-alerts-faults.png")

	// The flood: about 100 msg/s in.
	pageOut := `(() => { const tr = [...document.querySelectorAll('#top-clients tbody tr')].find((r) => /this page/.test(r.textContent));
		return tr ? Number(tr.children[3].textContent.replace(/,/g, '')) : -1; })()`
	floodIn := `(() => { const tr = document.querySelector('#top-clients tr[data-client-id="flood"]');
		return tr ? Number(tr.children[1].textContent.replace(/,/g, '')) : -1; })()`
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-top"]`)),
		waitJS(floodIn+` >= 50 && `+pageOut+` >= 0`, floodIn+` + ' ' + `+pageOut),
	)
	if err != nil {
		t.Fatalf("top clients: %v", err)
	}
	// What the page itself receives of the flooded topic over 3 seconds:
	// its tree takes each topic's latest value once a second.
	mustEval[bool](t, ctx, `(window.got = 0, window.from = performance.now(),
		window.starling.onMessage.push((t) => { if (t === 'flood/a') window.got++; }), true)`)
	if err := chromedp.Do(ctx, waitJS(`performance.now() - window.from > 3000`, `''`)); err != nil {
		t.Fatal(err)
	}
	got, in := mustEval[float64](t, ctx, `window.got`), mustEval[float64](t, ctx, floodIn)
	if got > 5 {
		t.Errorf("the page received %v messages of the flooded topic in 3 s (the flood: %.0f msg/s): it loads the broker it watches", got, in)
	}
	// And the page's own row in the top clients is tagged as such.
	if n := mustEval[int](t, ctx, `[...document.querySelectorAll('#top-clients .badge.dashboard')].filter((b) => b.textContent === 'this page').length`); n != 1 {
		t.Errorf("%d top-client rows tagged this page", n)
	}
}
