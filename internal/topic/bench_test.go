package topic

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
)

// benchFilters returns n distinct filters over "site/S/dev/D/temp" names
// (S < 200, D < 1000): 70% literal, 10% "site/S/dev/+/temp",
// 10% "site/S/dev/D/#" or "site/S/#", 10% starting with '+'.
func benchFilters(n int) []string {
	r := rand.New(rand.NewPCG(1, 1))
	seen := make(map[string]bool, n)
	out := make([]string, 0, n)
	for len(out) < n {
		s, d := r.IntN(200), r.IntN(1000)
		var f string
		switch k := r.IntN(10); {
		case k < 7:
			f = fmt.Sprintf("site/%d/dev/%d/temp", s, d)
		case k == 7:
			f = fmt.Sprintf("site/%d/dev/+/temp", s)
		case k == 8 && d%2 == 0:
			f = fmt.Sprintf("site/%d/dev/%d/#", s, d)
		case k == 8:
			f = fmt.Sprintf("site/%d/#", s)
		default:
			f = fmt.Sprintf("+/%d/dev/%d/+", s, d)
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

func benchNames(n int) []string {
	r := rand.New(rand.NewPCG(2, 2))
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("site/%d/dev/%d/temp", r.IntN(200), r.IntN(1000))
	}
	return out
}

// benchIndex holds subs subscriptions spread over filters distinct filters,
// one in ten of them shared.
func benchIndex(subs, filters int) *Index[int] {
	ix := NewIndex[int]()
	fs := benchFilters(filters)
	for i := range subs {
		g := ""
		if i%10 == 9 {
			g = "g"
		}
		ix.Add("client-"+strconv.Itoa(i), g, fs[i%len(fs)], i)
	}
	return ix
}

var benchSizes = []struct{ subs, filters int }{{10_000, 10_000}, {100_000, 10_000}, {1_000_000, 100_000}}

func BenchmarkIndexMatch(b *testing.B) {
	names := benchNames(4096)
	for _, sz := range benchSizes {
		ix := benchIndex(sz.subs, sz.filters)
		b.Run(fmt.Sprintf("subs=%d/filters=%d", sz.subs, sz.filters), func(b *testing.B) {
			dst := make([]Entry[int], 0, 64)
			total := 0
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				dst = ix.Match(names[i%len(names)], dst[:0])
				total += len(dst)
				i++
			}
			b.ReportMetric(float64(total)/float64(i), "entries/op")
		})
		b.Run(fmt.Sprintf("subs=%d/filters=%d/parallel", sz.subs, sz.filters), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				dst := make([]Entry[int], 0, 64)
				i := rand.IntN(len(names))
				for pb.Next() {
					dst = ix.Match(names[i%len(names)], dst[:0])
					i++
				}
			})
		})
	}
}

func BenchmarkIndexAdd(b *testing.B) {
	const per = 100_000 // subscriptions per index before starting a new one
	fs := benchFilters(10_000)
	clients := make([]string, per)
	for i := range clients {
		clients[i] = "client-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	ix, i := NewIndex[int](), 0
	for b.Loop() {
		if i == per {
			b.StopTimer()
			ix, i = NewIndex[int](), 0
			b.StartTimer()
		}
		ix.Add(clients[i], "", fs[i%len(fs)], i)
		i++
	}
}

func BenchmarkIndexRemoveClient(b *testing.B) {
	fs := benchFilters(10_000)
	b.ReportAllocs()
	var ix *Index[int]
	i := 0
	for b.Loop() {
		if i%10_000 == 0 {
			b.StopTimer()
			ix = NewIndex[int]()
			for j := range 10_000 {
				ix.Add("client-"+strconv.Itoa(j), "", fs[j], j)
				ix.Add("client-"+strconv.Itoa(j), "", "site/#", j)
			}
			b.StartTimer()
		}
		ix.RemoveClient("client-" + strconv.Itoa(i%10_000))
		i++
	}
}

func BenchmarkMatch(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Match("sport/+/player1/#", "sport/tennis/player1/score/wimbledon")
	}
}
