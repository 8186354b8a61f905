package auth

import (
	"context"
	"time"
)

// CheckAdmin checks HTTP Basic credentials for the management API: the user
// must be in the password file with that password and listed in
// auth.superusers. Verifications share the CONNECT semaphore, so the API
// cannot be used to exhaust the CPU either.
func (a *Auth) CheckAdmin(user, pass string) bool {
	st := a.state.Load()
	if st.users == nil || !a.superusers[user] {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ok, _ := a.acquire(ctx); !ok {
		return false
	}
	defer func() { <-a.sem }()
	h, known := st.users[user]
	if !known {
		st.dummy.verify([]byte(pass))
		return false
	}
	return h.verify([]byte(pass))
}
