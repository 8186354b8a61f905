// Package dashboard holds the dashboard's static files, embedded in the
// binary: index.html, app.js, style.css and the vendored MQTT.js browser
// bundle (vendor/mqtt.min.js, MIT, see vendor/LICENSE-mqtt.md). The page
// logs in over MQTT over WebSocket at /mqtt on its own origin and
// subscribes to $SYS/starling/dashboard/# (see internal/admin).
package dashboard

import "embed"

// Files are the dashboard's files, served at / by internal/admin.
//
//go:embed index.html *.js style.css favicon.svg vendor/mqtt.min.js
var Files embed.FS
