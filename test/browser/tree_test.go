package browser

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling/internal/brokertest"
)

// The topic tree shows each topic's subscriber count, read from the
// broker's subscription index (the page's own subscription not counted),
// pretty-prints a JSON payload, and shows any other payload as text on one
// line: markup stays text, control characters and bytes that are not
// UTF-8 become escapes.
func TestDashboardTopicTree(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	srv := startServer(t)
	err := chromedp.Do(ctx,
		signIn(srv.url),
		waitText(`#topic-status`, contains("watching #")),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}

	// Two subscriptions match the status topic (one of them $share), one
	// the note topic; nothing the raw topic.
	reader, _ := mqttClient(t, srv.tcpAddr, "reader")
	other, _ := mqttClient(t, srv.tcpAddr, "other")
	sctx, cancel := context.WithTimeout(context.Background(), brokertest.Patience(t))
	defer cancel()
	if _, err := reader.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "plant/+/status", QoS: 1}, {Topic: "plant/line-2/note", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "$share/ops/plant/#", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	pub, _ := mqttClient(t, srv.tcpAddr, "publisher")
	for _, m := range []struct {
		topic   string
		payload []byte
	}{
		{"plant/line-2/status", []byte(`{"state":"running","rpm":1200,"tags":["a","b"],"ok":true}`)},
		{"plant/line-2/note", []byte(`<img src=x onerror="document.title='pwned'"> line 1` + "\nline 2")},
		{"plant/line-2/raw", []byte{0xff, 0x00, 'a', 0x7f}},
	} {
		if _, err := pub.Publish(sctx, &paho.Publish{Topic: m.topic, QoS: 1, Payload: m.payload}); err != nil {
			t.Fatal(err)
		}
	}

	row := func(topic string) string { return `#tree li[data-topic="` + topic + `"] > .row` }
	err = chromedp.Do(ctx,
		waitText(row("plant/line-2/status")+` > .subs`, is("2 subscribers")),
		waitText(row("plant/line-2/status")+` > pre.payload.json`,
			is("{\n  \"state\": \"running\",\n  \"rpm\": 1200,\n  \"tags\": [\n    \"a\",\n    \"b\"\n  ],\n  \"ok\": true\n}")),
		waitText(row("plant/line-2/note")+` > .subs`, is("2 subscribers")),
		waitText(row("plant/line-2/note")+` > code.payload`,
			is(`<img src=x onerror="document.title='pwned'"> line 1\nline 2`)),
		waitText(row("plant/line-2/raw")+` > .subs`, is("1 subscriber")),
		waitText(row("plant/line-2/raw")+` > code.payload`, is(`\xff\x00a\x7f`)),
	)
	if err != nil {
		t.Fatalf("topic tree: %v", err)
	}
	// The markup stayed text.
	imgs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#tree img').length`))
	if err != nil || imgs != 0 {
		t.Errorf("payload became markup: %d img elements (%v)", imgs, err)
	}
	title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.title`))
	if err != nil || title == "pwned" {
		t.Errorf("payload ran as script: title %q (%v)", title, err)
	}

	// A new subscriber is counted at the next refresh.
	if _, err := other.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "plant/line-2/raw", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, waitText(row("plant/line-2/raw")+` > .subs`, is("2 subscribers"))); err != nil {
		t.Fatalf("new subscriber not counted: %v", err)
	}
	shot(t, ctx, `#v-tree`, "dashboard-tree.png")
}
