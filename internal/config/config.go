// Package config is Starling's typed configuration. Field comments are the
// user documentation; docs/configuration.md says the same in the same words,
// and a test checks that it documents every key with its default.
//
// A configuration file is YAML, decoded strictly: an unknown key is an error
// that names the key and its line. Durations are Go duration strings such as
// "500ms", "10s" or "1h30m". Keys left out keep their defaults (Default).
package config

import (
	"time"

	"github.com/starling-mqtt/starling/internal/auth/authconfig"
	"github.com/starling-mqtt/starling/internal/limit"
)

// Config is everything a broker needs to start. The zero value is not useful:
// start from Default(), then check the result with Validate.
type Config struct {
	// TCP is the address for MQTT over plain TCP, as host:port ("" disables
	// it; port 0 picks a free port). The default is loopback only: write
	// ":1883" to accept other machines.
	TCP string `yaml:"tcp"`
	// HTTP is the address for MQTT over WebSocket, the dashboard and the HTTP
	// API, as host:port ("" disables it; port 0 picks a free port). The
	// default is loopback only: write ":8080" to accept other machines.
	HTTP string `yaml:"http"`
	// MQTTS is the address for MQTT over TLS, as host:port ("" disables it;
	// 8883 by convention). Needs tls.cert_file and tls.key_file.
	MQTTS string `yaml:"mqtts"`
	// HTTPS is the address of the HTTP listener over TLS: MQTT over secure
	// WebSocket (wss), as host:port ("" disables it; 443 or 8443 by
	// convention). Needs tls.cert_file and tls.key_file.
	HTTPS string `yaml:"https"`
	// ListenAny is the address of a single-port listener ("" disables it)
	// that tells by a connection's first byte what it carries: MQTT
	// (CONNECT), TLS (then MQTT or HTTP inside, told the same way; needs
	// tls.cert_file and tls.key_file) or HTTP (WebSocket, dashboard, API).
	ListenAny string `yaml:"listen_any"`
	// TLS holds the certificate for the mqtts and https listeners.
	TLS TLS `yaml:"tls"`
	// WebSocket configures MQTT over WebSocket on the http and https
	// listeners.
	WebSocket WebSocket `yaml:"websocket"`
	// TrustedProxies lists the proxies, as CIDRs ("10.0.0.0/8") or single
	// addresses, whose X-Forwarded-For and Forwarded headers are believed on
	// the http and https listeners; the client address is then read from
	// those headers right to left, skipping trusted proxies. Empty: the
	// headers are ignored and the client address is the TCP peer.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ProxyProtocol lists the load balancers, as CIDRs or single addresses,
	// that put a PROXY protocol header (v1 or v2) in front of every
	// connection they pass on, on every listener (tcp, mqtts, http, https,
	// listen_any) that has no list of its own in ProxyProtocolListeners.
	// A connection from them must start with one, and the header's source
	// address becomes the client address; a connection from any other
	// address must not send one. Empty: the PROXY protocol is off.
	ProxyProtocol []string `yaml:"proxy_protocol"`
	// ProxyProtocolListeners gives listeners their own PROXY protocol
	// balancers: a listener whose list here is not empty uses it instead of
	// ProxyProtocol. To have the PROXY protocol on some listeners only,
	// leave ProxyProtocol empty and list the balancers here.
	ProxyProtocolListeners ProxyProtocolListeners `yaml:"proxy_protocol_listeners"`
	// Data is the folder for the embedded store.
	Data string `yaml:"data"`
	// Store is where sessions, queued and inflight messages and retained
	// messages are kept: "pebble" (durable, in the data folder) or "memory"
	// (nothing survives a restart; for tests and throwaway brokers).
	Store string `yaml:"store"`
	// Sync is when the store forces writes to disk: "always" (an
	// acknowledgement waits for a synced commit, shared by concurrent
	// writers), "interval" (synced every sync_interval in the background: a
	// crash of the machine loses at most that window) or "none" (left to the
	// operating system). See docs/durability.md.
	Sync string `yaml:"sync"`
	// SyncInterval is the background sync period for sync: interval.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format"`
	// ShutdownTimeout bounds how long a graceful stop waits for clients
	// (must be > 0).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// IdlePoll lets a connection that waits for its next packet do so
	// without a goroutine: its socket waits in an epoll set instead (Linux;
	// plain TCP and WebSocket over plain TCP; TLS keeps a goroutine). It
	// saves about 5 KiB per idle connection. A connection parks at once
	// after CONNECT, and after other packets once it has had no input for
	// 20 ms.
	IdlePoll bool `yaml:"idle_poll"`
	// Auth is who may connect and what they may do; see docs/security.md.
	Auth authconfig.Config `yaml:"auth"`
	// Limits bounds what clients may use.
	Limits Limits `yaml:"limits"`
	// Cluster joins other Starling nodes into one broker; see
	// docs/cluster.md. Without a name the broker is a single node.
	Cluster Cluster `yaml:"cluster"`
	// SlowConsumer is what happens to a connected subscriber that holds
	// its publishers back without taking messages; see docs/flow-control.md.
	SlowConsumer SlowConsumer `yaml:"slow_consumer"`
	// LatestValue lists subscriptions that get latest-value delivery
	// (conflation) without asking for it, such as 3.1.1 clients': while
	// such a subscriber is behind, a queued message is replaced by a newer
	// one of the same topic. MQTT 5 clients may also ask for it per
	// subscription; see docs/flow-control.md.
	LatestValue []LatestValueRule `yaml:"latest_value"`
	// Bridges connect this broker to other MQTT brokers; see Bridge and
	// docs/bridge.md.
	Bridges []Bridge `yaml:"bridges"`
	// Alerts sets when the dashboard's alerts are raised, and where they
	// are sent; see docs/observability.md.
	Alerts Alerts `yaml:"alerts"`
}

