package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/topic"
)

// ACL is a compiled, immutable list of rules; safe for concurrent use.
//
// Each line of an ACL file is a rule, a comment (first non-space character
// '#') or blank:
//
//	allow|deny  ACTIONS  PRINCIPAL  TOPIC-PATTERN
//
// ACTIONS is publish, subscribe, read or all, or several joined by commas
// ("publish,read"). PRINCIPAL is "user NAME" (an authenticated user),
// "client ID", "anonymous" or "any"; NAME and ID may be double-quoted to
// hold spaces. TOPIC-PATTERN is the rest of the line: a topic filter whose
// levels may contain %u (the user name) and %c (the client ID).
//
// The first rule whose action, principal and pattern match decides; when
// none does, the request is denied (an ACL file with no rules denies
// everything).
type ACL struct {
	rules    []*rule            // all, in file order
	general  []*rule            // any and anonymous rules, in order
	byUser   map[string][]*rule // user rules by name, in order
	byClient map[string][]*rule // client rules by ID, in order
}

type principal uint8

const (
	pAny principal = iota
	pAnonymous
	pUser
	pClient
)

// Action bits; bit i is broker.Action i.
const (
	bitPublish   = 1 << broker.ActPublish
	bitSubscribe = 1 << broker.ActSubscribe
	bitRead      = 1 << broker.ActRead
	bitAll       = bitPublish | bitSubscribe | bitRead
)

type rule struct {
	order int
	line  int
	allow bool
	acts  uint8
	who   principal
	name  string // user name or client ID
	pat   pattern
}

type levelKind uint8

const (
	kLit  levelKind = iota // a literal level
	kPlus                  // +
	kHash                  // # (always last)
	kVar                   // a level with %u or %c
)

type level struct {
	kind  levelKind
	lit   string // kLit
	parts []part // kVar
	needU bool   // kVar: uses %u
	needC bool   // kVar: uses %c
}

type part struct {
	lit string
	v   byte // 0: lit; 'u': user name; 'c': client ID
}

type pattern struct {
	raw    string
	levels []level // at least one
}

// vars are a client's substitution values; a value that is empty or holds
// '+', '#' or '/' is not usable ("ok" false).
type vars struct {
	u, c     string
	uok, cok bool
}

func usable(s string) bool {
	return s != "" && strings.IndexByte(s, '+') < 0 && strings.IndexByte(s, '#') < 0 && strings.IndexByte(s, '/') < 0
}

// maxACLLine bounds one line: a pattern of 65535 bytes and some words.
const maxACLLine = 70000

// ParseACL reads ACL rules. A bad line is an error naming the line.
func ParseACL(r io.Reader) (*ACL, error) {
	a := &ACL{byUser: make(map[string][]*rule), byClient: make(map[string][]*rule)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxACLLine)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		ru, err := parseRule(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		ru.line, ru.order = n, len(a.rules)
		a.rules = append(a.rules, ru)
		switch ru.who {
		case pUser:
			a.byUser[ru.name] = append(a.byUser[ru.name], ru)
		case pClient:
			a.byClient[ru.name] = append(a.byClient[ru.name], ru)
		default:
			a.general = append(a.general, ru)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", n+1, maxACLLine)
		}
		return nil, err
	}
	return a, nil
}

// Len returns the number of rules.
func (a *ACL) Len() int { return len(a.rules) }

// token splits the first word (or double-quoted string) off s.
func token(s string) (tok, rest string, quoted bool, err error) {
	s = strings.TrimLeftFunc(s, unicode.IsSpace)
	if s == "" {
		return "", "", false, nil
	}
	if s[0] == '"' {
		end := strings.IndexByte(s[1:], '"')
		if end < 0 {
			return "", "", false, errors.New("unterminated quote")
		}
		return s[1 : 1+end], s[2+end:], true, nil
	}
	end := strings.IndexFunc(s, unicode.IsSpace)
	if end < 0 {
		return s, "", false, nil
	}
	return s[:end], s[end:], false, nil
}

func parseRule(line string) (*rule, error) {
	ru := &rule{}
	verb, rest, _, err := token(line)
	if err != nil {
		return nil, err
	}
	switch verb {
	case "allow":
		ru.allow = true
	case "deny":
	default:
		return nil, fmt.Errorf("want allow or deny, got %q", verb)
	}
	acts, rest, _, err := token(rest)
	if err != nil {
		return nil, err
	}
	if acts == "" {
		return nil, errors.New("missing action (publish, subscribe, read or all)")
	}
	for a := range strings.SplitSeq(acts, ",") {
		switch a {
		case "publish":
			ru.acts |= bitPublish
		case "subscribe":
			ru.acts |= bitSubscribe
		case "read":
			ru.acts |= bitRead
		case "all":
			ru.acts |= bitAll
		default:
			return nil, fmt.Errorf("unknown action %q (want publish, subscribe, read or all)", a)
		}
	}
	who, rest, _, err := token(rest)
	if err != nil {
		return nil, err
	}
	switch who {
	case "any":
		ru.who = pAny
	case "anonymous":
		ru.who = pAnonymous
	case "user", "client":
		name, r2, quoted, err := token(rest)
		if err != nil {
			return nil, err
		}
		if name == "" && !quoted {
			return nil, fmt.Errorf("missing name after %q", who)
		}
		rest = r2
		if who == "user" {
			if err := ValidUsername(name); err != nil {
				return nil, err
			}
			ru.who = pUser
		} else {
			if name == "" || !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) {
				return nil, fmt.Errorf("bad client ID %q", name)
			}
			ru.who = pClient
		}
		ru.name = name
	case "":
		return nil, errors.New("missing principal (user NAME, client ID, anonymous or any)")
	default:
		return nil, fmt.Errorf("unknown principal %q (want user NAME, client ID, anonymous or any)", who)
	}
	pat := strings.TrimSpace(rest)
	if pat == "" {
		return nil, errors.New("missing topic pattern")
	}
	if ru.pat, err = compilePattern(pat); err != nil {
		return nil, err
	}
	return ru, nil
}

