package admin

import (
	"net/http"
	"strconv"
	"strings"
)

// maxClientsPage bounds one page of GET /api/v1/clients.
const maxClientsPage = 1000

// ClientsPage is the answer of GET /api/v1/clients.
type ClientsPage struct {
	Clients []Client `json:"clients"`
	Total   int      `json:"total"`  // sessions that match, over all pages
	Offset  int      `json:"offset"` // of the first one here
	Limit   int      `json:"limit"`  // asked for; 0: all
}

// listClients: GET /api/v1/clients[?q=&connected=&offset=&limit=], the
// sessions whose client ID, user name or remote address contains q (any
// case), sorted by client ID, a page at a time. The search runs in the
// broker over every session, not over a page the dashboard already has.
func (a *Admin) listClients(w http.ResponseWriter, r *http.Request) {
	qv := r.URL.Query()
	var only *bool
	if v := qv.Get("connected"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "connected: want true or false")
			return
		}
		only = &b
	}
	num := func(name string, lo, hi int) (int, bool) {
		v := qv.Get(name)
		if v == "" {
			return 0, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			writeError(w, http.StatusBadRequest, name+": want "+strconv.Itoa(lo)+" to "+strconv.Itoa(hi))
			return 0, false
		}
		return n, true
	}
	offset, ok := num("offset", 0, 1<<30)
	if !ok {
		return
	}
	limit, ok := num("limit", 1, maxClientsPage)
	if !ok {
		return
	}
	var match func(id, user, remote string) bool
	if q := strings.ToLower(strings.TrimSpace(qv.Get("q"))); q != "" {
		match = func(id, user, remote string) bool {
			return containsFold(id, q) || containsFold(user, q) || containsFold(remote, q)
		}
	}
	ss, total := a.b.ClientsPage(match, only, offset, limit)
	out := ClientsPage{Clients: make([]Client, 0, len(ss)), Total: total, Offset: offset, Limit: limit}
	for _, s := range ss {
		out.Clients = append(out.Clients, toClient(s))
	}
	writeJSON(w, http.StatusOK, out)
}

// containsFold reports whether s contains lower (already lower case),
// in any case; without allocating for ASCII s.
func containsFold(s, lower string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return strings.Contains(strings.ToLower(s), lower)
		}
	}
	n := len(lower)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for j < n {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

// deleteSession: DELETE /api/v1/clients/{id} ends the session: a
// connected client is disconnected, subscriptions, queued messages and
// the will go (the will is not published).
func (a *Admin) deleteSession(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !a.b.DeleteSession(id) {
		writeError(w, http.StatusNotFound, "no such client")
		return
	}
	a.log.Info("session deleted by admin", "client_id", id, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"client_id": id, "deleted": true})
}

func parseInt64(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }
