package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/starling-mqtt/starling/internal/auth"
)

// runPasswd implements "starling passwd [-d] [-m KiB] [-t N] [-p N] FILE
// USER": it adds USER to the password file FILE or changes its password
// (argon2id), or with -d deletes USER. On a terminal the password is asked
// twice without echo; otherwise one line is read from standard input
// (echo "$PW" | starling passwd FILE USER). FILE is created with mode 0600
// and always rewritten atomically (a temporary file renamed over it),
// keeping its other lines, comments and permissions. It returns the exit
// code: 0 done, 1 failed, 2 bad usage.
func runPasswd(args []string) int {
	return passwd(args, os.Stdin, os.Stdout, os.Stderr)
}

func passwd(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("starling passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: starling passwd [-d] [-scram [-i N]] [-m KiB] [-t N] [-p N] FILE USER")
		fmt.Fprintln(stderr, "Adds USER to the password FILE or changes its password; -d deletes USER.")
		fmt.Fprintln(stderr, "The password is asked on the terminal, or read as one line from standard input.")
		fs.PrintDefaults()
	}
	del := fs.Bool("d", false, "delete USER")
	p := auth.DefaultArgon2
	mem := fs.Uint("m", uint(p.Memory), "argon2id memory in `KiB` (OWASP: 19 MiB)")
	iter := fs.Uint("t", uint(p.Time), "argon2id iterations")
	par := fs.Uint("p", uint(p.Threads), "argon2id parallelism")
	scram := fs.Bool("scram", false, "store a SCRAM-SHA-256 verifier instead of argon2id (allows MQTT 5 enhanced authentication with SCRAM-SHA-256 as well as plain logins)")
	scramIter := fs.Int("i", auth.DefaultSCRAMIterations, "SCRAM-SHA-256 iterations (with -scram)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	file, user := fs.Arg(0), fs.Arg(1)
	if err := auth.ValidUsername(user); err != nil {
		fmt.Fprintln(stderr, "starling passwd:", err)
		return 2
	}
	if *mem > 1<<20 || *iter > 64 || *par < 1 || *par > 64 {
		fmt.Fprintln(stderr, "starling passwd: -m must be at most 1048576, -t at most 64, -p between 1 and 64")
		return 2
	}
	p.Memory, p.Time, p.Threads = uint32(*mem), uint32(*iter), uint8(*par)

	lines, entries, mode, err := readPasswdFile(file)
	if err != nil {
		fmt.Fprintln(stderr, "starling passwd:", err)
		return 1
	}
	at := -1 // index in lines of user's line
	for _, e := range entries {
		if e.User == user {
			at = e.Line - 1
		}
	}
	var verb string
	if *del {
		if at < 0 {
			fmt.Fprintf(stderr, "starling passwd: user %q is not in %s\n", user, file)
			return 1
		}
		lines = append(lines[:at], lines[at+1:]...)
		verb = "deleted user"
	} else {
		pw, err := readPassword(stdin, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "starling passwd:", err)
			return 1
		}
		var h string
		if *scram {
			h, err = auth.HashSCRAM(pw, *scramIter)
		} else {
			h, err = auth.HashPassword(pw, p)
		}
		clear(pw)
		if err != nil {
			fmt.Fprintln(stderr, "starling passwd:", err)
			return 2
		}
		if at >= 0 {
			lines[at] = user + ":" + h
			verb = "changed the password of"
		} else {
			lines = append(lines, user+":"+h)
			verb = "added user"
		}
	}
	if err := writeFileAtomic(file, []byte(strings.Join(lines, "\n")+"\n"), mode); err != nil {
		fmt.Fprintln(stderr, "starling passwd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s %q in %s\n", verb, user, file)
	return 0
}

// readPasswdFile returns the lines of an existing password file (without
// line ends), its entries and its permissions; a missing file is empty with
// mode 0600. A file that does not parse is refused, so a mistake in it is
// fixed by hand rather than carried along.
func readPasswdFile(file string) (lines []string, entries []auth.PasswordEntry, mode fs.FileMode, err error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, 0o600, nil
	}
	if err != nil {
		return nil, nil, 0, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return nil, nil, 0, err
	}
	if entries, err = auth.ParsePasswordFile(bytes.NewReader(data)); err != nil {
		return nil, nil, 0, fmt.Errorf("%s: %v (fix it first; nothing changed)", file, err)
	}
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	text = strings.TrimSuffix(text, "\n")
	if text != "" {
		lines = strings.Split(text, "\n")
	}
	return lines, entries, fi.Mode().Perm(), nil
}

// readPassword asks for the password twice on a terminal (echo off with
// stty), or reads one line from a pipe or file.
func readPassword(stdin *os.File, stderr io.Writer) ([]byte, error) {
	r := bufio.NewReaderSize(stdin, 4096)
	restore, tty := noEcho(stdin)
	if !tty {
		pw, err := readLine(r)
		if err != nil {
			return nil, err
		}
		return pw, nil
	}
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt)
	defer func() {
		signal.Stop(interrupted)
		close(interrupted)
		restore()
	}()
	go func() { // restore the echo if ^C arrives while it is off
		if _, ok := <-interrupted; ok {
			restore()
			os.Exit(130)
		}
	}()
	fmt.Fprint(stderr, "Password: ")
	pw, err := readLine(r)
	fmt.Fprintln(stderr)
	if err != nil {
		return nil, err
	}
	fmt.Fprint(stderr, "Again: ")
	again, err := readLine(r)
	fmt.Fprintln(stderr)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(pw, again) {
		return nil, errors.New("the passwords differ; nothing changed")
	}
	return pw, nil
}

// readLine reads one line without its line end; an empty password is an
// error.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errors.New("password longer than 4095 bytes")
	}
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no password on standard input")
		}
		return nil, err
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(line) == 0 {
		return nil, errors.New("empty password")
	}
	return bytes.Clone(line), nil
}

// noEcho turns terminal echo off when f is a terminal, using stty (so no
// terminal library is needed), and returns how to turn it back on. tty is
// false when f is not a terminal or stty is unavailable.
func noEcho(f *os.File) (restore func(), tty bool) {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil, false
	}
	stty := func(args ...string) ([]byte, error) {
		cmd := exec.Command("stty", args...)
		cmd.Stdin = f
		return cmd.Output()
	}
	saved, err := stty("-g") // fails when f is not a terminal (e.g. /dev/null)
	if err != nil {
		return nil, false
	}
	if _, err := stty("-echo"); err != nil {
		return nil, false
	}
	state := strings.TrimSpace(string(saved))
	return func() { stty(state) }, true
}

// writeFileAtomic replaces file with data: a temporary file in the same
// folder, synced, given mode, renamed over file, and the folder synced, so
// a crash leaves either the old or the new file, never a torn one.
func writeFileAtomic(file string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".tmp-*") // created 0600
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, file); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: not every platform syncs folders
		d.Close()
	}
	return nil
}