// compilePattern checks a topic pattern like a topic filter ('#' alone and
// last, '+' alone in its level) and splits it into levels, finding %u and
// %c.
func compilePattern(s string) (pattern, error) {
	switch {
	case len(s) > topic.MaxLen:
		return pattern{}, errors.New("topic pattern longer than 65535 bytes")
	case !utf8.ValidString(s):
		return pattern{}, errors.New("topic pattern is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return pattern{}, errors.New("topic pattern contains U+0000")
	case strings.HasPrefix(s, "$share/"):
		return pattern{}, errors.New("topic pattern starts with $share/: write the filter without it (the share prefix is ignored when matching)")
	}
	p := pattern{raw: s}
	if s == emptyParent {
		s = emptyParentEquiv
	}
	n := strings.Count(s, "/") + 1
	p.levels = make([]level, 0, n)
	i := 0
	for lv := range strings.SplitSeq(s, "/") {
		i++
		switch {
		case lv == "#":
			if i != n {
				return pattern{}, fmt.Errorf("topic pattern %q: '#' must be the last level", s)
			}
			p.levels = append(p.levels, level{kind: kHash})
		case lv == "+":
			p.levels = append(p.levels, level{kind: kPlus})
		case strings.ContainsAny(lv, "+#"):
			return pattern{}, fmt.Errorf("topic pattern %q: '+' and '#' must be alone in their level", s)
		case strings.Contains(lv, "%u") || strings.Contains(lv, "%c"):
			p.levels = append(p.levels, varLevel(lv))
		default:
			p.levels = append(p.levels, level{kind: kLit, lit: lv})
		}
	}
	return p, nil
}

func varLevel(s string) level {
	l := level{kind: kVar}
	lit := 0
	for i := 0; i+1 < len(s); i++ {
		if s[i] != '%' || (s[i+1] != 'u' && s[i+1] != 'c') {
			continue
		}
		if i > lit {
			l.parts = append(l.parts, part{lit: s[lit:i]})
		}
		l.parts = append(l.parts, part{v: s[i+1]})
		if s[i+1] == 'u' {
			l.needU = true
		} else {
			l.needC = true
		}
		i++
		lit = i + 1
	}
	if lit < len(s) {
		l.parts = append(l.parts, part{lit: s[lit:]})
	}
	return l
}

// varOK reports whether l's substitutions are usable for v.
func (l *level) varOK(v *vars) bool {
	return (!l.needU || v.uok) && (!l.needC || v.cok)
}

// matchVar reports whether the topic level seg equals l with v substituted.
// When a substitution is unusable, the level matches nothing in an allow
// rule and anything in a deny rule (fail closed both ways).
func (l *level) matchVar(seg string, v *vars, deny bool) bool {
	if !l.varOK(v) {
		return deny
	}
	for _, p := range l.parts {
		s := p.lit
		switch p.v {
		case 'u':
			s = v.u
		case 'c':
			s = v.c
		}
		if !strings.HasPrefix(seg, s) {
			return false
		}
		seg = seg[len(s):]
	}
	return seg == ""
}

// levelEnd returns the index of the '/' ending the level starting at i, or
// len(s).
func levelEnd(s string, i int) int {
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return i + j
	}
	return len(s)
}

// wildFirst reports whether the pattern's first level is '+' or '#': such a
// pattern matches no topic starting with '$' [MQTT-4.7.2-1].
func (p *pattern) wildFirst() bool {
	k := p.levels[0].kind
	return k == kPlus || k == kHash
}

// matchName reports whether topic name matches p.
func (p *pattern) matchName(name string, v *vars, deny bool) bool {
	if name != "" && name[0] == '$' && p.wildFirst() {
		return false
	}
	ni := 0
	for i := range p.levels {
		l := &p.levels[i]
		if l.kind == kHash {
			return true // this level and below, or the parent: "a/#" matches "a"
		}
		if ni > len(name) {
			return false
		}
		ne := levelEnd(name, ni)
		seg := name[ni:ne]
		switch l.kind {
		case kLit:
			if seg != l.lit {
				return false
			}
		case kVar:
			if !l.matchVar(seg, v, deny) {
				return false
			}
		}
		ni = ne + 1
	}
	return ni == len(name)+1
}

