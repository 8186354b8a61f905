package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const certUsage = `usage: starling cert dev [-dir DIR] [-host NAMES] [-force]

Makes a development certificate authority and a server certificate it signs,
for trying mqtts and wss on this machine; not for production. The server
certificate names localhost, 127.0.0.1, ::1 and this machine's host name,
plus -host. Clients trust DIR/ca.pem (mosquitto_sub --cafile, a browser's
certificate settings); the broker uses DIR/server.pem and DIR/server.key.
`

// runCert runs `starling cert ...` with the args after "cert".
func runCert(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(stderr, certUsage)
		return 2
	case args[0] == "dev":
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
		fmt.Fprint(stdout, certUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "starling cert: unknown command %q\n%s", args[0], certUsage)
		return 2
	}
	fs := flag.NewFlagSet("starling cert dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, certUsage); fs.PrintDefaults() }
	dir := fs.String("dir", "certs", "`folder` to write ca.pem, ca.key, server.pem and server.key to")
	hosts := fs.String("host", "", "more comma-separated host `names` or addresses for the server certificate")
	force := fs.Bool("force", false, "replace files that already exist")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "starling cert dev: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		names = append(names, h)
	}
	for h := range strings.SplitSeq(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			names = append(names, h)
		}
	}
	files, err := devCerts(*dir, names, *force, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "starling cert dev:", err)
		return 1
	}
	fmt.Fprintf(stdout, `wrote %s (the development CA: clients trust it), %s (keep it private),
      %s and %s (the server's, for %s)

Use them in the config file:

tls:
  cert_file: %s
  key_file: %s
mqtts: "127.0.0.1:8883"
https: "127.0.0.1:8443"

and try: mosquitto_sub --cafile %s -h localhost -p 8883 -t '#' -v
`, files.ca, files.caKey, files.cert, files.key, strings.Join(names, ", "), files.cert, files.key, files.ca)
	return 0
}

type certFiles struct{ ca, caKey, cert, key string }

// devCerts writes a fresh CA and a server certificate for names (DNS
// names or IP addresses) signed by it into dir. Existing files are kept,
// and an error returned, unless force.
func devCerts(dir string, names []string, force bool, now time.Time) (certFiles, error) {
	f := certFiles{filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"),
		filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")}
	if !force {
		for _, name := range []string{f.ca, f.caKey, f.cert, f.key} {
			if _, err := os.Stat(name); err == nil {
				return f, fmt.Errorf("%s exists (-force replaces it)", name)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return f, err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return f, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	host, _ := os.Hostname()
	ca := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"Starling development CA"}, CommonName: "Starling development CA " + host},
		NotBefore:             now.Add(-time.Hour), // clocks that lag a little
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return f, fmt.Errorf("create CA certificate: %w", err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return f, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	srv := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"Starling development"}, CommonName: names[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(0, 0, 825), // the longest some platforms accept for a server certificate
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, n)
		}
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, ca, &key.PublicKey, caKey)
	if err != nil {
		return f, fmt.Errorf("create server certificate: %w", err)
	}
	for _, w := range []struct {
		name string
		der  []byte
		typ  string
		mode os.FileMode
	}{
		{f.ca, caDER, "CERTIFICATE", 0o644},
		{f.cert, srvDER, "CERTIFICATE", 0o644},
		{f.caKey, pkcs8(caKey), "PRIVATE KEY", 0o600},
		{f.key, pkcs8(key), "PRIVATE KEY", 0o600},
	} {
		data := pem.EncodeToMemory(&pem.Block{Type: w.typ, Bytes: w.der})
		os.Remove(w.name) // so the mode below applies to a replaced file too
		if err := os.WriteFile(w.name, data, w.mode); err != nil {
			return f, err
		}
	}
	return f, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func pkcs8(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return der
}
