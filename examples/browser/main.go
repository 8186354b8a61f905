// Command browser serves the example browser application: a live sensor
// page that connects to Starling over WebSocket with a token from this
// server's /token endpoint. See README.md.
package main

import (
	"bytes"
	"flag"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/starling-mqtt/starling/examples/browser/app"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address of the page and token endpoint")
	secretFile := flag.String("secret", "jwt.secret", "the broker's auth.jwt.secret_file")
	broker := flag.String("broker", "ws://127.0.0.1:8080/mqtt", "the broker's WebSocket URL, as the browser reaches it")
	ttl := flag.Duration("ttl", 5*time.Minute, "token lifetime")
	aud := flag.String("audience", "", "aud claim (the broker's auth.jwt.audience)")
	flag.Parse()
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		log.Fatal(err)
	}
	h := app.Handler(app.Config{Secret: bytes.TrimRight(secret, "\r\n"), Broker: *broker, TTL: *ttl, Audience: *aud})
	log.Printf("example app on http://%s (broker %s)", *listen, *broker)
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
