package authconfig

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	c := DefaultConfig()
	if !c.AllowAnonymous || c.CertMapping() != CertOff || c.MaxVerifications() < 2 || c.AuditRate() != 20 {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if (Config{CertUsername: ""}).CertMapping() != CertOff {
		t.Fatal(`"" is not off`)
	}
}

// TestLeaf keeps this package free of the module's other packages:
// internal/config embeds Config, and the broker imports internal/config.
func TestLeaf(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			if strings.Contains(imp.Path.Value, "starling-mqtt/starling") {
				t.Errorf("%s imports %s", f, imp.Path.Value)
			}
		}
	}
}
