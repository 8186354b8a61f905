// Command starling runs the Starling MQTT broker.
//
//	starling [-config FILE] [-tcp ADDR] [-http ADDR] [-data DIR] [-log-level LEVEL] [-log-format FORMAT]
//	starling -check [-config FILE] [flags]   validate the configuration and exit
//	starling -version | starling version     print the version
//	starling passwd | store | cert dev | help  see starling help
//
// Flags override the config file, which overrides the defaults. SIGHUP
// reloads the TLS certificate and key files, the password file and the ACL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/config"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
// When empty, the module version from the build info is used.
var version string

// subcommands are the first arguments that select something other than
// serving; usage lists them.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"passwd": func(args []string, stdout, stderr io.Writer) int { return passwd(args, os.Stdin, stdout, stderr) },
	"store":  runStoreTo,
	"cert":   runCert,
	"version": func(_ []string, stdout, _ io.Writer) int {
		fmt.Fprintln(stdout, "starling", versionString())
		return 0
	},
}

// flagKeys maps the flags that set a config value to its key path.
var flagKeys = map[string]string{"tcp": "tcp", "http": "http", "data": "data", "log-level": "log_level",
	"log-format": "log_format", "cluster-name": "cluster.name", "cluster-node": "cluster.node",
	"cluster-listen": "cluster.listen", "cluster-peers": "cluster.peers"}

func main() {
	args := os.Args[1:]
	if len(args) > 0 {
		if cmd, ok := subcommands[args[0]]; ok {
			os.Exit(cmd(args[1:], os.Stdout, os.Stderr))
		}
	}
	os.Exit(serve(args, os.Stdout, os.Stderr))
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// serve parses flags, loads the configuration and runs the broker until
// SIGINT or SIGTERM. It returns the process exit code.
func serve(args []string, stdout, stderr io.Writer) int {
	cfg := config.Default()
	// Flags that set a string of cfg, applied only when given (flag.Visit).
	targets := map[string]*string{"tcp": &cfg.TCP, "http": &cfg.HTTP, "data": &cfg.Data,
		"log-level": &cfg.LogLevel, "log-format": &cfg.LogFormat,
		"cluster-name": &cfg.Cluster.Name, "cluster-node": &cfg.Cluster.Node, "cluster-listen": &cfg.Cluster.Listen}
	fs := flag.NewFlagSet("starling", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	configFile := fs.String("config", "", "read the YAML config `file` (see docs/configuration.md)")
	fs.String("tcp", cfg.TCP, "MQTT over TCP `address` (\"\" disables it)")
	fs.String("http", cfg.HTTP, "WebSocket, dashboard and HTTP API `address` (\"\" disables it)")
	fs.String("data", cfg.Data, "data `folder` of the store")
	fs.String("log-level", cfg.LogLevel, "log `level`: debug, info, warn or error")
	fs.String("log-format", cfg.LogFormat, "log `format`: text or json")
	fs.String("cluster-name", "", "join the cluster of this `name` (see docs/cluster.md)")
	fs.String("cluster-node", "", "this node's `name` in the cluster (default: host name and cluster address)")
	fs.String("cluster-listen", "", "`address` other cluster nodes connect to")
	peers := fs.String("cluster-peers", "", "comma-separated `addresses` of the other cluster nodes")
	pprofAddr := fs.String("pprof", "", "serve Go's /debug/pprof/ profiling endpoints on this loopback `address`")
	showVersion := fs.Bool("version", false, "print the version and exit")
	check := fs.Bool("check", false, "check the configuration and the files it names, print \"config ok\" or every error, and exit")
	ports := fs.Bool("ports", false, "with -check: also check that every listener's port is free")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "starling: unexpected argument %q (see starling -help)\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "starling", versionString())
		return 0
	}
	if *ports && !*check {
		fmt.Fprintln(stderr, "starling: -ports goes with -check")
		return 2
	}
	// Every problem is collected and reported at once: type errors in the
	// file, bad values, and with -check the files the config names.
	var errs []*config.Error
	var src *config.Source
	if *configFile != "" {
		var err error
		// cfg stays the same variable, which targets point into.
		cfg, src, err = config.LoadSource(*configFile)
		if src == nil { // unreadable, or not YAML: nothing more to check
			fmt.Fprintln(stderr, err)
			return 1
		}
		errs = append(errs, config.Errors(err)...)
	}
	fromFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { // only the flags given, so they win over the file
		if p, ok := targets[f.Name]; ok {
			*p = f.Value.String()
			fromFlags[flagKeys[f.Name]] = true
		}
		if f.Name == "cluster-peers" {
			fromFlags["cluster.peers"] = true
			cfg.Cluster.Peers = nil
			for p := range strings.SplitSeq(*peers, ",") {
				if p = strings.TrimSpace(p); p != "" {
					cfg.Cluster.Peers = append(cfg.Cluster.Peers, p)
				}
			}
		}
	})
	errs = append(errs, config.Errors(cfg.Validate())...)
	if *check {
		errs = append(errs, checkFiles(cfg)...)
		if *ports {
			errs = append(errs, checkPorts(cfg)...)
		}
	}
	if report(errs, src, fromFlags, stderr) {
		return 1
	}
	if *check {
		fmt.Fprintln(stdout, "config ok")
		return 0
	}
	level := new(slog.LevelVar) // a variable, so a reload can change it later
	level.Set(cfg.SlogLevel())
	hopts := &slog.HandlerOptions{Level: level}
	var handler slog.Handler = slog.NewTextHandler(stderr, hopts)
	if cfg.LogFormat == "json" {
		handler = slog.NewJSONHandler(stderr, hopts)
	}
	logger := slog.New(handler)
	defer tuneRuntime(cfg.Limits, os.Getenv, logger)()
	srv, err := starling.New(cfg, starling.WithLogger(logger), starling.WithLogLevel(level), starling.WithVersion(versionString()))
	if err != nil {
		logger.Error("cannot start", "err", err)
		return 1
	}
	if *pprofAddr != "" {
		ln, err := startPprof(*pprofAddr, logger)
		if err != nil {
			logger.Error("cannot start", "err", err)
			return 1
		}
		defer ln.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go trimWhenQuiet(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	logger.Info("starling started", "version", versionString(), "tcp", cfg.TCP, "http", cfg.HTTP, "mqtts", cfg.MQTTS, "https", cfg.HTTPS, "data", cfg.Data)
	warnOpenDoors(logger, cfg)

	hup := make(chan os.Signal, 1) // SIGHUP: reload the TLS certificate
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case err := <-served: // a listener failed, or Serve ended on its own
			served <- err
			break wait
		case <-ctx.Done():
			stop() // a second signal kills the process at once
			logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
			break wait
		case <-hup:
			if err := srv.ReloadCertificates(); err != nil {
				logger.Error("reload on SIGHUP failed, old certificate kept", "err", err)
			}
			if err := srv.ReloadAuth(); err != nil {
				logger.Error("reload on SIGHUP failed, old password and ACL rules kept", "err", err)
			}
		}
	}
	code := 0
	if err := srv.Close(); err != nil {
		logger.Error("shutdown", "err", err)
		code = 1
	}
	if err := <-served; err != nil {
		logger.Error("serve failed", "err", err)
		code = 1
	}
	logger.Info("stopped")
	return code
}
