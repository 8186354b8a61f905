package main

import (
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// scripts/release.sh builds a static, stripped binary stamped with the
// version asked for, and its checksum. Only linux/amd64 here, to stay fast;
// the script builds arm64 and armv7 the same way.
func TestReleaseBuild(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "../../scripts/release.sh")
	cmd.Env = append(os.Environ(), "VERSION=v1.2.3-releasetest", "TARGETS=linux/amd64", "OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, b)
	}
	bin := filepath.Join(out, "starling-v1.2.3-releasetest-linux-amd64")
	if b, err := exec.Command(bin, "-version").Output(); err != nil || string(b) != "starling v1.2.3-releasetest\n" {
		t.Errorf("-version = %q, %v; want \"starling v1.2.3-releasetest\\n\"", b, err)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary asks for a dynamic loader; want a static build (CGO_ENABLED=0)")
		}
	}
	if f.Section(".symtab") != nil {
		t.Error("the binary has a symbol table; want it stripped (-s -w)")
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("linux/amd64 release binary: %.1f MB", float64(fi.Size())/1e6)

	// Test-only modules stay out of the broker. (The paho clients are not
	// ones: bridges use them for the remote broker.)
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range info.Deps {
		for _, testOnly := range []string{"github.com/chromedp", "go.uber.org/goleak", "golang.org/x/image"} {
			if strings.HasPrefix(d.Path, testOnly) {
				t.Errorf("the broker binary contains the test-only module %s", d.Path)
			}
		}
	}

	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if want := hex.EncodeToString(sum[:]) + "  " + filepath.Base(bin) + "\n"; string(sums) != want {
		t.Errorf("SHA256SUMS = %q, want %q", sums, want)
	}
}
