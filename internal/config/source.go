package config

import (
	"errors"
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/starling-mqtt/starling/internal/auth/authconfig"
)

// Source is a config file as read, kept to place the problems found after
// loading (by Validate, or by checks of the files the config names) at the
// line of their key.
type Source struct {
	File string
	keys []keyAt
}

// LoadSource is Load for a check that reports every problem in one pass.
// After type errors (unknown keys, values of the wrong type) it returns,
// with those errors, the config with every other key decoded, so that
// Validate can report the bad values too. After a syntax error or a file
// that cannot be read there is nothing more to check: the Source is nil.
// The Source places the errors found later.
func LoadSource(path string) (Config, *Source, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Default(), nil, fmt.Errorf("config: %w", err)
	}
	cfg, usable, err := parsePartial(data, path)
	if !usable {
		return cfg, nil, err
	}
	src := &Source{File: path}
	var root yaml.Node
	if yaml.Unmarshal(data, &root) == nil {
		walk(&root, "", &src.keys)
	}
	return cfg, src, err
}

// Line returns the line of key (a path such as "limits.max_qos" or
// "trusted_proxies[0]") in the file, or 0 when the file does not set it.
func (s *Source) Line(key string) int {
	if s == nil {
		return 0
	}
	for _, k := range s.keys {
		if k.path == key {
			return k.keyLine
		}
	}
	return 0
}

// Errors flattens err (errors.Join trees) into one *Error per problem: an
// *authconfig.FieldError becomes an *Error with the same key and message,
// and any other error an *Error with only a message.
func Errors(err error) []*Error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*Error
		for _, e := range j.Unwrap() {
			out = append(out, Errors(e)...)
		}
		return out
	}
	var ce *Error
	if errors.As(err, &ce) {
		return []*Error{ce}
	}
	var fe *authconfig.FieldError
	if errors.As(err, &fe) {
		return []*Error{{Key: fe.Key, Msg: fe.Msg}}
	}
	return []*Error{{Msg: err.Error()}}
}

// Locate gives each error of errs that has no file yet the file's name,
// and the line of its key when the file sets that key, unless the key is
// in fromFlags (its value came from the command line, not the file).
func (s *Source) Locate(errs []*Error, fromFlags map[string]bool) {
	if s == nil {
		return
	}
	for _, e := range errs {
		if e.File != "" || fromFlags[e.Key] || fromFlags[baseKey(e.Key)] {
			continue
		}
		e.File = s.File
		e.Line = s.Line(e.Key)
		if e.Line == 0 { // an item of a list the file sets: the list's line
			e.Line = s.Line(baseKey(e.Key))
		}
	}
}

// baseKey strips a trailing list index: "cluster.peers[1]" → "cluster.peers".
func baseKey(key string) string {
	if i := len(key) - 1; i > 0 && key[i] == ']' {
		for j := i; j > 0; j-- {
			if key[j] == '[' {
				return key[:j]
			}
		}
	}
	return key
}
