package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/pebble"
)

const storeUsage = `usage: starling store <command> [-data DIR]

Inspect the data folder of a stopped broker (read-only):
  sessions   one line per session: client ID, expiry, disconnected at, subscriptions, outbound messages
  retained   one line per retained message: topic, QoS, payload size, expiry
  export     everything as JSON lines, payloads in base64
`

// runStore runs `starling store ...` with args after "store" and returns
// the exit code.
func runStore(args []string) int { return runStoreTo(args, os.Stdout, os.Stderr) }

// runStoreTo is runStore writing to stdout and stderr (the signature of the
// subcommands map in main.go).
func runStoreTo(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, storeUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd := args[0]
	run := map[string]func(s store.Store, w io.Writer) error{
		"sessions": storeSessions,
		"retained": storeRetained,
		"export":   storeExport,
	}[cmd]
	if run == nil {
		fmt.Fprintf(stderr, "starling store: unknown command %q\n%s", cmd, storeUsage)
		return 2
	}
	fs := flag.NewFlagSet("starling store "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data", "./data", "data `folder` of the store")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "starling store %s: unexpected argument %q\n", cmd, fs.Arg(0))
		return 2
	}
	s, err := pebble.Open(*dir, pebble.Options{ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
	if errors.Is(err, pebble.ErrLocked) {
		fmt.Fprintf(stderr, "starling store: %s is in use by a running broker, which holds its lock.\n"+
			"Stop the broker first, or inspect a copy: cp -a %s /tmp/starling-copy && starling store %s -data /tmp/starling-copy\n",
			*dir, *dir, cmd)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "starling %v\n", err)
		return 1
	}
	defer s.Close()
	if err := run(s, stdout); err != nil {
		fmt.Fprintf(stderr, "starling store %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// storePrintable quotes s when it would break a column (spaces, control
// characters, empty).
func storePrintable(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

func storeExpiry(sec uint32) string {
	if sec == 0xFFFFFFFF {
		return "never"
	}
	return (time.Duration(sec) * time.Second).String()
}

func storeSessions(s store.Store, w io.Writer) error {
	type row struct {
		s          *store.Session
		subs, outs int
	}
	var rows []*row
	byID := map[string]*row{}
	err := s.Load(store.Visitor{
		Session: func(x *store.Session) error {
			r := &row{s: x}
			rows = append(rows, r)
			byID[x.ClientID] = r
			return nil
		},
		Subscription: func(id string, _ *store.Subscription) error {
			if r := byID[id]; r != nil {
				r.subs++
			}
			return nil
		},
		Outbound: func(id string, _ uint64, _ *store.Outbound) error {
			if r := byID[id]; r != nil {
				r.outs++
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT ID\tEXPIRY\tDISCONNECTED AT\tSUBSCRIPTIONS\tOUTBOUND")
	for _, r := range rows {
		disc := "connected at shutdown"
		if !r.s.DisconnectedAt.IsZero() {
			disc = r.s.DisconnectedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", storePrintable(r.s.ClientID), storeExpiry(r.s.ExpiryInterval), disc, r.subs, r.outs)
	}
	return tw.Flush()
}

func storeRetained(s store.Store, w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tQOS\tPAYLOAD BYTES\tEXPIRY")
	err := s.Load(store.Visitor{Retained: func(m *store.Message) error {
		exp := "never"
		if !m.Expiry.IsZero() {
			exp = m.Expiry.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", storePrintable(m.Topic), m.QoS, len(m.Payload), exp)
		return nil
	}})
	if err != nil {
		return err
	}
	return tw.Flush()
}

// The JSON lines of export; []byte fields are base64 (encoding/json).

type storeJSONUserProperty struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type storeJSONMessage struct {
	Topic           string                  `json:"topic"`
	Payload         []byte                  `json:"payload"`
	QoS             byte                    `json:"qos"`
	Retain          bool                    `json:"retain,omitempty"`
	PayloadFormat   *byte                   `json:"payload_format,omitempty"`
	ContentType     string                  `json:"content_type,omitempty"`
	ResponseTopic   string                  `json:"response_topic,omitempty"`
	CorrelationData []byte                  `json:"correlation_data,omitempty"`
	UserProperties  []storeJSONUserProperty `json:"user_properties,omitempty"`
	Expiry          *time.Time              `json:"expiry,omitempty"`
	Publisher       string                  `json:"publisher,omitempty"`
}

func toStoreJSONMessage(m *store.Message) storeJSONMessage {
	j := storeJSONMessage{
		Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain,
		PayloadFormat: m.Props.PayloadFormat, ContentType: m.Props.ContentType,
		ResponseTopic: m.Props.ResponseTopic, CorrelationData: m.Props.CorrelationData,
		Publisher: m.Publisher,
	}
	if j.Payload == nil {
		j.Payload = []byte{}
	}
	for _, u := range m.Props.UserProperties {
		j.UserProperties = append(j.UserProperties, storeJSONUserProperty(u))
	}
	if !m.Expiry.IsZero() {
		t := m.Expiry.UTC()
		j.Expiry = &t
	}
	return j
}

type storeJSONWill struct {
	storeJSONMessage
	DelaySeconds   float64 `json:"delay_seconds"`
	ExpiryInterval uint32  `json:"expiry_interval"`
}

type storeJSONSession struct {
	Kind           string         `json:"kind"` // "session"
	ClientID       string         `json:"client_id"`
	Version        byte           `json:"version"`
	ExpiryInterval uint32         `json:"expiry_interval"`
	DisconnectedAt *time.Time     `json:"disconnected_at,omitempty"`
	Will           *storeJSONWill `json:"will,omitempty"`
}

type storeJSONStoredMessage struct {
	Kind string `json:"kind"` // "message"
	ID   uint64 `json:"id"`
	storeJSONMessage
}

type storeJSONRetained struct {
	Kind string `json:"kind"` // "retained"
	storeJSONMessage
}

type storeJSONSubscription struct {
	Kind              string `json:"kind"` // "subscription"
	ClientID          string `json:"client_id"`
	Filter            string `json:"filter"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local"`
	RetainAsPublished bool   `json:"retain_as_published"`
	RetainHandling    byte   `json:"retain_handling"`
	SubscriptionID    int    `json:"subscription_id,omitempty"`
}

type storeJSONOutbound struct {
	Kind      string `json:"kind"` // "outbound"
	ClientID  string `json:"client_id"`
	Seq       uint64 `json:"seq"`
	MessageID uint64 `json:"message_id"`
	QoS       byte   `json:"qos"`
	Retain    bool   `json:"retain"`
	SubIDs    []int  `json:"subscription_ids,omitempty"`
	Group     string `json:"group,omitempty"`
	Filter    string `json:"filter,omitempty"`
	PacketID  uint16 `json:"packet_id"`
	State     string `json:"state"`
}

type storeJSONInbound struct {
	Kind     string `json:"kind"` // "inbound"
	ClientID string `json:"client_id"`
	PacketID uint16 `json:"packet_id"`
}

var storeOutboundStates = map[byte]string{
	store.Queued: "queued", store.WaitPuback: "wait_puback", store.WaitPubrec: "wait_pubrec", store.WaitPubcomp: "wait_pubcomp",
}

func storeExport(s store.Store, w io.Writer) error {
	enc := json.NewEncoder(w)
	return s.Load(store.Visitor{
		Session: func(x *store.Session) error {
			r := storeJSONSession{Kind: "session", ClientID: x.ClientID, Version: x.Version, ExpiryInterval: x.ExpiryInterval}
			if !x.DisconnectedAt.IsZero() {
				t := x.DisconnectedAt.UTC()
				r.DisconnectedAt = &t
			}
			if x.Will != nil {
				r.Will = &storeJSONWill{toStoreJSONMessage(&x.Will.Message), x.Will.Delay.Seconds(), x.Will.ExpiryInterval}
			}
			return enc.Encode(r)
		},
		Message: func(id uint64, m *store.Message) error {
			return enc.Encode(storeJSONStoredMessage{"message", id, toStoreJSONMessage(m)})
		},
		Subscription: func(id string, x *store.Subscription) error {
			return enc.Encode(storeJSONSubscription{Kind: "subscription", ClientID: id, Filter: x.Filter, QoS: x.Options.QoS,
				NoLocal: x.Options.NoLocal, RetainAsPublished: x.Options.RetainAsPublished,
				RetainHandling: x.Options.RetainHandling, SubscriptionID: x.ID})
		},
		Outbound: func(id string, seq uint64, o *store.Outbound) error {
			state := storeOutboundStates[o.State]
			if state == "" {
				state = strconv.Itoa(int(o.State))
			}
			return enc.Encode(storeJSONOutbound{Kind: "outbound", ClientID: id, Seq: seq, MessageID: o.MessageID, QoS: o.QoS,
				Retain: o.Retain, SubIDs: o.SubIDs, Group: o.Group, Filter: o.Filter, PacketID: o.PacketID, State: state})
		},
		Inbound: func(id string, pid uint16) error {
			return enc.Encode(storeJSONInbound{"inbound", id, pid})
		},
		Retained: func(m *store.Message) error {
			return enc.Encode(storeJSONRetained{"retained", toStoreJSONMessage(m)})
		},
	})
}
