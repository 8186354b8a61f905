package config

import (
	"errors"
	"fmt"
	"github.com/starling-mqtt/starling/internal/auth/authconfig"
	"github.com/starling-mqtt/starling/internal/limit"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// leaf is one scalar key of Config: its YAML path and its value in c.
type leaf struct {
	path  string
	value reflect.Value
}

// leaves lists every scalar key of v (a Config or Limits) by YAML path.
func leaves(v reflect.Value, prefix string) []leaf {
	var out []leaf
	for i := range v.NumField() {
		f := v.Type().Field(i)
		key, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" && opts == "inline" {
			out = append(out, leaves(v.Field(i), prefix)...)
			continue
		}
		if key == "" || key == "-" {
			continue
		}
		if prefix != "" {
			key = prefix + "." + key
		}
		if f.Type.Kind() == reflect.Struct {
			out = append(out, leaves(v.Field(i), key)...)
			continue
		}
		out = append(out, leaf{key, v.Field(i)})
	}
	return out
}

// equal compares two Configs, an empty list equal to a nil one (YAML's []
// decodes to an empty list, Default has nil).
func equal(a, b Config) bool {
	norm := func(c *Config) {
		pl := &c.ProxyProtocolListeners
		for _, l := range []*[]string{&c.WebSocket.Paths, &c.WebSocket.AllowedOrigins, &c.WebSocket.PublicOrigins, &c.TrustedProxies, &c.ProxyProtocol, &c.Auth.Superusers, &c.Auth.AnonymousListeners, &c.Auth.JWT.Algorithms,
			&pl.TCP, &pl.MQTTS, &pl.HTTP, &pl.HTTPS, &pl.ListenAny, &c.Cluster.Peers} {
			if len(*l) == 0 {
				*l = nil
			}
		}
		if len(c.LatestValue) == 0 {
			c.LatestValue = nil
		}
		if len(c.Bridges) == 0 {
			c.Bridges = nil
		}
	}
	norm(&a)
	norm(&b)
	return reflect.DeepEqual(a, b)
}

