package dataplane

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/valyala/fastjson"
)

// Check validates the admin settings of a server that will listen on
// listenAddr, before anything is loaded. It refuses to expose the admin API
// beyond the host without a token — anyone who reaches the port could
// reconfigure the stages — unless Insecure accepts that. The warnings are
// for the log: a token given as a flag (ps shows it), a short token, an
// open admin API.
func (a AdminConfig) Check(listenAddr string) (warnings []string, err error) {
	token, warnings, err := ResolveToken(a.Token, a.TokenFile, "--admin.token")
	if err != nil {
		return warnings, err
	}
	switch {
	case token != "" || IsLoopback(listenAddr):
	case a.Insecure:
		warnings = append(warnings, fmt.Sprintf("the admin API on %s takes calls without a token (--admin.insecure): anyone who reaches the port can reconfigure the stages", listenAddr))
	default:
		return warnings, fmt.Errorf("refusing to serve the admin API on %s without a token: anyone who reaches that address could reconfigure the stages. "+
			"Give a token (--admin.token-file FILE or the IPA_ADMIN_TOKEN environment variable), listen on loopback (--http.listen-addr 127.0.0.1:PORT), "+
			"or accept the risk with --admin.insecure", listenAddr)
	}
	return warnings, nil
}

// ResolveToken returns the admin API's bearer token from its two sources,
// the flag's value (or IPA_ADMIN_TOKEN, which kong reads into it) and the
// contents of flag-file (nil: not given), for the server's and the
// controller's flags alike; "" means no token. It is an error to give both,
// an empty file, or a token with a character outside printable ASCII or a
// space (it must fit an Authorization header as it is). A value that is
// not IPA_ADMIN_TOKEN's came from the command line, where ps shows it:
// that, and a token shorter than 16 characters, are warnings.
func ResolveToken(value string, file []byte, flag string) (token string, warnings []string, err error) {
	switch {
	case file != nil && value != "":
		return "", nil, fmt.Errorf("both %s-file and %s (or IPA_ADMIN_TOKEN) give the admin token; give one", flag, flag)
	case file != nil:
		if token = strings.TrimSpace(string(file)); token == "" {
			return "", nil, fmt.Errorf("%s-file: the file is empty", flag)
		}
	case value != "" && value != os.Getenv("IPA_ADMIN_TOKEN"):
		warnings = append(warnings, fmt.Sprintf("the admin token was given with %s, which ps shows to every user of this host; use %s-file or IPA_ADMIN_TOKEN", flag, flag))
		fallthrough
	default:
		token = value
	}
	for _, c := range []byte(token) {
		if c <= ' ' || c > '~' {
			return "", warnings, fmt.Errorf("the admin token (%s) holds a space, control or non-ASCII character; use printable ASCII, e.g. `openssl rand -hex 32`", flag)
		}
	}
	if token != "" && len(token) < 16 {
		warnings = append(warnings, fmt.Sprintf("the admin token has %d characters; use at least 16 random ones, e.g. `openssl rand -hex 32`", len(token)))
	}
	return token, warnings, nil
}

