package limit

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
)

// Config holds the abuse limits the broker applies per source address and
// per client. Its keys live under "limits:" in the broker's configuration
// (embed it inline). Every limit has a default from DefaultConfig, and 0
// turns it off.
type Config struct {
	// MaxConnectionsPerAddress is the number of concurrent connections from
	// one source address (IPv6: one /64), counted after PROXY protocol and
	// trusted forwarding headers are applied. A connection above it is
	// closed at once. Default 1000 (high because many devices can share one
	// NAT address); 0 = no limit.
	MaxConnectionsPerAddress int `yaml:"max_connections_per_address"`
	// ConnectRatePerAddress is the number of new connections per second
	// accepted from one source address, with bursts of the same number
	// (at least 1). A connection above it is closed before CONNECT is read.
	// Default 50; 0 = no limit.
	ConnectRatePerAddress float64 `yaml:"connect_rate_per_address"`
	// PublishRate is the number of PUBLISH packets per second a client may
	// send, with bursts of the same number (at least 1). Above it the
	// client, whatever its protocol version and QoS, is slowed down: its
	// next packet is read only once it is back within the rate (no 0x96:
	// a DISCONNECT would lose QoS 0 messages and PUBACK cannot carry it).
	// Default 0 (no limit).
	PublishRate float64 `yaml:"publish_rate"`
	// PublishBytesRate is the number of payload bytes per second a client may
	// publish, with bursts of the same number; handled like PublishRate.
	// Default 0 (no limit).
	PublishBytesRate float64 `yaml:"publish_bytes_rate"`
	// MaxSubscriptionsPerClient is the number of subscriptions one session
	// may hold; a SUBSCRIBE above it gets 0x97 (quota exceeded) for v5 and
	// 0x80 for 3.x for the filters that do not fit. Default 10000;
	// 0 = no limit.
	MaxSubscriptionsPerClient int `yaml:"max_subscriptions_per_client"`
	// MaxTopicLength is the longest topic name or filter in bytes (1 to
	// 65535). Default 4096; 0 = the protocol maximum of 65535.
	MaxTopicLength int `yaml:"max_topic_length"`
	// MaxTopicLevels is the most levels ('/'-separated parts) in a topic
	// name or filter; "a/b/c" has 3. Default 128; 0 = no limit.
	MaxTopicLevels int `yaml:"max_topic_levels"`
	// ConnectionLogLines bounds the "client connected", "client
	// disconnected" and "session taken over" lines to this many per second
	// (bursts of the same), so a reconnect flood cannot flood the log;
	// lines over it are counted and summed up once a second as
	// "connection lines suppressed" count=N, with the count of each kind
	// (connected=, disconnected=, taken_over=). Default 50; 0 = no limit.
	ConnectionLogLines int `yaml:"connection_log_lines_per_second"`
}

// DefaultConfig returns the defaults documented on each field.
func DefaultConfig() Config {
	return Config{
		MaxConnectionsPerAddress:  1000,
		ConnectRatePerAddress:     50,
		PublishRate:               0,
		PublishBytesRate:          0,
		MaxSubscriptionsPerClient: 10000,
		MaxTopicLength:            4096,
		MaxTopicLevels:            128,
		ConnectionLogLines:        50,
	}
}

// FieldError is a bad value, named by its key path ("limits.publish_rate").
type FieldError struct {
	Key string
	Msg string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

// Validate reports every bad value as a *FieldError with key
// "limits.<key>", joined with errors.Join; nil when c is usable.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: "limits." + key, Msg: fmt.Sprintf(format, args...)})
	}
	nonNegInt := func(key string, v int) {
		if v < 0 {
			bad(key, "must be >= 0 (got %d)", v)
		}
	}
	rate := func(key string, v float64) {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			bad(key, "must be a finite number >= 0 (got %v)", v)
		}
	}
	nonNegInt("max_connections_per_address", c.MaxConnectionsPerAddress)
	rate("connect_rate_per_address", c.ConnectRatePerAddress)
	rate("publish_rate", c.PublishRate)
	rate("publish_bytes_rate", c.PublishBytesRate)
	nonNegInt("max_subscriptions_per_client", c.MaxSubscriptionsPerClient)
	if c.MaxTopicLength < 0 || c.MaxTopicLength > 65535 {
		bad("max_topic_length", "must be between 0 and 65535 (got %d)", c.MaxTopicLength)
	}
	nonNegInt("max_topic_levels", c.MaxTopicLevels)
	nonNegInt("connection_log_lines_per_second", c.ConnectionLogLines)
	return errors.Join(errs...)
}

// Burst is the burst used for a per-second rate: one second's worth, at
// least 1.
func Burst(rate float64) int {
	if rate < 1 {
		return 1
	}
	if rate > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(math.Ceil(rate))
}

// TopicOK reports whether a topic name or filter is within MaxTopicLength
// and MaxTopicLevels. It does not allocate. The broker answers a name that
// is not with 0x90 (topic name invalid) and a filter with 0x8F (topic filter
// invalid).
func (c Config) TopicOK(topic string) bool { return c.TopicExceeded(topic) == "" }

// TopicExceeded returns the key of the limit topic is over,
// "max_topic_length" or "max_topic_levels", or "" when it is within both.
// It does not allocate.
func (c Config) TopicExceeded(topic string) string {
	if c.MaxTopicLength > 0 && len(topic) > c.MaxTopicLength {
		return "max_topic_length"
	}
	if c.MaxTopicLevels > 0 {
		levels := 1
		for i := 0; i < len(topic); i++ {
			if topic[i] == '/' {
				levels++
				if levels > c.MaxTopicLevels {
					return "max_topic_levels"
				}
			}
		}
	}
	return ""
}

// NewConnLimits builds the per-address limiters from c: a nil result means
// that limit is off (the methods of a nil limiter allow everything).
func (c Config) NewConnLimits() (*PerKey, *RateByKey) {
	var pk *PerKey
	if c.MaxConnectionsPerAddress > 0 {
		pk = NewPerKey(c.MaxConnectionsPerAddress)
	}
	var rk *RateByKey
	if c.ConnectRatePerAddress > 0 {
		rk = NewRateByKey(c.ConnectRatePerAddress, Burst(c.ConnectRatePerAddress), 0)
	}
	return pk, rk
}

// ConnectionLineKinds are the kinds of connection lines, counted apart
// in the summary of those suppressed: Lines.OKKind(ConnConnected)...
var ConnectionLineKinds = []string{"connected", "disconnected", "taken_over"}

// The indexes of ConnectionLineKinds.
const (
	ConnConnected = iota
	ConnDisconnected
	ConnTakenOver
)

// NewConnectionLines returns the limiter of connection log lines writing
// to log, or nil when ConnectionLogLines is 0 (no limit).
func (c Config) NewConnectionLines(log *slog.Logger) *Lines {
	if c.ConnectionLogLines <= 0 {
		return nil
	}
	return NewTrailKinds(log, c.ConnectionLogLines, "connection", ConnectionLineKinds...)
}

// NewPublishLimits builds a client's publish limiters from c: nil when that
// limit is off.
func (c Config) NewPublishLimits() (msgs, bytes *TokenBucket) {
	if c.PublishRate > 0 {
		msgs = NewTokenBucket(c.PublishRate, Burst(c.PublishRate))
	}
	if c.PublishBytesRate > 0 {
		bytes = NewTokenBucket(c.PublishBytesRate, Burst(c.PublishBytesRate))
	}
	return msgs, bytes
}
