package pebble

import (
	"io"
	"log/slog"
	"testing"

	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/storetest"
)

// quiet is the logger of the tests: pebble's info lines are noise here.
func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustOpen(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet()
	}
	s, err := open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestContract(t *testing.T) {
	for _, policy := range []string{store.SyncAlways, store.SyncInterval, store.SyncNone} {
		t.Run(policy, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store {
				return mustOpen(t, t.TempDir(), Options{Sync: policy})
			})
			storetest.RunDurable(t, func(t *testing.T, dir string) store.Store {
				return mustOpen(t, dir, Options{Sync: policy})
			})
		})
	}
}
