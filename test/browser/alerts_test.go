package browser

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/starling-mqtt/starling/internal/admin"
	"github.com/starling-mqtt/starling/internal/config"
)

// An alert over a threshold from the config shows in the Alerts view and
// goes to the webhook (a loopback HTTP server); Acknowledge marks it, the
// bar stops counting it, and the mark survives a reload (the broker keeps
// it).
func TestDashboardAlertsAck(t *testing.T) {
	t.Parallel()
	posts := make(chan admin.WebhookPayload, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p admin.WebhookPayload
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &p); err != nil {
			t.Errorf("webhook body %s: %v", b, err)
		}
		posts <- p
	}))
	t.Cleanup(hook.Close)
	ctx := browser(t, 1200, 900)
	srv := startServerWith(t, config.Default().Limits, nil, "127.0.0.1:0", func(o *admin.Options) {
		o.Alerts = &admin.AlertOptions{QueueFraction: 0.5, MaxConnections: 2, WebhookURL: hook.URL}
	})
	// Three clients are over 2 without the page too: the alert holds while
	// the page reloads (an alert raised again after it stopped loses its
	// acknowledgement, by design).
	mqttClient(t, srv.tcpAddr, "c1")
	mqttClient(t, srv.tcpAddr, "c2")
	mqttClient(t, srv.tcpAddr, "c3") // with the page: 4 clients

	err := chromedp.Do(ctx,
		logIn(srv.url),
		chromedp.WaitVisible(chromedp.CSS(`#alerts li.connections`)),
		waitText(`#alerts li.connections`, contains("4 clients connected, over alerts.max_connections 2")),
		waitText(`#alert-count`, is("1")),
	)
	if err != nil {
		t.Fatalf("alert: %v", err)
	}
	select {
	case p := <-posts:
		if p.Alert.Kind != "connections" || p.Version != "test" {
			t.Errorf("webhook got %+v", p)
		}
	case <-ctx.Done():
		t.Fatal("nothing posted to the webhook")
	}
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#nav a[href="#v-alerts"]`)),
		clickLive(`#alerts li.connections button.ack`),
		waitText(`#ack-status`, is("acknowledged 1 connections")),
		chromedp.WaitVisible(chromedp.CSS(`#alerts li.connections.acked span.badge.acked`)),
		waitText(`#alert-count`, is("")),
	)
	if err != nil {
		t.Fatalf("acknowledge: %v", err)
	}
	shot(t, ctx, `#v-alerts`, "view-alerts-ack.png")
	if err := chromedp.Do(ctx, chromedp.Reload(), logIn(srv.url),
		chromedp.WaitVisible(chromedp.CSS(`#alerts li.connections.acked`)), waitText(`#alert-count`, is(""))); err != nil {
		t.Fatalf("after a reload: %v", err)
	}
}
