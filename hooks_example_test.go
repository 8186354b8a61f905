package starling_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
)

// devices is an embedding program's own user store: a device may connect
// with its token and use only its own topic tree.
type devices struct{ tokens map[string]string }

func (d devices) Authenticate(ctx context.Context, c *starling.ConnectInfo) (starling.Identity, starling.ReasonCode, error) {
	if !c.HasUsername {
		return starling.Identity{}, starling.ReasonNotAuthorized, nil
	}
	if tok, ok := d.tokens[c.Username]; !ok || !c.HasPassword || tok != string(c.Password) {
		return starling.Identity{}, starling.ReasonBadUsernameOrPassword, nil
	}
	return starling.Identity{Username: c.Username}, starling.ReasonSuccess, nil
}

func (d devices) Allow(c *starling.ClientInfo, act starling.Action, topic string) bool {
	return strings.HasPrefix(topic, "devices/"+c.Username+"/")
}

// A broker whose clients are checked by the embedding program: a wrong
// token gets CONNACK 0x86, no user name 0x87, and a device subscribing
// outside its tree SUBACK 0x87.
func ExampleWithAuthenticator() {
	cfg := starling.DefaultConfig()
	cfg.TCP = "127.0.0.1:0"
	cfg.HTTP = ""
	cfg.Store = "memory"
	d := devices{tokens: map[string]string{"dev-1": "s3cret"}}
	srv, err := starling.New(cfg, starling.WithLogger(slog.New(slog.DiscardHandler)),
		starling.WithAuthenticator(d), starling.WithAuthorizer(d))
	if err != nil {
		panic(err)
	}
	go srv.Serve()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	connect := func(user, pass string) *paho.Client {
		nc, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			panic(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: nc})
		ack, err := c.Connect(ctx, &paho.Connect{ClientID: "c-" + user, CleanStart: true,
			Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != ""})
		fmt.Printf("CONNACK %#02x\n", ack.ReasonCode)
		if err != nil {
			nc.Close()
			return nil
		}
		return c
	}
	connect("dev-1", "wrong")
	connect("", "")
	c := connect("dev-1", "s3cret")
	sa, _ := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/dev-1/cmd", QoS: 1}, {Topic: "devices/dev-2/cmd", QoS: 1}}})
	fmt.Printf("SUBACK %#02x %#02x\n", sa.Reasons[0], sa.Reasons[1])
	c.Disconnect(&paho.Disconnect{})
	// Output:
	// CONNACK 0x86
	// CONNACK 0x87
	// CONNACK 0x00
	// SUBACK 0x01 0x87
}