// errs splits a joined error into its parts.
func errs(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestDefaultValidates(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestLoadEveryKey(t *testing.T) {
	got, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		TCP:       "127.0.0.1:11883",
		HTTP:      "[::1]:18080",
		MQTTS:     "127.0.0.1:18883",
		HTTPS:     ":8443",
		ListenAny: ":8000",
		TLS: TLS{
			CertFile:     "/etc/starling/cert.pem",
			KeyFile:      "/etc/starling/key.pem",
			ClientCAFile: "/etc/starling/clients-ca.pem",
			ClientAuth:   "optional",
		},
		WebSocket: WebSocket{
			Paths:              []string{"/mqtt", "/ws"},
			AllowedOrigins:     []string{"https://app.example.com", "https://*.example.net"},
			PublicOrigins:      []string{"https://broker.example.com", "http://10.0.0.5:8080"},
			AllowNoSubprotocol: true,
			Compression:        true,
		},
		TrustedProxies: []string{"10.0.0.0/8", "fd00::/8", "192.0.2.7"},
		ProxyProtocol:  []string{"172.16.0.0/12"},
		ProxyProtocolListeners: ProxyProtocolListeners{
			TCP:       []string{"10.1.0.0/16"},
			MQTTS:     []string{"10.2.0.0/16"},
			HTTP:      []string{"10.3.0.0/16"},
			HTTPS:     []string{"10.4.0.0/16"},
			ListenAny: []string{"10.5.0.0/16", "192.0.2.9"},
		},
		Data:            "/var/lib/starling",
		Store:           "memory",
		Sync:            "interval",
		SyncInterval:    50 * time.Millisecond,
		LogLevel:        "debug",
		LogFormat:       "json",
		ShutdownTimeout: 30 * time.Second,
		IdlePoll:        false,
		Limits: Limits{
			MaxPacketSize:       65536,
			MaxInflight:         32,
			MaxQueued:           500,
			MaxQueuedBytes:      4 << 20,
			MaxTotalQueuedBytes: 256 << 20,
			MemoryLimit:         2 << 30,
			GCPercent:           200,
			MaxTopicAlias:       10,
			MaxConnections:      10000,
			MaxSessionExpiry:    24 * time.Hour,
			MaxKeepAlive:        600,
			MaxQoS:              1,
			ConnectTimeout:      2500 * time.Millisecond,
			PacketTimeout:       45 * time.Second,
			Config: limit.Config{MaxConnectionsPerAddress: 100, ConnectRatePerAddress: 10, PublishRate: 500,
				PublishBytesRate: 1048576, MaxSubscriptionsPerClient: 200, MaxTopicLength: 1024, MaxTopicLevels: 32, ConnectionLogLines: 10},
		},
		Auth: authconfig.Config{AllowAnonymous: false, AnonymousListeners: []string{"tcp"}, PasswordFile: "/etc/starling/passwd", ACLFile: "/etc/starling/acl",
			CertUsername: "cn", MaxConcurrentVerifications: 4, MaxPendingVerifications: 16, Superusers: []string{"admin"}, AuditLinesPerSecond: 20,
			JWT: authconfig.JWT{SecretFile: "/etc/starling/jwt.secret", PublicKeyFile: "/etc/starling/jwt.pub.pem",
				JWKSURL: "https://issuer.example.com/.well-known/jwks.json", JWKSRefreshInterval: 30 * time.Minute, JWKSMinRefreshInterval: 30 * time.Second,
				Algorithms: []string{"HS256", "RS256"}, Issuer: "https://issuer.example.com/", Audience: "starling", Leeway: 5 * time.Second,
				UsernameClaim: "preferred_username", ClientIDClaim: "cid", PublishClaim: "mqtt_pub", SubscribeClaim: "mqtt_sub", QueryParam: true, Cookie: "mqtt_token"},
			HTTP: authconfig.HTTP{URL: "https://broker:secret@app.example.com/mqtt-auth", Timeout: 500 * time.Millisecond, OnError: "next",
				CacheSize: 500, AllowTTL: 5 * time.Minute, DenyTTL: 30 * time.Second, Authorize: true},
			Order: []string{"http", "jwt", "password_file", "anonymous"}},
		Cluster:      Cluster{Name: "prod", Node: "n1", Listen: "10.0.0.1:6222", Peers: []string{"10.0.0.2:6222", "10.0.0.3:6222"}, Token: "0123456789abcdef-secret", LocalQueues: true},
		SlowConsumer: SlowConsumer{Timeout: 3 * time.Second, Policy: "drop_oldest", MinRate: 100},
		LatestValue:  []LatestValueRule{{Filter: "sensors/#", Listener: "http"}},
		Bridges: []Bridge{{Name: "cloud", Remote: "mqtts://cloud.example.com:8883", Protocol: "5", ClientID: "edge-1", Username: "edge", Password: "secret",
			CertFile: "/etc/starling/bridge.pem", KeyFile: "/etc/starling/bridge.key", CAFile: "/etc/starling/cloud-ca.pem", KeepAlive: 30 * time.Second,
			CleanStart: true, SessionExpiry: 2 * time.Hour, MaxInflight: 8, MaxQueued: 5000, MaxQueuedBytes: 1 << 20, ReconnectMin: 500 * time.Millisecond,
			ReconnectMax: 30 * time.Second, Topics: []BridgeTopic{{Direction: "out", Filter: "sensors/#", QoS: 1, RemotePrefix: "site1/"},
				{Direction: "in", Filter: "cmd/#", QoS: 2, LocalPrefix: "remote/", RemotePrefix: "site1/"}}}},
		Alerts: Alerts{QueueFraction: 0.8, DroppedPerSecond: 5, MaxConnections: 5000, RefusedPerMinute: 30,
			WebhookURL: "https://hooks.example.com/starling", WebhookTimeout: 3 * time.Second},
	}
	if !equal(got, want) {
		t.Errorf("Load(full.yaml) =\n%+v\nwant\n%+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// full.yaml must set every key, each away from its default, so that a
	// key added to Config without a line here fails this test.
	def := leaves(reflect.ValueOf(Default()), "")
	for i, l := range leaves(reflect.ValueOf(got), "") {
		if reflect.DeepEqual(l.value.Interface(), def[i].value.Interface()) {
			t.Errorf("testdata/full.yaml: %s is missing or equals its default", l.path)
		}
	}
}

func TestParseKeepsDefaults(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "---\n", "limits:\n", "tcp:\n"} {
		got, err := Parse([]byte(in))
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if !equal(got, Default()) {
			t.Errorf("Parse(%q) = %+v, want Default()", in, got)
		}
	}
	got, err := Parse([]byte("limits:\n  max_qos: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Limits.MaxQoS = 1
	if !equal(got, want) {
		t.Errorf("partial limits: got %+v, want %+v", got, want)
	}
	got, err = Parse([]byte(`tcp: ""` + "\n"))
	if err != nil || got.TCP != "" {
		t.Errorf(`tcp: "" gave TCP %q, %v; want "" (disabled)`, got.TCP, err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // one line per expected error
	}{
		{"unknown top-level key", "tcp: :1883\ntcpp: :1884\n",
			[]string{`line 2: tcpp: unknown key (did you mean "tcp"?)`}},
		{"unknown nested key", "limits:\n  max_qos: 1\n  max_inflihgt: 3\n",
			[]string{`line 3: limits.max_inflihgt: unknown key (did you mean "max_inflight"?)`}},
		{"limit at the top level", "max_qos: 1\n",
			[]string{`line 1: max_qos: unknown key (did you mean "limits.max_qos"?)`}},
		{"unknown key, no suggestion", "limits:\n  colour: blue\n",
			[]string{`line 2: limits.colour: unknown key`}},
		{"several unknown keys", "foo: 1\nlimits:\n  bar: 2\n",
			[]string{`line 1: foo: unknown key`, `line 3: limits.bar: unknown key`}},
		{"duration without unit", "shutdown_timeout: 5\n",
			[]string{"line 1: shutdown_timeout: cannot unmarshal !!int `5` into time.Duration: write a duration with a unit"}},
		{"bad duration", "limits:\n  connect_timeout: soon\n",
			[]string{"line 2: limits.connect_timeout: cannot unmarshal !!str `soon` into time.Duration"}},
		{"overflow", "limits:\n  max_inflight: 70000\n",
			[]string{"line 2: limits.max_inflight: cannot unmarshal !!int `70000` into uint16"}},
		{"negative into unsigned", "limits:\n  max_qos: -1\n",
			[]string{"line 2: limits.max_qos: cannot unmarshal !!int `-1` into uint8"}},
		{"scalar for a section", "limits: 3\n",
			[]string{"line 1: limits: cannot unmarshal !!int `3` into config.Limits"}},
		{"not a mapping", "- tcp\n",
			[]string{"line 1: cannot unmarshal !!seq into config.Config"}},
		{"syntax", "tcp: [\n",
			[]string{"line 1: did not find expected node content"}},
		{"two documents", "tcp: :1\n---\ntcp: :2\n",
			[]string{"line 2: a config file holds one YAML document, found another"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want %q", tt.in, tt.want)
			}
			got := errs(err)
			if len(got) != len(tt.want) {
				t.Fatalf("Parse(%q) gave %d errors:\n%v\nwant %d: %q", tt.in, len(got), err, len(tt.want), tt.want)
			}
			for i, e := range got {
				if !strings.HasPrefix(e.Error(), tt.want[i]) {
					t.Errorf("error %d = %q, want prefix %q", i, e, tt.want[i])
				}
				var ce *Error
				if !errors.As(e, &ce) {
					t.Errorf("error %d is %T, want *Error", i, e)
				}
			}
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "starling.yaml")
	if err := os.WriteFile(path, []byte("log_level: info\nlimits:\n  max_qoss: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := path + `:3: limits.max_qoss: unknown key (did you mean "max_qos"?)`
	if err == nil || err.Error() != want {
		t.Errorf("Load = %v, want %q", err, want)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.File != path || ce.Line != 3 || ce.Key != "limits.max_qoss" {
		t.Errorf("Load error = %#v", ce)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		want   string // "" = valid
	}{
		{"tcp disabled", func(c *Config) { c.TCP = "" }, ""},
		{"http disabled", func(c *Config) { c.HTTP = "" }, ""},
		{"ports 0", func(c *Config) { c.TCP, c.HTTP = "127.0.0.1:0", "127.0.0.1:0" }, ""},
		{"ipv6 and names", func(c *Config) { c.TCP, c.HTTP = "[::1]:1883", "localhost:8080" }, ""},
		{"no listener", func(c *Config) { c.TCP, c.HTTP = "", "" }, "tcp: no listener enabled"},
		{"only mqtts", func(c *Config) {
			c.TCP, c.HTTP, c.MQTTS = "", "", ":8883"
			c.TLS.CertFile, c.TLS.KeyFile = "c.pem", "k.pem"
		}, ""},
		{"only https", func(c *Config) {
			c.TCP, c.HTTP, c.HTTPS = "", "", ":8443"
			c.TLS.CertFile, c.TLS.KeyFile = "c.pem", "k.pem"
		}, ""},
		{"mqtts without cert", func(c *Config) { c.MQTTS = ":8883"; c.TLS.KeyFile = "k.pem" }, "tls.cert_file: required when mqtts is set"},
		{"https without key", func(c *Config) { c.HTTPS = ":8443"; c.TLS.CertFile = "c.pem" }, "tls.key_file: required when https is set"},
		{"cert without key, no tls listener", func(c *Config) { c.TLS.CertFile = "c.pem" }, "tls.key_file: required when tls.cert_file is set"},
		{"mqtts bad address", func(c *Config) { c.MQTTS = "8883"; c.TLS.CertFile, c.TLS.KeyFile = "c", "k" }, "mqtts: must be host:port"},
		{"https same as http", func(c *Config) { c.HTTPS = c.HTTP; c.TLS.CertFile, c.TLS.KeyFile = "c", "k" }, `https: same address as http ("127.0.0.1:8080")`},
		{"mqtts same as tcp", func(c *Config) { c.MQTTS = c.TCP; c.TLS.CertFile, c.TLS.KeyFile = "c", "k" }, `mqtts: same address as tcp ("127.0.0.1:1883")`},
		{"tls ports 0", func(c *Config) {
			c.TCP, c.HTTP, c.MQTTS, c.HTTPS = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
			c.TLS.CertFile, c.TLS.KeyFile = "c", "k"
		}, ""},
		{"client auth", func(c *Config) { c.TLS.ClientAuth = "yes" }, `tls.client_auth: must be off, optional or required (got "yes")`},
		{"http hook timeout", func(c *Config) { c.Auth.HTTP.URL, c.Auth.HTTP.Timeout = "http://127.0.0.1:9/auth", 2*time.Minute }, "auth.http.timeout: must be between 0 and 1m (got 2m0s)"},
		{"auth order", func(c *Config) { c.Auth.Order = []string{"ldap", "anonymous"} }, `auth.order[0]: must be one of password_file, jwt, http, anonymous (got "ldap")`},
		{"client auth empty", func(c *Config) { c.TLS.ClientAuth = "" }, `tls.client_auth: must be off, optional or required (got "")`},
		{"client auth without ca", func(c *Config) { c.TLS.ClientAuth = "required" }, "tls.client_ca_file: required when tls.client_auth is required"},
		{"client auth optional", func(c *Config) { c.TLS.ClientAuth, c.TLS.ClientCAFile = "optional", "ca.pem" }, ""},
		{"no ws path", func(c *Config) { c.WebSocket.Paths = nil }, "websocket.paths: must list at least one path"},
		{"no ws path, no http", func(c *Config) { c.WebSocket.Paths, c.HTTP = nil, "" }, ""},
		{"ws path relative", func(c *Config) { c.WebSocket.Paths = []string{"/mqtt", "mqtt"} }, `websocket.paths[1]: must start with "/" (got "mqtt")`},
		{"ws path pattern", func(c *Config) { c.WebSocket.Paths = []string{"/{x}"} }, `websocket.paths[0]: must be a plain URL path`},
		{"ws path unclean", func(c *Config) { c.WebSocket.Paths = []string{"/mqtt/"} }, `websocket.paths[0]: must be a clean path, such as "/mqtt" (got "/mqtt/")`},
		{"ws path twice", func(c *Config) { c.WebSocket.Paths = []string{"/mqtt", "/mqtt"} }, `websocket.paths[1]: listed twice ("/mqtt")`},
		{"ws paths ok", func(c *Config) { c.WebSocket.Paths = []string{"/", "/mqtt", "/a/b"} }, ""},
		{"alerts ok", func(c *Config) {
			c.Alerts = Alerts{QueueFraction: 1, DroppedPerSecond: 2.5, MaxConnections: 10, RefusedPerMinute: 3, WebhookURL: "http://127.0.0.1:9/h", WebhookTimeout: time.Second}
		}, ""},
		{"alerts fraction", func(c *Config) { c.Alerts.QueueFraction = 1.5 }, "alerts.queue_fraction: must be from 0 to 1"},
		{"alerts dropped", func(c *Config) { c.Alerts.DroppedPerSecond = -1 }, "alerts.dropped_per_second: must be >= 0"},
		{"alerts connections", func(c *Config) { c.Alerts.MaxConnections = -1 }, "alerts.max_connections: must be >= 0"},
		{"alerts refused", func(c *Config) { c.Alerts.RefusedPerMinute = -1 }, "alerts.refused_per_minute: must be >= 0"},
		{"alerts webhook scheme", func(c *Config) { c.Alerts.WebhookURL = "ftp://x/y" }, "alerts.webhook_url: must be an http or https URL"},
		{"alerts webhook timeout", func(c *Config) { c.Alerts.WebhookTimeout = 0 }, "alerts.webhook_timeout: must be > 0"},
		{"origin no scheme", func(c *Config) { c.WebSocket.AllowedOrigins = []string{"example.com"} }, `websocket.allowed_origins[0]: must be an origin`},
		{"origin with path", func(c *Config) { c.WebSocket.AllowedOrigins = []string{"https://a.example/"} }, `websocket.allowed_origins[0]: must be scheme://host[:port], without a path`},
		{"public origin pattern", func(c *Config) { c.WebSocket.PublicOrigins = []string{"https://*.example.com"} }, `websocket.public_origins[0]: must be scheme://host[:port], without a path or '*'`},
		{"public origin scheme", func(c *Config) { c.WebSocket.PublicOrigins = []string{"ws://broker.example.com"} }, `websocket.public_origins[0]: must be an http or https origin`},
		{"origins ok", func(c *Config) {
			c.WebSocket.AllowedOrigins = []string{"*", "null", "https://*.example.com", "http://localhost:8080"}
		}, ""},
		{"trusted proxy bad", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "10.0.0.0/33"} }, `trusted_proxies[1]: must be a CIDR such as "10.0.0.0/8"`},
		{"trusted proxy name", func(c *Config) { c.TrustedProxies = []string{"proxy.local"} }, `trusted_proxies[0]: must be a CIDR`},
		{"proxy protocol bad", func(c *Config) { c.ProxyProtocol = []string{"lb.local"} }, `proxy_protocol[0]: must be a CIDR`},
		{"proxy protocol ok", func(c *Config) { c.ProxyProtocol = []string{"10.0.0.0/8", "192.0.2.1"} }, ""},
		{"trusted proxies ok", func(c *Config) { c.TrustedProxies = []string{"127.0.0.1", "::1", "10.1.2.3/8", "fd00::/8"} }, ""},
		{"same address", func(c *Config) { c.TCP, c.HTTP = ":1883", ":1883" }, `http: same address as tcp (":1883")`},
		{"tcp no port", func(c *Config) { c.TCP = "localhost" }, `tcp: must be host:port`},
		{"memory limit", func(c *Config) { c.Limits.MemoryLimit = -2 }, `limits.memory_limit: must be -1 (none), 0 (derived) or a size in bytes (got -2)`},
		{"gc off without limit", func(c *Config) { c.Limits.GCPercent, c.Limits.MemoryLimit = -1, -1 }, `limits.gc_percent: -1 (off) needs a memory limit`},
		{"http bad port", func(c *Config) { c.HTTP = ":http" }, `http: port must be a number from 0 to 65535 (got ":http")`},
		{"port too big", func(c *Config) { c.TCP = ":65536" }, `tcp: port must be a number`},
		{"log level", func(c *Config) { c.LogLevel = "verbose" }, `log_level: must be debug, info, warn or error (got "verbose")`},
		{"log level case", func(c *Config) { c.LogLevel = "INFO" }, `log_level: must be`},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, `log_format: must be text or json (got "xml")`},
		{"shutdown zero", func(c *Config) { c.ShutdownTimeout = 0 }, `shutdown_timeout: must be > 0 (got 0s)`},
		{"packet small", func(c *Config) { c.Limits.MaxPacketSize = 15 }, `limits.max_packet_size: must be between 16 and 268435460 (got 15)`},
		{"packet large", func(c *Config) { c.Limits.MaxPacketSize = 268435461 }, `limits.max_packet_size: must be between`},
		{"packet bounds ok", func(c *Config) { c.Limits.MaxPacketSize = 16 }, ""},
		{"packet max ok", func(c *Config) { c.Limits.MaxPacketSize = 268435460 }, ""},
		{"inflight", func(c *Config) { c.Limits.MaxInflight = 0 }, `limits.max_inflight: must be at least 1 (got 0)`},
		{"queued negative", func(c *Config) { c.Limits.MaxQueued = -1 }, `limits.max_queued_messages: must be >= 0 (got -1)`},
		{"queued zero ok", func(c *Config) { c.Limits.MaxQueued = 0 }, ""},
		{"connections negative", func(c *Config) { c.Limits.MaxConnections = -5 }, `limits.max_connections: must be >= 0`},
		{"expiry negative", func(c *Config) { c.Limits.MaxSessionExpiry = -time.Second }, `limits.max_session_expiry: must be >= 0`},
		{"qos", func(c *Config) { c.Limits.MaxQoS = 3 }, `limits.max_qos: must be 0, 1 or 2 (got 3)`},
		{"qos 0 ok", func(c *Config) { c.Limits.MaxQoS = 0 }, ""},
		{"connect timeout", func(c *Config) { c.Limits.ConnectTimeout = -time.Second }, `limits.connect_timeout: must be > 0 (got -1s)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.change(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			got := errs(err)
			if len(got) != 1 || !strings.HasPrefix(got[0].Error(), tt.want) {
				t.Fatalf("Validate() = %v, want one error starting %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.LogFormat = "xml"
	c.Limits.MaxQoS = 9
	c.Limits.MaxInflight = 0
	err := c.Validate()
	want := "log_format: must be text or json (got \"xml\")\n" +
		"limits.max_inflight: must be at least 1 (got 0)\n" +
		"limits.max_qos: must be 0, 1 or 2 (got 9)"
	if err == nil || err.Error() != want {
		t.Errorf("Validate() =\n%v\nwant\n%s", err, want)
	}
}

func TestTrustedProxyPrefixes(t *testing.T) {
	c := Default()
	c.TrustedProxies = []string{"127.0.0.1", "::1", "10.1.2.3/8", "::ffff:192.0.2.0/120", "fe80::1%eth0", "junk"}
	var got []string
	for _, p := range c.TrustedProxyPrefixes() {
		got = append(got, p.String())
	}
	want := []string{"127.0.0.1/32", "::1/128", "10.0.0.0/8", "192.0.2.0/24"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TrustedProxyPrefixes() = %q, want %q", got, want)
	}
	c.ProxyProtocol = []string{"10.1.2.3/8", "bad"}
	if got := c.ProxyProtocolPrefixes(); len(got) != 1 || got[0].String() != "10.0.0.0/8" {
		t.Errorf("ProxyProtocolPrefixes() = %v, want [10.0.0.0/8]", got)
	}
}

func TestSlogLevel(t *testing.T) {
	for in, want := range map[string]string{"debug": "DEBUG", "info": "INFO", "warn": "WARN", "error": "ERROR", "bogus": "INFO"} {
		c := Default()
		c.LogLevel = in
		if got := c.SlogLevel().String(); got != want {
			t.Errorf("SlogLevel(%q) = %s, want %s", in, got, want)
		}
	}
}

// A listener's own PROXY protocol list replaces proxy_protocol; an empty
// one follows it.
func TestProxyProtocolFor(t *testing.T) {
	c := Default()
	c.ProxyProtocol = []string{"10.0.0.0/8"}
	c.ProxyProtocolListeners.HTTPS = []string{"192.0.2.1", "fd00::/8"}
	for listener, want := range map[string]string{
		"tcp": "[10.0.0.0/8]", "mqtts": "[10.0.0.0/8]", "http": "[10.0.0.0/8]", "listen_any": "[10.0.0.0/8]",
		"https": "[192.0.2.1/32 fd00::/8]",
	} {
		if got := fmt.Sprint(c.ProxyProtocolFor(listener)); got != want {
			t.Errorf("ProxyProtocolFor(%q) = %s, want %s", listener, got, want)
		}
	}
	c.ProxyProtocolListeners.ListenAny = []string{"not-an-address"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "proxy_protocol_listeners.listen_any[0]") {
		t.Errorf("Validate with a bad listen_any entry: %v", err)
	}
}

func TestClusterValidation(t *testing.T) {
	for _, c := range []struct {
		cl   Cluster
		want string // substring of the error, "" for valid
	}{
		{Cluster{}, ""},
		{Cluster{Name: "c", Listen: "127.0.0.1:6222", Peers: []string{"127.0.0.1:6223"}}, ""},
		{Cluster{Name: "c"}, "cluster.listen: required"},
		{Cluster{Listen: "127.0.0.1:6222"}, "cluster.name: required"},
		{Cluster{Name: "c", Listen: "nope"}, "cluster.listen"},
		{Cluster{Name: "c", Listen: ":6222", Peers: []string{"x"}}, "cluster.peers[0]"},
		{Cluster{Name: "c", Listen: ":6222", Token: "short"}, "cluster.token: at least 16"},
	} {
		cfg := Default()
		cfg.Cluster = c.cl
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", c.cl, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: error %v, want one containing %q", c.cl, err, c.want)
		}
	}
}

// TestBridgeValidation: a bad bridge is reported with its key path.
func TestBridgeValidation(t *testing.T) {
	c := Default()
	c.Bridges = []Bridge{
		{Name: "a b", Remote: "http://x", Protocol: "4", CertFile: "c.pem", KeepAlive: -time.Second,
			Topics: []BridgeTopic{{Direction: "up", Filter: "a/#/b", QoS: 3, LocalPrefix: "+/"}}},
		{Name: "ok", Remote: "mqtt://127.0.0.1:1883"},
		{Name: "ok", Remote: "wss://h/mqtt", Topics: []BridgeTopic{{Direction: "both", Filter: "#"}}},
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted bad bridges")
	}
	for _, key := range []string{"bridges[0].name", "bridges[0].remote", "bridges[0].protocol", "bridges[0].cert_file", "bridges[0].keep_alive",
		"bridges[0].topics[0].direction", "bridges[0].topics[0].qos", "bridges[0].topics[0].local_prefix", "bridges[0].topics[0].filter",
		"bridges[1].topics", "bridges[2].name"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("no error for %s in:\n%v", key, err)
		}
	}
	c.Bridges = c.Bridges[2:]
	if err := c.Validate(); err != nil {
		t.Errorf("a good bridge: %v", err)
	}
}
