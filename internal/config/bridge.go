package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/starling-mqtt/starling/internal/topic"
)

// Bridge connects this broker to a remote MQTT broker: messages on its
// "out" topics are forwarded there, messages on its "in" topics are
// brought here. Zero values take the defaults given per field. See
// docs/bridge.md.
type Bridge struct {
	// Name identifies the bridge in logs, metrics and the API; unique,
	// letters, digits, '-' and '_' only.
	Name string `yaml:"name"`
	// Remote is the remote broker's URL: mqtt://host:1883,
	// mqtts://host:8883, ws://host/mqtt or wss://host:443/mqtt.
	Remote string `yaml:"remote"`
	// Protocol is the MQTT version spoken to the remote: "5" (default) or
	// "3.1.1".
	Protocol string `yaml:"protocol"`
	// ClientID is the client identifier on the remote (default
	// "starling-bridge-" and the name).
	ClientID string `yaml:"client_id"`
	// Username and Password are sent in the remote CONNECT when set.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// CertFile and KeyFile are a client certificate for mqtts and wss.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile verifies the remote's certificate (default: the system's).
	CAFile string `yaml:"ca_file"`
	// KeepAlive is the keep alive asked of the remote (default 60s).
	KeepAlive time.Duration `yaml:"keep_alive"`
	// CleanStart drops the remote session at the first connection; false
	// (default) keeps it so that nothing in flight is lost.
	CleanStart bool `yaml:"clean_start"`
	// SessionExpiry is how long the remote keeps the bridge's session
	// while the link is down (MQTT 5; default 24h).
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// MaxInflight bounds the QoS 1/2 messages sent to the remote and not
	// yet acknowledged (default 32), also capped by the remote's Receive
	// Maximum.
	MaxInflight uint16 `yaml:"max_inflight"`
	// MaxQueued and MaxQueuedBytes bound the outbound messages kept in the
	// store while the link is down (defaults 100000 and 64 MiB); past
	// them the newest QoS 1/2 messages are dropped and counted.
	MaxQueued      int `yaml:"max_queued_messages"`
	MaxQueuedBytes int `yaml:"max_queued_bytes"`
	// ReconnectMin and ReconnectMax bound the exponential back-off, with
	// jitter, between connection attempts (defaults 1s and 1m).
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// Topics are the rules of what goes out and what comes in.
	Topics []BridgeTopic `yaml:"topics"`
}

// BridgeTopic is one topic rule of a bridge, as Mosquitto's topic lines:
// the local topic is LocalPrefix+T and the remote topic RemotePrefix+T for
// every T matching Filter.
type BridgeTopic struct {
	// Direction is "out" (here to remote), "in" (remote to here) or
	// "both".
	Direction string `yaml:"direction"`
	// Filter is the topic filter, without the prefixes.
	Filter string `yaml:"filter"`
	// QoS caps the QoS of the forwarded messages (0, 1 or 2).
	QoS byte `yaml:"qos"`
	// LocalPrefix and RemotePrefix are put in front of Filter here and on
	// the remote.
	LocalPrefix  string `yaml:"local_prefix"`
	RemotePrefix string `yaml:"remote_prefix"`
}

// validateBridges checks every bridge; errors name the key path.
func validateBridges(bs []Bridge) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	names := map[string]bool{}
	for i, b := range bs {
		k := fmt.Sprintf("bridges[%d]", i)
		switch {
		case b.Name == "":
			bad(k+".name", "is required")
		case strings.Trim(b.Name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "":
			bad(k+".name", "must be letters, digits, '-' and '_' only (got %q)", b.Name)
		case names[b.Name]:
			bad(k+".name", "%q is the name of another bridge", b.Name)
		}
		names[b.Name] = true
		if u, err := url.Parse(b.Remote); err != nil || u.Host == "" {
			bad(k+".remote", "must be a URL such as mqtt://host:1883, mqtts://host:8883 or wss://host/mqtt (got %q)", b.Remote)
		} else {
			switch u.Scheme {
			case "mqtt", "mqtts", "ws", "wss":
			default:
				bad(k+".remote", "scheme must be mqtt, mqtts, ws or wss (got %q)", u.Scheme)
			}
		}
		switch b.Protocol {
		case "", "5", "3.1.1":
		default:
			bad(k+".protocol", `must be "5" or "3.1.1" (got %q)`, b.Protocol)
		}
		if (b.CertFile == "") != (b.KeyFile == "") {
			bad(k+".cert_file", "cert_file and key_file go together")
		}
		if b.KeepAlive < 0 || b.KeepAlive > 65535*time.Second {
			bad(k+".keep_alive", "must be from 0 (default 60s) to 65535s (got %v)", b.KeepAlive)
		}
		if b.SessionExpiry < 0 || b.SessionExpiry > 0xFFFFFFFF*time.Second {
			bad(k+".session_expiry", "must be from 0 (default 24h) to 4294967295s (got %v)", b.SessionExpiry)
		}
		if b.MaxQueued < 0 {
			bad(k+".max_queued_messages", "must be >= 0 (got %d; 0 = 100000)", b.MaxQueued)
		}
		if b.MaxQueuedBytes < 0 {
			bad(k+".max_queued_bytes", "must be >= 0 (got %d; 0 = 64 MiB)", b.MaxQueuedBytes)
		}
		if b.ReconnectMin < 0 || b.ReconnectMax < 0 || (b.ReconnectMax > 0 && b.ReconnectMin > b.ReconnectMax) {
			bad(k+".reconnect_min", "reconnect_min and reconnect_max must be >= 0 and min <= max (got %v, %v)", b.ReconnectMin, b.ReconnectMax)
		}
		if len(b.Topics) == 0 {
			bad(k+".topics", "needs at least one topic rule")
		}
		for j, t := range b.Topics {
			tk := fmt.Sprintf("%s.topics[%d]", k, j)
			switch t.Direction {
			case "out", "in", "both":
			default:
				bad(tk+".direction", `must be "out", "in" or "both" (got %q)`, t.Direction)
			}
			if t.QoS > 2 {
				bad(tk+".qos", "must be 0, 1 or 2 (got %d)", t.QoS)
			}
			for _, p := range []struct{ key, prefix string }{{"local_prefix", t.LocalPrefix}, {"remote_prefix", t.RemotePrefix}} {
				if strings.ContainsAny(p.prefix, "+#") {
					bad(tk+"."+p.key, "must not hold wildcards (got %q)", p.prefix)
				}
			}
			if err := topic.ValidateFilter(t.LocalPrefix + t.Filter); err != nil {
				bad(tk+".filter", "local_prefix+filter: %v", err)
			}
			if err := topic.ValidateFilter(t.RemotePrefix + t.Filter); err != nil {
				bad(tk+".filter", "remote_prefix+filter: %v", err)
			}
		}
	}
	return errs
}
