package config

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// starling.example.yaml sets every key, each with a comment, at its
// default but for data, and its keys are the rows of docs/configuration.md.
// cmd/starling's
// TestExampleConfigPassesCheck runs -check on it.
func TestExampleConfigFile(t *testing.T) {
	const file = "../../starling.example.yaml"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Data = cfg.Data
	if !equal(cfg, want) {
		t.Errorf("%s: every key but data should be at its default; it gives\n%+v", file, cfg)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	var keys []keyAt
	walk(&root, "", &keys)
	set := map[string]bool{}
	lines := strings.Split(string(data), "\n")
	for _, k := range keys {
		if k.name == "" {
			continue // a list item
		}
		set[k.path] = true
		line := lines[k.keyLine-1]
		above := ""
		if k.keyLine >= 2 {
			above = strings.TrimSpace(lines[k.keyLine-2])
		}
		if !strings.Contains(line, "#") && !strings.HasPrefix(above, "#") {
			t.Errorf("%s:%d: key %s has no comment", file, k.keyLine, k.path)
		}
	}
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaves(reflect.ValueOf(Default()), "") {
		if !set[l.path] {
			t.Errorf("%s: lacks key %s", file, l.path)
		}
		if !strings.Contains(string(doc), "\n| `"+l.path+"` |") {
			t.Errorf("%s sets %s, which docs/configuration.md has no row for", file, l.path)
		}
	}
}
