package main

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/config"
)

// report prints errs, if any, one per line, and reports whether there
// were any. Those without a file get the config file's name and the line
// of their key (src may be nil: no file), unless their value came from a
// flag; the config file's own come first, in line order.
func report(errs []*config.Error, src *config.Source, fromFlags map[string]bool, stderr io.Writer) bool {
	src.Locate(errs, fromFlags)
	if src != nil {
		slices.SortStableFunc(errs, func(a, b *config.Error) int {
			ina, inb := a.File == src.File, b.File == src.File
			switch {
			case ina && inb:
				return cmp.Compare(a.Line, b.Line)
			case ina:
				return -1
			case inb:
				return 1
			}
			return 0
		})
	}
	for _, e := range errs {
		fmt.Fprintln(stderr, e)
	}
	return len(errs) > 0
}

// maxAuthFile is the largest password or ACL file the broker reads.
const maxAuthFile = 64 << 20

// checkFiles reads the files cfg names, as serve would, and returns
// every problem: the TLS certificate and key (they load and belong
// together), the client CA file, the password and ACL files (every bad
// line, not only the first), and whether the data folder can be written.
// Errors name the config key, and the file and line for a bad line.
func checkFiles(cfg config.Config) []*config.Error {
	var errs []*config.Error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &config.Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if t := cfg.TLS; t.CertFile != "" && t.KeyFile != "" {
		certOK, keyOK := true, true
		if err := readable(t.CertFile); err != nil {
			bad("tls.cert_file", "%v", err)
			certOK = false
		}
		if err := readable(t.KeyFile); err != nil {
			bad("tls.key_file", "%v", err)
			keyOK = false
		}
		if certOK && keyOK {
			if c, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
				bad("tls.cert_file", "certificate %s with key %s: %v", t.CertFile, t.KeyFile, err)
			} else if _, err := x509.ParseCertificate(c.Certificate[0]); err != nil {
				bad("tls.cert_file", "parse certificate %s: %v", t.CertFile, err)
			}
		}
	}
	if f := cfg.TLS.ClientCAFile; f != "" {
		if data, err := os.ReadFile(f); err != nil {
			bad("tls.client_ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(data) {
			bad("tls.client_ca_file", "%s: no PEM certificate found", f)
		}
	}
	for i, br := range cfg.Bridges {
		k := fmt.Sprintf("bridges[%d]", i)
		if f := br.CAFile; f != "" {
			if data, err := os.ReadFile(f); err != nil {
				bad(k+".ca_file", "%v", err)
			} else if !x509.NewCertPool().AppendCertsFromPEM(data) {
				bad(k+".ca_file", "%s: no PEM certificate found", f)
			}
		}
		if br.CertFile != "" && br.KeyFile != "" {
			if _, err := tls.LoadX509KeyPair(br.CertFile, br.KeyFile); err != nil {
				bad(k+".cert_file", "certificate %s with key %s: %v", br.CertFile, br.KeyFile, err)
			}
		}
	}
	if f := cfg.Auth.PasswordFile; f != "" {
		errs = append(errs, checkLines("auth.password_file", f, passwordLines)...)
	}
	if f := cfg.Auth.ACLFile; f != "" {
		errs = append(errs, checkLines("auth.acl_file", f, aclLine)...)
	}
	if cfg.Store == "pebble" {
		if err := writableDir(cfg.Data); err != nil {
			bad("data", "%v", err)
		}
	}
	return errs
}

// readable reports why a file cannot be read, if it cannot.
func readable(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	return f.Close()
}

// checkLines reads the file named by key and parses it line by line with
// parse, which returns the problem of one line (seen carries state across
// lines). Every bad line is reported with the file and line.
func checkLines(key, name string, parse func(n int, line string, seen map[string]int) error) []*config.Error {
	fi, err := os.Stat(name)
	if err != nil {
		return []*config.Error{{Key: key, Msg: err.Error()}}
	}
	if fi.Size() > maxAuthFile {
		return []*config.Error{{Key: key, Msg: fmt.Sprintf("%s is larger than %d bytes", name, maxAuthFile)}}
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return []*config.Error{{Key: key, Msg: err.Error()}}
	}
	var errs []*config.Error
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		if err := parse(n, text, seen); err != nil {
			errs = append(errs, &config.Error{File: name, Line: n, Key: key, Msg: err.Error()})
		}
	}
	if err := sc.Err(); err != nil { // a line over 1 MiB, which the broker refuses too
		errs = append(errs, &config.Error{File: name, Line: n + 1, Key: key, Msg: err.Error()})
	}
	return errs
}

// passwordLines parses one password file line with the broker's own
// parser; seen holds the line of each user of the lines before.
func passwordLines(n int, line string, seen map[string]int) error {
	entries, err := auth.ParsePasswordFile(strings.NewReader(line))
	if err != nil {
		return errors.New(stripLine(err.Error()))
	}
	for _, e := range entries {
		if first, dup := seen[e.User]; dup {
			return fmt.Errorf("user %q listed twice (first on line %d)", e.User, first)
		}
		seen[e.User] = n
	}
	return nil
}

// aclLine parses one ACL rule with the broker's own parser.
func aclLine(_ int, line string, _ map[string]int) error {
	if _, err := auth.ParseACL(strings.NewReader(line)); err != nil {
		return errors.New(stripLine(err.Error()))
	}
	return nil
}

// stripLine drops the "line 1: " the parsers put first, since each was
// given one line.
func stripLine(msg string) string {
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, after, ok := strings.Cut(rest, ": "); ok {
			if _, err := strconv.Atoi(num); err == nil {
				return after
			}
		}
	}
	return msg
}

// writableDir reports why the store could not create or write the folder
// dir: a file in its place, or a folder (dir, or the nearest one above it
// that exists, where dir would be created) that does not take a new file.
func writableDir(dir string) error {
	d := dir
	for {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a folder", d)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return err
		}
		parent := filepath.Dir(d)
		if parent == d {
			return err
		}
		d = parent
	}
	f, err := os.CreateTemp(d, ".starling-check-*")
	if err != nil {
		if d != dir {
			return fmt.Errorf("%s does not exist and cannot be created: %w", dir, err)
		}
		return fmt.Errorf("%s is not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// checkPorts tries to listen on every address cfg serves on (port 0
// excepted) and reports each one already taken.
func checkPorts(cfg config.Config) []*config.Error {
	var errs []*config.Error
	addrs := []struct{ key, addr string }{{"tcp", cfg.TCP}, {"http", cfg.HTTP}, {"mqtts", cfg.MQTTS},
		{"https", cfg.HTTPS}, {"listen_any", cfg.ListenAny}, {"cluster.listen", cfg.Cluster.Listen}}
	for _, a := range addrs {
		if a.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "0" {
			continue
		}
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			errs = append(errs, &config.Error{Key: a.key, Msg: fmt.Sprintf("cannot listen on %s: %v", a.addr, err)})
			continue
		}
		ln.Close()
	}
	return errs
}