// Alerts are the thresholds of the dashboard's alerts and an optional
// webhook that receives each new one.
type Alerts struct {
	// QueueFraction raises a slow-consumer alert for a connected client
	// whose queue is at least this fraction of limits.max_queued_messages
	// (0 to 1; 0 turns this condition off).
	QueueFraction float64 `yaml:"queue_fraction"`
	// DroppedPerSecond raises a dropped alert when a client (or the broker
	// outside any session) drops more deliveries per second than this over
	// a feed interval; 0: any drop.
	DroppedPerSecond float64 `yaml:"dropped_per_second"`
	// MaxConnections raises a connections alert while more clients than
	// this are connected; 0: off.
	MaxConnections int `yaml:"max_connections"`
	// RefusedPerMinute raises a refused-logins alert when more CONNECTs
	// than this were refused over the last minute; 0: off.
	RefusedPerMinute int `yaml:"refused_per_minute"`
	// WebhookURL, when set, receives each new alert (and one raised again
	// after it had stopped) as a JSON POST; http or https.
	WebhookURL string `yaml:"webhook_url"`
	// WebhookTimeout bounds each webhook request (must be > 0).
	WebhookTimeout time.Duration `yaml:"webhook_timeout"`
}

// SlowConsumer says how long a connected subscriber whose window and queue
// are full may hold back its publishers without taking a message, and
// what happens to it then.
type SlowConsumer struct {
	// Timeout is how long a subscriber may hold its publishers back
	// without taking a message (must be > 0). Past it, Policy applies, so
	// no stuck client holds a publisher longer than this.
	Timeout time.Duration `yaml:"timeout"`
	// Policy is disconnect (the client is disconnected, with v5 reason
	// 0x97 quota exceeded; a persistent session then queues within its
	// limits), drop_oldest or drop_newest (messages past its queue bound
	// are dropped and counted until it takes one again).
	Policy string `yaml:"policy"`
	// MinRate, when above 0, is the messages per second a subscriber that
	// holds its publishers back must take over each Timeout; a slower one
	// meets Policy too. 0 = off: a subscriber that makes progress sets the
	// pace, as on TCP.
	MinRate float64 `yaml:"min_rate"`
}

// LatestValueRule gives latest-value delivery to the subscriptions whose
// filter matches Filter (a topic filter: "sensors/#" matches subscriptions
// to sensors/# and to sensors/a/+), on listener Listener ("" = every
// listener; tcp, mqtts, http, https or listen_any).
type LatestValueRule struct {
	Filter   string `yaml:"filter"`
	Listener string `yaml:"listener"`
}

// Cluster says how this node joins a cluster of Starling nodes.
type Cluster struct {
	// Name is the cluster's name, the same on every node ("" = no cluster).
	Name string `yaml:"name"`
	// Node is this node's name, unique in the cluster ("" = host name and
	// cluster address).
	Node string `yaml:"node"`
	// Listen is the host:port other nodes connect to (required with name).
	Listen string `yaml:"listen"`
	// Peers are the other nodes' listen addresses, as host:port.
	Peers []string `yaml:"peers"`
	// Token is a shared secret every node must present to join ("" = no
	// check: then only a private network may reach the cluster port).
	Token string `yaml:"token"`
	// LocalQueues keeps persistent sessions' queued and inflight QoS 1/2
	// messages on their node only, not replicated: much faster for
	// fan-out to many persistent sessions, but lost with a node that dies.
	LocalQueues bool `yaml:"local_queues"`
}

