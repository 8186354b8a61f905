package auth

import (
	"log/slog"

	"github.com/starling-mqtt/starling/internal/limit"
)

// newAudit returns the rate limit of the audit trail (failed logins and
// denials, at level WARN): at most rate lines per second. The broker's
// lines about refused clients share it (AuditLines).
func newAudit(log *slog.Logger, rate int) *limit.Lines { return limit.NewLines(log, rate) }

// AuditLines returns the rate limit of the audit trail, for the broker to
// write its own lines about refused clients within the same budget
// (auth.audit_lines_per_second).
func (a *Auth) AuditLines() *limit.Lines { return a.audit }
