package dataplane_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/models"
)

func TestParseConfigPatchAppliesOnlyTheGivenFields(t *testing.T) {
	base := models.StageConfig{Variant: "a", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}
	f := func(body string, want models.StageConfig) {
		t.Helper()
		p, err := dataplane.ParseConfigPatch([]byte(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got := p.Apply(base); got != want {
			t.Fatalf("%s: got %+v, want %+v", body, got, want)
		}
	}
	f(` {"variant":"b"}
`, models.StageConfig{Variant: "b", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1})
	f(`{"variant":"b"}`, models.StageConfig{Variant: "b", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1})
	f(`{"max_batch":8,"max_wait":"5ms","replicas":3,"cores":2}`, models.StageConfig{Variant: "a", MaxBatch: 8, MaxWait: 5 * time.Millisecond, Replicas: 3, Cores: 2})
}

func TestParseConfigPatchRejectsTyposAndBadValues(t *testing.T) {
	f := func(body, want string) {
		t.Helper()
		_, err := dataplane.ParseConfigPatch([]byte(body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want an error containing %q", body, err, want)
		}
	}
	f(`{"replica":2}`, `unknown field "replica"`)
	f(`{"max_wait":"soon"}`, "max_wait")
	f(`{"max_batch":"4"}`, "max_batch must be an integer")
	f(`[`, "bad admin patch")
	// Strict JSON: exactly one object that asks for a change, each field
	// once and of its type, nothing after it.
	f(``, "empty body")
	f(" \n", "empty body")
	f(`{}`, "changes nothing")
	f(`null`, "got null")
	f(`[{"replicas":2}]`, "got array")
	f(`"replicas"`, "got string")
	f(`2`, "got number")
	f(`{"replicas":2} junk`, "not one JSON object")
	f(`{"replicas":2}{"replicas":3}`, "not one JSON object")
	f(`{"replicas":2,"replicas":300}`, `"replicas" is given twice`)
	f(`{"replicas":2.5}`, "replicas must be an integer, not 2.5")
	f(`{"replicas":1e2}`, "replicas must be an integer")
	f(`{"replicas":99999999999999999999}`, "replicas must be an integer")
	f(`{"cores":true}`, "cores must be an integer, not true")
	f(`{"max_batch":null}`, "max_batch must be an integer, not null")
	f(`{"variant":4}`, "variant must be a variant's name, not 4")
	f(`{"variant":""}`, "variant must be a variant's name")
	f(`{"variant":{"name":"a"}}`, "not an object")
	f(`{"max_wait":5}`, "max_wait must be a duration string")
	f(`{"max_wait":"5"}`, `max_wait "5" is not a duration`)
	f(`{"replicas":[`+strings.Repeat("1,", 10000)+`1]}`, "not an array")
}

// An error quotes no more of the body than a short scalar.
func TestParseConfigPatchErrorsDoNotEchoTheBody(t *testing.T) {
	long := strings.Repeat("x", 10000)
	for _, body := range []string{`{"max_wait":"` + long + `"}`, `{"` + long + `":1}`, `{"replicas":[` + strings.Repeat("1,", 5000) + `1]}`, `{"replicas":1} ` + long} {
		_, err := dataplane.ParseConfigPatch([]byte(body))
		if err == nil || len(err.Error()) > 300 {
			t.Errorf("body of %d bytes: error of %d bytes: %.300v", len(body), len(err.Error()), err)
		}
	}
}

func FuzzParseConfigPatch(f *testing.F) {
	f.Add([]byte(`{"variant":"resnet50","max_batch":4,"max_wait":"5ms","replicas":2,"cores":1}`))
	f.Add([]byte(`{"max_wait":"-1h"}`))
	for _, seed := range []string{`{}`, `null`, ``, `{"replicas":2} x`, `{"replicas":2,"replicas":3}`, `{"cores":1.5}`,
		`{"variant":""}`, `{"max_batch":-1}`, `{"max_wait":5}`, `[]`, `{"variant":"a\u0000"}`, `{"cores":007}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			return
		}
		p, err := dataplane.ParseConfigPatch(b)
		if err != nil {
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes echoes the body: %.400v", len(err.Error()), err)
			}
			return
		}
		// What parses is valid JSON (one object) and asks for a change.
		if !json.Valid(b) || p == (dataplane.ConfigPatch{}) {
			t.Fatalf("%q parsed to %+v", b, p)
		}
		// It applies without panicking; Validate decides on the ranges.
		_ = p.Apply(models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}).Validate()
	})
}

func TestAdminCheckRefusesAnOpenAdminAPIBeyondLoopback(t *testing.T) {
	t.Setenv("IPA_ADMIN_TOKEN", "")
	const token = "0123456789abcdef0123"
	f := func(addr string, a dataplane.AdminConfig, wantErr string, wantWarn ...string) {
		t.Helper()
		warnings, err := a.Check(addr)
		if wantErr == "" && err != nil || wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
			t.Fatalf("%s %+v: error %v, want %q", addr, a, err, wantErr)
		}
		if len(warnings) != len(wantWarn) {
			t.Fatalf("%s %+v: warnings %q, want %d", addr, a, warnings, len(wantWarn))
		}
		for i, w := range wantWarn {
			if !strings.Contains(warnings[i], w) {
				t.Fatalf("%s %+v: warning %q, want %q", addr, a, warnings[i], w)
			}
		}
	}
	// Loopback: no token needed.
	for _, addr := range []string{"127.0.0.1:8080", "127.1.2.3:0", "[::1]:8080", "localhost:8080", "LocalHost:1"} {
		f(addr, dataplane.AdminConfig{}, "")
	}
	// Reachable from elsewhere: refused without a token or --admin.insecure.
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "[::]:8080", "10.0.0.7:8080", "myhost:8080", "localhost.evil.example:80", "garbage"} {
		f(addr, dataplane.AdminConfig{}, "--admin.insecure")
		f(addr, dataplane.AdminConfig{Insecure: true}, "", "takes calls without a token")
		f(addr, dataplane.AdminConfig{TokenFile: []byte(token + "\n")}, "")
	}
	// The token's sources.
	f("0.0.0.0:8080", dataplane.AdminConfig{Token: token}, "", "ps shows")
	t.Setenv("IPA_ADMIN_TOKEN", token)
	f("0.0.0.0:8080", dataplane.AdminConfig{Token: token}, "")
	f("0.0.0.0:8080", dataplane.AdminConfig{Token: token, TokenFile: []byte(token)}, "give one")
	f("127.0.0.1:8080", dataplane.AdminConfig{TokenFile: []byte(" \n")}, "--admin.token-file: the file is empty")
	f("127.0.0.1:8080", dataplane.AdminConfig{TokenFile: []byte("two words")}, "printable ASCII")
	f("127.0.0.1:8080", dataplane.AdminConfig{Token: "tok\r\nX-Evil: 1"}, "printable ASCII", "ps shows")
	f("127.0.0.1:8080", dataplane.AdminConfig{TokenFile: []byte("jeton-\u00e9t\u00e9-0123456789")}, "printable ASCII")
	f("127.0.0.1:8080", dataplane.AdminConfig{TokenFile: []byte("short")}, "", "5 characters")
}

func TestResolveTokenNamesTheFlagItReads(t *testing.T) {
	t.Setenv("IPA_ADMIN_TOKEN", "")
	tok, warnings, err := dataplane.ResolveToken("", []byte("  0123456789abcdef\n"), "--admin-token")
	if err != nil || tok != "0123456789abcdef" || len(warnings) != 0 {
		t.Fatalf("from a file: %q %q %v", tok, warnings, err)
	}
	if _, _, err := dataplane.ResolveToken("x", []byte("y"), "--admin-token"); err == nil || !strings.Contains(err.Error(), "--admin-token-file") {
		t.Fatalf("both sources: %v", err)
	}
	if tok, warnings, err := dataplane.ResolveToken("", nil, "--admin-token"); tok != "" || warnings != nil || err != nil {
		t.Fatalf("no token: %q %q %v", tok, warnings, err)
	}
}

// Admin calls are checked against the token wherever it came from, the
// scheme in any case; a token configuration that does not resolve admits
// no call at all rather than every call.
func TestAdminTokenFromAFileGuardsTheAdminAPI(t *testing.T) {
	repo, dir := dataplanetest.Repo(t)
	st := dataplanetest.SubStage(t, repo, "ocr-cls")
	const token = "tok-0123456789abcdef"
	s := dataplanetest.StartServer(t, dir, st, clsCfg, dataplane.ServerConfig{}, dataplane.AdminConfig{TokenFile: []byte(token + "\n")})
	for auth, want := range map[string]int{"": 401, "Bearer": 401, "Bearer ": 401, "Bearer " + token[:len(token)-1]: 401,
		"Bearer " + token + "x": 401, "Basic " + token: 401, token: 401, "Bearer " + token: 200, "bearer " + token: 200, "BEARER " + token: 200} {
		if r := s.Do(t, "GET", "/admin/stages/ocr-cls", nil, "Authorization", auth); r.Status != want {
			t.Errorf("Authorization %q: status %d, want %d", auth, r.Status, want)
		}
	}
	closed := dataplanetest.StartServer(t, dir, st, clsCfg, dataplane.ServerConfig{}, dataplane.AdminConfig{TokenFile: []byte{}})
	for _, auth := range []string{"", "Bearer ", "Bearer x"} {
		if r := closed.Do(t, "GET", "/admin/stages/ocr-cls", nil, "Authorization", auth); r.Status != 401 {
			t.Errorf("empty token file, Authorization %q: status %d, want 401", auth, r.Status)
		}
	}
}
