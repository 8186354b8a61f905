package config

import (
	"os"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParse checks that Parse never panics, that whatever it accepts can be
// validated, and that an accepted config written back as YAML parses to the
// same config. Seeds: testdata/fuzz/FuzzParse and testdata/full.yaml.
func FuzzParse(f *testing.F) {
	full, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("Parse(%q): empty error message", data)
			}
			return
		}
		_ = cfg.Validate()
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", cfg, err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(Parse(%q))) = %v; YAML:\n%s", data, err, out)
		}
		if !equal(again, cfg) {
			t.Fatalf("round trip of %q:\n got %+v\nwant %+v", data, again, cfg)
		}
	})
}
