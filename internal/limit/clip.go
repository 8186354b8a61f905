package limit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"strconv"
	"unicode/utf8"
)

// Log line bounds. A client chooses its client ID, user name and topics
// (each up to 65,535 bytes); written whole, a few thousand CONNECTs with
// such fields write more log than the attacker sent. The handler from Clip
// cuts them.
const (
	// MaxLogField is the most bytes of a client-supplied field (ClientKeys)
	// a log line carries before the mark of the cut.
	MaxLogField = 64
	// MaxLogValue is the most bytes of any other string or error value of
	// a log line (an error may quote a client's topic).
	MaxLogValue = 512
)

// ClientKeys are the log keys whose values a client chooses.
var ClientKeys = map[string]bool{
	"client_id": true, "username": true, "user": true, "topic": true, "filter": true,
	"will_topic": true, "group": true, "method": true, "subject": true,
}

// ClipValue cuts s to max bytes (at a UTF-8 boundary) and marks the cut
// with the whole value's length and a short hash, so lines about the same
// long value can still be matched: "abc…(65535 bytes, sha256:1a2b3c4d5e6f)".
// A value of at most max bytes is returned as is, without allocating.
func ClipValue(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	sum := sha256.Sum256([]byte(s))
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes, sha256:" + hex.EncodeToString(sum[:6]) + ")"
}

// Clip wraps h so that every line it handles has its client-supplied
// fields (ClientKeys) cut to MaxLogField bytes and any other string or
// error value to MaxLogValue bytes, groups included. Lines with nothing to
// cut pass through unchanged.
func Clip(h slog.Handler) slog.Handler {
	if _, ok := h.(clipHandler); ok {
		return h
	}
	return clipHandler{h}
}

type clipHandler struct{ next slog.Handler }

func (c clipHandler) Enabled(ctx context.Context, l slog.Level) bool { return c.next.Enabled(ctx, l) }

func (c clipHandler) Handle(ctx context.Context, r slog.Record) error {
	long := false
	r.Attrs(func(a slog.Attr) bool {
		_, long = clipAttr(a)
		return !long
	})
	if !long {
		return c.next.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		a, _ = clipAttr(a)
		out.AddAttrs(a)
		return true
	})
	return c.next.Handle(ctx, out)
}

func (c clipHandler) WithAttrs(as []slog.Attr) slog.Handler {
	cl := make([]slog.Attr, len(as))
	for i, a := range as {
		cl[i], _ = clipAttr(a)
	}
	return clipHandler{c.next.WithAttrs(cl)}
}

func (c clipHandler) WithGroup(name string) slog.Handler { return clipHandler{c.next.WithGroup(name)} }

// clipAttr returns a with its value cut, and whether anything was cut.
func clipAttr(a slog.Attr) (slog.Attr, bool) {
	max := MaxLogValue
	if ClientKeys[a.Key] {
		max = MaxLogField
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); len(s) > max {
			return slog.String(a.Key, ClipValue(s, max)), true
		}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			if s := x.Error(); len(s) > max {
				return slog.String(a.Key, ClipValue(s, max)), true
			}
		case []byte:
			if len(x) > max {
				return slog.String(a.Key, ClipValue(string(x), max)), true
			}
		case string:
			if len(x) > max {
				return slog.String(a.Key, ClipValue(x, max)), true
			}
		}
	case slog.KindGroup:
		g := v.Group()
		var out []slog.Attr
		for i, ga := range g {
			if c, cut := clipAttr(ga); cut {
				if out == nil {
					out = append([]slog.Attr(nil), g...)
				}
				out[i] = c
			}
		}
		if out != nil {
			return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}, true
		}
	}
	return a, false
}
