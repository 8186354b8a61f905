package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// LoadSource reports type errors and keeps decoding, so Validate sees the
// other keys' values in the same pass; Locate puts Validate's errors at
// their key's line unless a flag gave the value.
func TestLoadSourceOnePass(t *testing.T) {
	file := filepath.Join(t.TempDir(), "s.yaml")
	data := "log_format: xml\nlimits:\n  max_inflight: many\n  max_qos: 3\ntrusted_proxies: [10.0.0.0/8, bad]\ntcp: nope\n"
	if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, src, err := LoadSource(file)
	if src == nil {
		t.Fatalf("no Source after type errors only: %v", err)
	}
	errs := append(Errors(err), Errors(cfg.Validate())...)
	src.Locate(errs, map[string]bool{"tcp": true})
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	for _, want := range []string{
		file + ":3: limits.max_inflight: cannot unmarshal !!str `many` into uint16",
		file + `:1: log_format: must be text or json (got "xml")`,
		file + ":4: limits.max_qos: must be 0, 1 or 2 (got 3)",
		file + `:5: trusted_proxies[1]: must be a CIDR such as "10.0.0.0/8" or "fd00::/8", or an address (got "bad")`,
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %q in\n%q", want, got)
		}
	}
	for _, e := range errs {
		if e.Key == "tcp" && e.File != "" {
			t.Errorf("an error for a flag's value names the file: %v", e)
		}
	}

	// A syntax error leaves nothing to check further.
	if err := os.WriteFile(file, []byte("tcp: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, src, err := LoadSource(file); src != nil || err == nil {
		t.Errorf("after a syntax error: Source %v, error %v; want nil and an error", src, err)
	}
}