// IsLoopback reports whether a listen address (HOST:PORT) is reachable from
// this host only: localhost or a loopback IP. Any other host name counts as
// reachable from outside, and so does an empty host (every interface).
func IsLoopback(listenAddr string) bool {
	host, _, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// adminAuth checks admin calls' Authorization header in constant time: it
// compares SHA-256 digests, so neither the token's bytes nor its length
// show in the time a wrong guess takes.
type adminAuth struct {
	required bool // a token is configured
	valid    bool // and it resolved (an invalid one admits no call)
	sum      [sha256.Size]byte
}

func newAdminAuth(a AdminConfig) adminAuth {
	if a.Token == "" && a.TokenFile == nil {
		return adminAuth{}
	}
	token, _, err := ResolveToken(a.Token, a.TokenFile, "--admin.token")
	return adminAuth{required: true, valid: err == nil && token != "", sum: sha256.Sum256([]byte(token))}
}

// allows reports whether the Authorization header h admits an admin call.
func (a adminAuth) allows(h []byte) bool {
	if !a.required {
		return true
	}
	const scheme = "Bearer " // the scheme is case-insensitive (RFC 9110 section 11.1)
	if !a.valid || len(h) <= len(scheme) || !bytes.EqualFold(h[:len(scheme)], []byte(scheme)) {
		return false
	}
	sum := sha256.Sum256(h[len(scheme):])
	return subtle.ConstantTimeCompare(sum[:], a.sum[:]) == 1
}

// patchFields lists what an admin patch may set, for error messages.
const patchFields = "variant, max_batch, max_wait, replicas, cores"

// ParseConfigPatch decodes an admin patch such as
// {"variant":"resnet50","max_batch":4,"max_wait":"5ms","replicas":2,"cores":1}.
// It is strict, so that a mistake is reported rather than half applied:
// the body is exactly one JSON object, with at least one field (an empty
// patch changes nothing and is an error), no unknown or repeated field,
// each of its type (variant a name, max_wait a duration string such as
// "2ms", the others integers), and nothing after it. Ranges are the
// stage's to check (models.StageConfig.Validate).
func ParseConfigPatch(b []byte) (ConfigPatch, error) {
	var p ConfigPatch
	if len(bytes.TrimSpace(b)) == 0 {
		return p, fmt.Errorf("bad admin patch: empty body; send a JSON object with some of %s, e.g. {\"replicas\":2}", patchFields)
	}
	// encoding/json checks the syntax (fastjson alone accepts some invalid
	// JSON, such as 007) and says where it breaks without quoting it;
	// fastjson then shows each field as given, repeated ones too.
	if !json.Valid(b) {
		var v any
		return p, fmt.Errorf("bad admin patch: not one JSON object (%v)", json.Unmarshal(b, &v))
	}
	var parser fastjson.Parser
	v, err := parser.ParseBytes(b)
	if err != nil {
		return p, fmt.Errorf("bad admin patch: %v", err)
	}
	obj, err := v.Object()
	if err != nil {
		return p, fmt.Errorf("bad admin patch: want a JSON object with some of %s, got %s", patchFields, v.Type())
	}
	if obj.Len() == 0 {
		return p, fmt.Errorf("bad admin patch: {} changes nothing; give some of %s", patchFields)
	}
	seen := map[string]bool{}
	obj.Visit(func(k []byte, v *fastjson.Value) {
		if err != nil {
			return
		}
		name := string(k)
		if seen[name] {
			err = fmt.Errorf("bad admin patch: field %q is given twice", truncate(name))
			return
		}
		seen[name] = true
		err = p.set(name, v)
	})
	return p, err
}

// set decodes field name of an admin patch from v.
func (p *ConfigPatch) set(name string, v *fastjson.Value) error {
	integer := func(dst **int) error {
		n, err := v.Int()
		if err != nil {
			return fmt.Errorf("bad admin patch: %s must be an integer, not %s", name, describe(v))
		}
		*dst = &n
		return nil
	}
	switch name {
	case "variant":
		s, err := v.StringBytes()
		if err != nil || len(s) == 0 {
			return fmt.Errorf("bad admin patch: variant must be a variant's name, not %s", describe(v))
		}
		str := string(s)
		p.Variant = &str
	case "max_batch":
		return integer(&p.MaxBatch)
	case "replicas":
		return integer(&p.Replicas)
	case "cores":
		return integer(&p.Cores)
	case "max_wait":
		s, err := v.StringBytes()
		if err != nil {
			return fmt.Errorf("bad admin patch: max_wait must be a duration string such as \"2ms\", not %s", describe(v))
		}
		d, err := time.ParseDuration(string(s))
		if err != nil {
			return fmt.Errorf("bad admin patch: max_wait %q is not a duration such as \"2ms\"", truncate(string(s)))
		}
		p.MaxWait = &d
	default:
		return fmt.Errorf("bad admin patch: unknown field %q (fields: %s)", truncate(name), patchFields)
	}
	return nil
}

// describe names a JSON value for an error: a short scalar as written,
// anything else by its type (an error must not echo a large body).
func describe(v *fastjson.Value) string {
	switch v.Type() {
	case fastjson.TypeObject, fastjson.TypeArray:
		return "an " + v.Type().String()
	}
	return truncate(v.String())
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
