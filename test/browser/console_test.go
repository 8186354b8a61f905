package browser

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Loading the page and logging in gives no console error: no Content
// Security Policy violation (MQTT.js's timer worker), no failed request
// (the favicon), no exception.
func TestDashboardNoConsoleErrors(t *testing.T) {
	t.Parallel()
	ctx := browser(t, 1200, 900)
	srv := startServer(t)

	var mu sync.Mutex
	var errs []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				errs = append(errs, fmt.Sprintf("log %s/%s: %s %s", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
			}
		case *runtime.EventExceptionThrown:
			errs = append(errs, "exception: "+ev.ExceptionDetails.Text)
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				errs = append(errs, fmt.Sprintf("console.%s: %v", ev.Type, args))
			}
		case *network.EventResponseReceived:
			if ev.Response.Status >= 400 {
				errs = append(errs, fmt.Sprintf("HTTP %d: %s", ev.Response.Status, ev.Response.URL))
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	err := chromedp.Do(ctx,
		signIn(srv.url),
		waitText(`#m-connected`, is("1")),
		// A few overviews: the page has run its timers and drawn.
		waitJS(`((document.querySelector('#line-in').getAttribute('d') || '').match(/L/g) || []).length >= 2`,
			`document.querySelector('#line-in').getAttribute('d')`),
	)
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	// The browser asks for /favicon.ico unless the page names an icon:
	// either way, no 404.
	resp, err := http.Get(srv.url + "favicon.ico")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /favicon.ico: %d", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range errs {
		t.Errorf("console: %s", e)
	}
}