// emptyParent is the one filter whose parent-level match is the empty
// string, which is not a topic name: over valid names "/#" is "/+/#".
const emptyParent, emptyParentEquiv = "/#", "/+/#"

// containsFilter reports whether every topic name filter f matches is
// matched by p.
func (p *pattern) containsFilter(f string, v *vars, deny bool) bool {
	if f == emptyParent {
		f = emptyParentEquiv
	}
	if f != "" && f[0] == '$' && p.wildFirst() {
		return false // f matches $-topics only, p none
	}
	fi := 0
	for i := range p.levels {
		l := &p.levels[i]
		if l.kind == kHash {
			return true
		}
		if fi > len(f) {
			return false // f matches a name with fewer levels than p needs
		}
		fe := levelEnd(f, fi)
		seg := f[fi:fe]
		switch {
		case seg == "#":
			return false // f goes to any depth, p does not
		case seg == "+":
			if l.kind == kLit || (l.kind == kVar && !(deny && !l.varOK(v))) {
				return false
			}
		case l.kind == kLit:
			if seg != l.lit {
				return false
			}
		case l.kind == kVar:
			if !l.matchVar(seg, v, deny) {
				return false
			}
		}
		fi = fe + 1
	}
	return fi == len(f)+1
}

// overlapsFilter reports whether some topic name is matched by both p and
// filter f.
func (p *pattern) overlapsFilter(f string, v *vars, deny bool) bool {
	if f == "" {
		return false
	}
	if f == emptyParent {
		f = emptyParentEquiv
	}
	fWild := f[0] == '+' || f[0] == '#'
	if f[0] == '$' && p.wildFirst() {
		return false
	}
	if fWild && p.levels[0].kind == kLit && strings.HasPrefix(p.levels[0].lit, "$") {
		return false
	}
	fi := 0
	for i := range p.levels {
		l := &p.levels[i]
		if l.kind == kHash {
			return true
		}
		if fi > len(f) {
			return false
		}
		fe := levelEnd(f, fi)
		seg := f[fi:fe]
		switch {
		case seg == "#":
			return true
		case seg == "+":
			if l.kind == kVar && !l.varOK(v) && !deny {
				return false
			}
		case l.kind == kLit:
			if seg != l.lit {
				return false
			}
		case l.kind == kVar:
			if !l.matchVar(seg, v, deny) {
				return false
			}
		}
		fi = fe + 1
	}
	if fi == len(f)+1 {
		return true
	}
	return f[fi:] == "#" // p matched "a", f is "a/#", which matches "a" too
}

// applies reports whether r's principal is c.
func (r *rule) applies(c *broker.ClientInfo) bool {
	switch r.who {
	case pAny:
		return true
	case pAnonymous:
		return c.Anonymous
	case pUser:
		return !c.Anonymous && c.Username == r.name
	default:
		return c.ClientID == r.name
	}
}

// match reports whether r decides for act on t (a topic name, or for
// subscribe a filter without $share prefix).
func (r *rule) match(act broker.Action, t string, v *vars) bool {
	deny := !r.allow
	if act != broker.ActSubscribe {
		return r.pat.matchName(t, v, deny)
	}
	if deny {
		return r.pat.overlapsFilter(t, v, true)
	}
	return r.pat.containsFilter(t, v, false)
}

// Decide reports whether the client may do act on topic (a topic name; for
// ActSubscribe a filter, whose "$share/group/" prefix is ignored), and the
// line of the deciding rule (0 for the default deny). It does not allocate.
//
// For a subscription, a deny rule decides if it matches any topic the filter
// could match, and an allow rule only if it matches every one of them: a
// filter is allowed when one allow rule covers it and no deny rule before
// that one touches it.
func (a *ACL) Decide(c *broker.ClientInfo, act broker.Action, t string) (bool, int) {
	if act > broker.ActRead {
		return false, 0
	}
	if act == broker.ActSubscribe {
		if _, inner, ok := topic.ParseShared(t); ok {
			if inner == "" {
				return false, 0
			}
			t = inner
		}
	}
	bit := uint8(1) << act
	var v vars
	v.c, v.cok = c.ClientID, usable(c.ClientID)
	var byUser []*rule
	if !c.Anonymous {
		v.u, v.uok = c.Username, usable(c.Username)
		byUser = a.byUser[c.Username]
	}
	byClient := a.byClient[c.ClientID]
	g, u, k := a.general, byUser, byClient
	for len(g)+len(u)+len(k) > 0 {
		// Take the earliest of the three heads (file order).
		var r *rule
		switch {
		case len(g) > 0 && (len(u) == 0 || g[0].order < u[0].order) && (len(k) == 0 || g[0].order < k[0].order):
			r, g = g[0], g[1:]
		case len(u) > 0 && (len(k) == 0 || u[0].order < k[0].order):
			r, u = u[0], u[1:]
		default:
			r, k = k[0], k[1:]
		}
		if r.acts&bit == 0 || !r.applies(c) {
			continue
		}
		if r.match(act, t, &v) {
			return r.allow, r.line
		}
	}
	return false, 0
}
