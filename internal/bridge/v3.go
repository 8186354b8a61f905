package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"hash/maphash"
	"net/url"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// startV3 connects an MQTT 3.1.1 remote with paho.mqtt.golang: clean
// session false (unless clean_start), manual acknowledgements, and
// automatic reconnection (paho's back-off, 1 s doubling up to
// reconnect_max, with a jitter of up to reconnect_min before each attempt).
func (br *Bridge) startV3(u *url.URL, tlsCfg *tls.Config) {
	echo := newEchoes()
	o := mqtt.NewClientOptions().AddBroker(u.String()).SetClientID(br.cfg.ClientID).
		SetUsername(br.cfg.Username).SetPassword(br.cfg.Password).SetProtocolVersion(4).
		SetCleanSession(br.cfg.CleanStart).SetKeepAlive(br.cfg.KeepAlive).
		SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(br.cfg.ReconnectMin).SetMaxReconnectInterval(br.cfg.ReconnectMax).
		// In order, and acknowledged only once stored here.
		SetOrderMatters(true).SetAutoAckDisabled(true).SetResumeSubs(true).
		SetStore(newCopyStore()) // see copyStore: the library's own races on reconnect
	if tlsCfg != nil {
		o.SetTLSConfig(tlsCfg)
	}
	o.SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) {
		time.Sleep(Backoff(br.cfg.ReconnectMin, br.cfg.ReconnectMin)(0)) // jitter: bridges cut together spread out
	})
	gone := make(chan struct{}) // closed when the current connection is lost
	var goneMu sync.Mutex
	o.SetOnConnectHandler(func(c mqtt.Client) {
		goneMu.Lock()
		gone = make(chan struct{})
		goneMu.Unlock()
		br.connects.Add(1)
		br.connected.Store(true)
		br.log.Info("bridge connected", "remote", redact(br.cfg.Remote), "protocol", "3.1.1")
		subs := map[string]byte{}
		for _, r := range br.rules {
			if r.in {
				subs[r.remoteFilter] = r.QoS
			}
		}
		br.mu.Lock()
		close(br.up)
		br.mu.Unlock()
		br.changed()
		if len(subs) > 0 {
			go func() {
				t := c.SubscribeMultiple(subs, nil)
				if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
					br.fail("remote subscribe", errors.Join(errors.New("no SUBACK"), t.Error()))
				}
			}()
		}
	})
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		goneMu.Lock()
		close(gone)
		goneMu.Unlock()
		br.fail("remote", err)
		br.remoteDown()
	})
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		// 3.1.1 has no no-local: the echo of what a "both" rule sent out
		// comes back; it is recognised and dropped.
		if echo.take(m.Topic(), m.Payload()) {
			m.Ack()
			return
		}
		goneMu.Lock()
		g := gone
		goneMu.Unlock()
		if br.routeIn(m.Topic(), m.Qos(), m.Retained(), m.Payload(), nil, g) {
			m.Ack()
		}
	})
	cli := mqtt.NewClient(o)
	cli.Connect() // retried in the background (ConnectRetry)
	br.publish = func(ctx context.Context, out *paho.Publish) (bool, error) {
		if _, _, ok := br.match(out.Topic, false); ok {
			echo.add(out.Topic, out.Payload) // an in rule subscribes to it there
		}
		t := cli.Publish(out.Topic, out.QoS, out.Retain, out.Payload)
		select {
		case <-t.Done():
			return false, t.Error()
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	br.closeRemote = func() { cli.Disconnect(250) }
}

// echoes remembers messages sent out over "both" rules for a minute, so
// that their echo from a 3.1.1 remote is not brought back in.
type echoes struct {
	mu   sync.Mutex
	seed maphash.Seed
	seen map[uint64][]time.Time // hash of topic and payload -> when sent
}

const (
	echoWindow = time.Minute
	echoMax    = 100000 // entries; past it the oldest are forgotten first on expiry
)

func newEchoes() *echoes { return &echoes{seed: maphash.MakeSeed(), seen: map[uint64][]time.Time{}} }

func (e *echoes) key(topic string, payload []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(e.seed)
	h.WriteString(topic)
	h.WriteByte(0)
	h.Write(payload)
	return h.Sum64()
}

func (e *echoes) add(topic string, payload []byte) {
	k, now := e.key(topic, payload), time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.seen) >= echoMax {
		for k, ts := range e.seen {
			if now.Sub(ts[len(ts)-1]) > echoWindow {
				delete(e.seen, k)
			}
		}
		if len(e.seen) >= echoMax {
			return // a flood of distinct messages: echoes may come back in
		}
	}
	e.seen[k] = append(e.seen[k], now)
}

// take reports whether a message is the echo of one sent out, and forgets
// that one.
func (e *echoes) take(topic string, payload []byte) bool {
	k, now := e.key(topic, payload), time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	ts := e.seen[k]
	for len(ts) > 0 && now.Sub(ts[0]) > echoWindow {
		ts = ts[1:]
	}
	if len(ts) == 0 {
		delete(e.seen, k)
		return false
	}
	if len(ts) == 1 {
		delete(e.seen, k)
	} else {
		e.seen[k] = ts[1:]
	}
	return true
}