// TLS is the server certificate and the client-certificate policy of the
// mqtts and https listeners.
type TLS struct {
	// CertFile is the PEM file of the server certificate, followed by its
	// intermediates (required when mqtts or https is set). The file is read
	// again when it changes and on SIGHUP.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM file of the certificate's private key (required
	// when mqtts or https is set).
	KeyFile string `yaml:"key_file"`
	// ClientCAFile is a PEM file of the CA certificates that client
	// certificates must chain to (required when client_auth is optional or
	// required).
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is off (no client certificate asked for), optional (a
	// client certificate, if sent, must verify) or required (a client without
	// a verified certificate is refused).
	ClientAuth string `yaml:"client_auth"`
}

// WebSocket configures MQTT over WebSocket on the http and https listeners.
type WebSocket struct {
	// Paths are the URL paths that serve MQTT over WebSocket, matched
	// exactly (at least one; each starts with "/").
	Paths []string `yaml:"paths"`
	// AllowedOrigins lists the browser origins allowed to connect besides
	// same-origin pages and clients that send no Origin: exact
	// ("https://app.example.com") or with '*' matching any run of characters
	// except '/' ("https://*.example.com"); "*" allows every origin. Other
	// origins get 403.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// PublicOrigins are the origins browsers reach this broker's HTTP
	// listeners by, scheme://host[:port] ("https://broker.example.com"):
	// a page of one of these is same-origin. Without them, same-origin
	// means a page of the connection's own address and port, of
	// localhost on a loopback connection, or over TLS of a name in the
	// certificate at the listener's port; the request's Host header is
	// not trusted (DNS rebinding). Set them behind a reverse proxy or a
	// port mapping. See docs/websocket.md.
	PublicOrigins []string `yaml:"public_origins"`
	// AllowNoSubprotocol accepts clients that offer no WebSocket subprotocol
	// (some old clients); by default they get 400. Clients that offer only
	// subprotocols other than mqtt and mqttv3.1 are always refused.
	AllowNoSubprotocol bool `yaml:"allow_no_subprotocol"`
	// Compression accepts permessage-deflate (RFC 7692) from clients that
	// offer it, without context takeover either way: each message is
	// compressed on its own, so an idle connection holds no compression
	// state. A compressed message may expand to at most
	// limits.max_packet_size bytes, else the connection is closed (1009).
	Compression bool `yaml:"compression"`
}

// ProxyProtocolListeners holds per-listener PROXY protocol balancers (CIDRs
// or single addresses); an empty list means the listener follows
// proxy_protocol.
type ProxyProtocolListeners struct {
	TCP       []string `yaml:"tcp"`
	MQTTS     []string `yaml:"mqtts"`
	HTTP      []string `yaml:"http"`
	HTTPS     []string `yaml:"https"`
	ListenAny []string `yaml:"listen_any"`
}

// Limits are the protocol limits the broker enforces and announces to MQTT 5
// clients in CONNACK.
type Limits struct {
	// MaxPacketSize is the largest packet accepted from a client, in bytes,
	// between 16 and 268435460 (announced as Maximum Packet Size; a larger
	// packet gets 0x95).
	MaxPacketSize uint32 `yaml:"max_packet_size"`
	// MaxInflight is the number of unacknowledged QoS 1/2 messages the broker
	// accepts from a client (announced as Receive Maximum) and the most it
	// sends to one before waiting for acknowledgements (at least 1). The
	// outbound window is also bounded by MaxQueuedBytes of topic and
	// payload, so a large window cannot hold more than that per client.
	MaxInflight uint16 `yaml:"max_inflight"`
	// MaxQueued is the number of QoS 1/2 messages kept per session while it
	// is offline or its inflight window is full. Offline and full, the
	// newest message is dropped for that session (and counted), so what was
	// queued first is delivered first. Connected and full, nothing is
	// dropped: the publishers that feed it are held back until it has room
	// (see slow_consumer). QoS 0 messages are not queued for an offline
	// session.
	MaxQueued int `yaml:"max_queued_messages"`
	// MaxQueuedBytes bounds the topic and payload bytes of those queued
	// messages per session, and of the QoS 0 messages waiting for a
	// connected client that reads slowly (0 = no bound), as MaxQueued
	// does: offline, past it a message is dropped and counted; connected,
	// its publishers are held back. One message is always let in, whatever
	// its size.
	MaxQueuedBytes int `yaml:"max_queued_bytes"`
	// MaxTotalQueuedBytes bounds the topic and payload bytes queued across
	// all sessions and connections (0 = no bound). Past it, publishers are
	// held back until queues drain below it, the busiest first (a client
	// that publishes more often meets the wait more often), instead of the
	// broker growing or dropping.
	MaxTotalQueuedBytes int64 `yaml:"max_total_queued_bytes"`
	// MemoryLimit is the Go runtime's soft memory limit for the starling
	// binary, in bytes: the collector works harder as the heap nears it.
	// 0 = derived: twice MaxTotalQueuedBytes plus 512 MiB (none when that
	// is 0); -1 = none. A GOMEMLIMIT in the environment wins.
	MemoryLimit int64 `yaml:"memory_limit"`
	// GCPercent is the collector's target for the starling binary (Go's
	// GOGC): a cycle starts when the heap has grown by this percentage
	// since the last one. Higher means fewer cycles, and fewer pauses in
	// the latency tail, for more memory; MemoryLimit caps it. 0 = derived:
	// Go's 100, raised to a heap of a 32nd of the memory limit (at most 64
	// MiB) while the broker allocates enough for ten cycles a second at 100; -1 =
	// off, the memory limit alone starts cycles (needs one). A GOGC in the
	// environment wins.
	GCPercent int `yaml:"gc_percent"`
	// MaxTopicAlias is the number of topic aliases a client may use (announced
	// as Topic Alias Maximum; 0 disables client aliases).
	MaxTopicAlias uint16 `yaml:"max_topic_alias"`
	// MaxConnections is the number of concurrent client connections (0 = no
	// limit); a client above it gets 0x97 / server unavailable.
	MaxConnections int `yaml:"max_connections"`
	// MaxSessionExpiry caps the session expiry interval a client may ask for
	// (0 = no cap).
	MaxSessionExpiry time.Duration `yaml:"max_session_expiry"`
	// MaxKeepAlive caps the keep alive a client may ask for, in seconds
	// (0 = no cap); when set, an MQTT 5 client asking for more, or for 0, is
	// answered with Server Keep Alive, and an MQTT 3.x client, which cannot
	// be told, is refused (CONNACK 2, identifier rejected).
	MaxKeepAlive uint16 `yaml:"max_keep_alive"`
	// MaxQoS is the highest QoS the broker accepts (0, 1 or 2).
	MaxQoS byte `yaml:"max_qos"`
	// ConnectTimeout is how long a new connection may take to send CONNECT
	// (must be > 0).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// PacketTimeout bounds the time from a packet's first byte to its
	// last, whatever the keep alive (a client may ask for none): a client
	// that starts a packet and stalls is cut then (MQTT 5: DISCONNECT
	// 0x97), so it cannot hold the memory of a partial packet for ever.
	// Raise it for large packets over slow links: the default lets a
	// 1 MiB packet arrive at 18 KiB/s. 0 = no bound but the keep alive.
	PacketTimeout time.Duration `yaml:"packet_timeout"`
	// Config holds the abuse limits (per address, per client, topics); its
	// keys sit directly under limits:. See docs/security.md.
	limit.Config `yaml:",inline"`
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		TCP:             "127.0.0.1:1883",
		HTTP:            "127.0.0.1:8080",
		MQTTS:           "",
		HTTPS:           "",
		TLS:             TLS{ClientAuth: "off"},
		WebSocket:       WebSocket{Paths: []string{"/mqtt"}},
		Data:            "./data",
		Store:           "pebble",
		Sync:            "always",
		SyncInterval:    100 * time.Millisecond,
		LogLevel:        "info",
		LogFormat:       "text",
		ShutdownTimeout: 5 * time.Second,
		IdlePoll:        true,
		Auth:            authconfig.DefaultConfig(),
		SlowConsumer:    SlowConsumer{Timeout: 2 * time.Second, Policy: "disconnect"},
		Alerts:          Alerts{QueueFraction: 0.5, WebhookTimeout: 5 * time.Second},
		Limits: Limits{
			MaxPacketSize:       1 << 20,
			MaxInflight:         256,
			MaxQueued:           1000,
			MaxQueuedBytes:      16 << 20,
			MaxTotalQueuedBytes: 1 << 30,
			MaxTopicAlias:       64,
			MaxConnections:      0,
			MaxSessionExpiry:    0,
			MaxKeepAlive:        0,
			MaxQoS:              2,
			ConnectTimeout:      10 * time.Second,
			PacketTimeout:       time.Minute,
			Config:              limit.DefaultConfig(),
		},
	}
}
