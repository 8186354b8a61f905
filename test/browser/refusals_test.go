package browser

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/brokertest"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
)

// guardAuth refuses the password "wrong" and denies topics under vault/.
type guardAuth struct{}

func (guardAuth) Authenticate(_ context.Context, c *broker.ConnectInfo) (broker.Identity, packet.ReasonCode, error) {
	if string(c.Password) == "wrong" {
		return broker.Identity{}, packet.BadUsernameOrPassword, nil
	}
	return broker.Identity{Username: c.Username}, packet.Success, nil
}

func (guardAuth) Allow(_ *broker.ClientInfo, _ broker.Action, topic string) bool {
	return !strings.HasPrefix(topic, "vault/")
}

// Refused logins and ACL denials appear live in the Refusals view, a
// retrying client's attempts counted on one line, and they are still
// there after the page is reloaded: the broker keeps them.
func TestDashboardRefusals(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 1000)
	srv := startServerAuthz(t, config.Default().Limits, guardAuth{})
	if err := chromedp.Do(ctx, logIn(srv.url), chromedp.Click(chromedp.CSS(`#nav a[href="#v-refusals"]`))); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		nc, err := net.DialTimeout("tcp", srv.tcpAddr, brokertest.Patience(t))
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{ClientID: "burglar", Conn: nc})
		cctx, cancel := context.WithTimeout(t.Context(), brokertest.Patience(t))
		c.Connect(cctx, &paho.Connect{ClientID: "burglar", Username: "eve", UsernameFlag: true, Password: []byte("wrong"), PasswordFlag: true, KeepAlive: 30})
		cancel()
		nc.Close()
	}
	c, _ := mqttClient(t, srv.tcpAddr, "snoop")
	cctx, cancel := context.WithTimeout(t.Context(), brokertest.Patience(t))
	defer cancel()
	c.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "vault/#", QoS: 1}}})
	c.Publish(cctx, &paho.Publish{Topic: "vault/door", QoS: 1, Payload: []byte("open")})

	check := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		return chromedp.Do(ctx,
			waitText(`#refusals tr[data-kind="connect_refused"][data-client-id="burglar"]`, func(s string) bool {
				return strings.Contains(s, "login refused") && strings.Contains(s, "eve") && strings.Contains(s, "0x86") && strings.HasSuffix(s, "4")
			}),
			waitText(`#refusals tr[data-kind="subscribe_denied"][data-client-id="snoop"]`, contains("vault/#")),
			waitText(`#refusals tr[data-kind="publish_denied"][data-client-id="snoop"]`, contains("vault/door")),
			waitText(`#refusal-totals`, contains("login refused 4")),
		)
	})
	if err := chromedp.Do(ctx, check); err != nil {
		t.Fatalf("live: %v", err)
	}
	shot(t, ctx, `#v-refusals`, "view-refusals.png")
	// Reloaded: the history comes back from the broker.
	if err := chromedp.Do(ctx, chromedp.Reload(), logIn(srv.url), check); err != nil {
		t.Fatalf("after a reload: %v", err)
	}
	// The kind filter.
	mustEval[bool](t, ctx, `(() => { const s = document.querySelector('#refusal-kind'); s.value = 'publish_denied'; return s.dispatchEvent(new Event('change')); })()`)
	err := chromedp.Do(ctx,
		waitJS(`document.querySelectorAll('#refusals tbody tr').length === 1 && !!document.querySelector('#refusals tr[data-kind="publish_denied"]')`,
			`document.querySelector('#refusals tbody').textContent`),
	)
	if err != nil {
		t.Fatalf("filter: %v", err)
	}
}
