package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The example config passes -check (its data folder moved to a temporary
// one: /var/lib/starling is the packaged location).
func TestExampleConfigPassesCheck(t *testing.T) {
	code, out, errOut := run(t, "stamped", "-check", "-config", "../../starling.example.yaml", "-data", t.TempDir())
	if code != 0 || out != "config ok\n" {
		t.Errorf("starling -check on starling.example.yaml: exit %d, stdout %q; stderr:\n%s", code, out, errOut)
	}
}

// unitFile reads a systemd unit into section.key -> values (a key may
// repeat); comments and blank lines are skipped.
func unitFile(t *testing.T, name string) map[string][]string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not key=value: %q", name, line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// The systemd unit runs the broker as its own user with a state folder,
// a read-only system, no new privileges and no capabilities; where
// systemd-analyze is installed it must also verify the unit.
func TestSystemdUnit(t *testing.T) {
	const name = "../../packaging/starling.service"
	u := unitFile(t, name)
	want := map[string]string{
		"Service.User":                    "starling",
		"Service.StateDirectory":          "starling",
		"Service.ProtectSystem":           "strict",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectHome":             "yes",
		"Service.PrivateTmp":              "yes",
		"Service.PrivateDevices":          "yes",
		"Service.RestrictSUIDSGID":        "yes",
		"Service.CapabilityBoundingSet":   "",
		"Service.SystemCallArchitectures": "native",
		"Install.WantedBy":                "multi-user.target",
	}
	for k, v := range want {
		got, ok := u[k]
		if !ok || got[len(got)-1] != v {
			t.Errorf("%s: %s = %q, want %q", name, k, got, v)
		}
	}
	if _, ok := u["Service.AmbientCapabilities"]; ok {
		t.Errorf("%s: AmbientCapabilities set; the default ports need none", name)
	}
	for _, k := range []string{"Service.ExecStart", "Service.ExecStartPre"} {
		v := strings.Join(u[k], " ")
		if !strings.Contains(v, "-config /etc/starling/starling.yaml") || !strings.Contains(v, "-data /var/lib/starling") {
			t.Errorf("%s: %s = %q; want the config in /etc/starling and the data in the StateDirectory", name, k, v)
		}
	}
	if !strings.Contains(strings.Join(u["Service.ExecStartPre"], " "), "-check") {
		t.Errorf("%s: ExecStartPre should run starling -check", name)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: unit checked by keys only")
		return
	}
	bins, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	// verify wants the executable to exist: point the unit at the test build.
	unit, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "starling.service")
	if err := os.WriteFile(local, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/starling", bins["plain"])), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(sa, "verify", local).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, b)
	}
}
