package orchestrator

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/models"
)

// stageAdmin is a fake stage admin API that records what it was sent.
type stageAdmin struct {
	auth, body []string
	answer     string
	status     int
}

func (s *stageAdmin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.auth, s.body = append(s.auth, r.Header.Get("Authorization")), append(s.body, string(b))
	w.WriteHeader(s.status)
	io.WriteString(w, s.answer)
}

func TestAdminCallsSendTheTokenAndReadTheConfiguration(t *testing.T) {
	fake := &stageAdmin{status: 200, answer: `{"stage":"classify","config":{"variant":"resnet50","max_batch":4,"max_wait":"5ms","replicas":2,"cores":1}}`}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	a := AdminActuator{URLs: []string{srv.URL}, Stages: []string{"classify"}, Token: "tok-0123456789abcdef"}
	cur, err := a.Current(context.Background())
	want := models.StageConfig{Variant: "resnet50", MaxBatch: 4, MaxWait: 5 * time.Millisecond, Replicas: 2, Cores: 1}
	if err != nil || len(cur) != 1 || cur[0] != want {
		t.Fatalf("Current: %+v %v, want %+v", cur, err, want)
	}
	if err := a.Apply(context.Background(), 0, want); err != nil {
		t.Fatal(err)
	}
	if fake.auth[0] != "Bearer tok-0123456789abcdef" || fake.auth[1] != fake.auth[0] {
		t.Fatalf("Authorization sent: %q", fake.auth)
	}
	if fake.body[1] != `{"variant":"resnet50","max_batch":4,"max_wait":"5ms","replicas":2,"cores":1}` {
		t.Fatalf("patch sent: %s", fake.body[1])
	}
	a.Token = ""
	if _, err := a.Current(context.Background()); err != nil || fake.auth[2] != "" {
		t.Fatalf("without a token: %v, Authorization %q", err, fake.auth[2])
	}
}

// What is not a stage's answer is an error, not a zero configuration.
func TestAdminCallsRejectAnswersThatAreNotAStages(t *testing.T) {
	for _, answer := range []string{`{}`, `null`, `{"config":null}`, `{"config":{}}`, `{"config":{"variant":"a","max_wait":"soon"}}`, `<html>`} {
		srv := httptest.NewServer(&stageAdmin{status: 200, answer: answer})
		_, err := GetStageConfig(context.Background(), srv.Client(), srv.URL, "classify", "")
		srv.Close()
		if err == nil {
			t.Errorf("answer %s: no error", answer)
		}
	}
	long := strings.Repeat("e", 100000)
	srv := httptest.NewServer(&stageAdmin{status: 400, answer: `{"error":"` + long + `"}`})
	defer srv.Close()
	err := PostStageConfig(context.Background(), srv.Client(), srv.URL, "classify", "", models.StageConfig{Variant: "a"})
	if err == nil || !strings.Contains(err.Error(), "status 400") || len(err.Error()) > 1000 {
		t.Fatalf("a long error answer: %.200v (%d bytes)", err, len(err.Error()))
	}
}

// A redirect is not followed: the token goes to the stage only.
func TestAdminCallsFollowNoRedirect(t *testing.T) {
	elsewhere := &stageAdmin{status: 200, answer: `{"config":{"variant":"a","max_batch":1,"max_wait":"0s","replicas":1,"cores":1}}`}
	other := httptest.NewServer(elsewhere)
	defer other.Close()
	srv := httptest.NewServer(http.RedirectHandler(other.URL+"/admin/stages/classify", http.StatusTemporaryRedirect))
	defer srv.Close()
	_, err := GetStageConfig(context.Background(), srv.Client(), srv.URL, "classify", "tok-0123456789abcdef")
	if err == nil || !strings.Contains(err.Error(), "status 307") {
		t.Fatalf("redirected: %v, want the 307 as an error", err)
	}
	if len(elsewhere.auth) != 0 {
		t.Fatalf("the redirect was followed: %q", elsewhere.auth)
	}
}
