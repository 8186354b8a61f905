package starling_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRepositoryHygiene guards what a new user meets first in a clone: a
// licence, a changelog, and no build outputs committed by accident.
func TestRepositoryHygiene(t *testing.T) {
	lic, err := os.ReadFile("LICENSE")
	if err != nil {
		t.Fatalf("no LICENSE: %v", err)
	}
	if !bytes.Contains(lic, []byte("Apache License")) || !bytes.Contains(lic, []byte("Version 2.0")) {
		t.Error("LICENSE is not the Apache License 2.0 the README names")
	}
	if _, err := os.Stat("CHANGELOG.md"); err != nil {
		t.Errorf("no CHANGELOG.md: %v", err)
	}
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		if os.Getenv("CI") == "true" { // CI runs in a clone, with git
			t.Fatalf("git ls-files: %v", err)
		}
		t.Skipf("cannot list the tracked files (git, or a checkout, missing): %v", err)
	}
	for name := range strings.SplitSeq(strings.TrimRight(string(out), "\x00"), "\x00") {
		f, err := os.Open(name)
		if err != nil {
			continue // deleted in the work tree
		}
		head := make([]byte, 4)
		n, _ := f.Read(head)
		f.Close()
		if n == 4 && string(head) == "\x7fELF" {
			t.Errorf("%s is a compiled binary committed to the repository; build outputs belong in .gitignore", name)
		}
	}
}
