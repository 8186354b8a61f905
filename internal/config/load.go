package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem with one configuration key. Load, Parse and Validate
// return one Error per problem, joined with errors.Join; errors.As finds the
// first.
type Error struct {
	File string // the file, when the problem came from Load
	Line int    // the 1-based line in the file, when known (Load and Parse)
	Key  string // the key path, e.g. "limits.max_qos"; "" when not known
	Msg  string // what is wrong
}

// Error formats e as "file:line: key: msg", leaving out what is unknown:
// Validate's errors read "limits.max_qos: must be 0, 1 or 2 (got 3)".
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads the YAML file at path over Default(): keys the file leaves out
// keep their defaults. Decoding is strict: an unknown key, a value of the
// wrong type or a second YAML document is an error naming the file, line and
// key. Load does not call Validate: the caller may still change the result
// (command-line flags, say) and should validate after that.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return parse(data, path)
}

// Parse is Load for a file already in memory.
func Parse(data []byte) (Config, error) { return parse(data, "") }

func parse(data []byte, file string) (Config, error) {
	cfg, _, err := parsePartial(data, file)
	if err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// parsePartial is parse, except that after type errors only (unknown keys,
// values of the wrong type) it also returns the config with every other
// key decoded, the bad ones keeping their defaults, and usable true.
func parsePartial(data []byte, file string) (cfg Config, usable bool, err error) {
	cfg = Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) { // empty, or only comments
			return Default(), true, nil
		}
		var te *yaml.TypeError
		if errors.As(err, &te) { // yaml.v3 decodes the rest before reporting these
			return cfg, true, explain(data, file, err)
		}
		return Default(), false, explain(data, file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return Default(), false, explain(data, file, err)
		}
		return Default(), false, &Error{File: file, Line: extra.Line, Msg: "a config file holds one YAML document, found another"}
	}
	return cfg, true, nil
}

// explain turns a yaml error into Errors that name the key path of each
// problem, found by line in the document's node tree.
func explain(data []byte, file string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		line, msg := splitLine(strings.TrimPrefix(err.Error(), "yaml: "))
		return &Error{File: file, Line: line, Msg: msg}
	}
	var keys []keyAt
	var root yaml.Node
	if yaml.Unmarshal(data, &root) == nil {
		walk(&root, "", &keys)
	}
	errs := make([]error, 0, len(te.Errors))
	for _, s := range te.Errors {
		line, msg := splitLine(s)
		e := &Error{File: file, Line: line, Msg: msg}
		if name, typ, ok := unknownField(msg); ok {
			e.Msg = "unknown key"
			for _, k := range keys {
				if k.keyLine == line && k.name == name {
					e.Key = k.path
					break
				}
			}
			if e.Key == "" {
				e.Key = name
			}
			if s := suggest(name, typ); s != "" {
				e.Msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
		} else {
			for _, k := range keys {
				if k.valueLine == line && k.scalar {
					e.Key = k.path
					break
				}
			}
			if strings.HasSuffix(msg, "into time.Duration") {
				e.Msg += `: write a duration with a unit, such as "0s", "500ms" or "5s"`
			}
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// unknownField parses yaml's "field NAME not found in type TYPE".
func unknownField(msg string) (name, typ string, ok bool) {
	rest, ok := strings.CutPrefix(msg, "field ")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, " not found in type ")
	if i < 0 {
		return "", "", false
	}
	return rest[:i], rest[i+len(" not found in type "):], true
}

// splitLine splits "line 3: msg" into 3 and "msg".
func splitLine(s string) (int, string) {
	rest, ok := strings.CutPrefix(s, "line ")
	if !ok {
		return 0, s
	}
	num, msg, ok := strings.Cut(rest, ": ")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		return 0, s
	}
	return n, msg
}

// keyAt is one mapping key of a YAML document.
type keyAt struct {
	path, name         string
	keyLine, valueLine int
	scalar             bool // the value is a scalar
}

func walk(n *yaml.Node, prefix string, out *[]keyAt) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walk(c, prefix, out)
		}
	case yaml.SequenceNode: // list items, "trusted_proxies[0]", as Validate names them
		if prefix == "" {
			return // a document that is a list, not a config
		}
		for i, v := range n.Content {
			path := fmt.Sprintf("%s[%d]", prefix, i)
			*out = append(*out, keyAt{path, "", v.Line, v.Line, v.Kind == yaml.ScalarNode})
			walk(v, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			*out = append(*out, keyAt{path, k.Value, k.Line, v.Line, v.Kind == yaml.ScalarNode})
			walk(v, path, out)
		}
	}
}

// keyTypes are the structs a config file maps onto, by the name yaml's
// errors give them.
var keyTypes = map[string]reflect.Type{
	"config.Config":    reflect.TypeFor[Config](),
	"config.Limits":    reflect.TypeFor[Limits](),
	"config.TLS":       reflect.TypeFor[TLS](),
	"config.WebSocket": reflect.TypeFor[WebSocket](),

	"config.ProxyProtocolListeners": reflect.TypeFor[ProxyProtocolListeners](),
}

// suggest returns the key of the struct named typ closest to name, if one is
// close enough to be a likely typo.
func suggest(name, typ string) string {
	t, ok := keyTypes[typ]
	if !ok {
		return ""
	}
	if t == keyTypes["config.Config"] { // a limit written at the top level
		l := keyTypes["config.Limits"]
		for i := range l.NumField() {
			if key, _, _ := strings.Cut(l.Field(i).Tag.Get("yaml"), ","); key == name {
				return "limits." + key
			}
		}
	}
	best, bestDist := "", 3 // suggest at most two edits away
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if d := editDistance(strings.ToLower(name), key); d < bestDist {
			best, bestDist = key, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
