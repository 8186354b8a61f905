package starling_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/starling-mqtt/starling"
)

// A broker embedded in a program, and an MQTT 5 client talking to it.
func Example() {
	cfg := starling.DefaultConfig()
	cfg.TCP = "127.0.0.1:0" // any free port on loopback
	cfg.HTTP = ""
	cfg.Store = "memory" // nothing kept on disk for this example
	srv, err := starling.New(cfg, starling.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		panic(err)
	}
	go srv.Serve()
	defer srv.Close()

	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		panic(err)
	}
	got := make(chan string, 1)
	c := paho.NewClient(paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet.Topic + " " + string(pr.Packet.Payload)
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "example", CleanStart: true}); err != nil {
		panic(err)
	}
	c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "greetings/#", QoS: 1}}})
	c.Publish(ctx, &paho.Publish{Topic: "greetings/world", QoS: 1, Payload: []byte("hello")})
	fmt.Println(<-got)
	c.Disconnect(&paho.Disconnect{})
	<-c.Done()
	// Output: greetings/world hello
}
