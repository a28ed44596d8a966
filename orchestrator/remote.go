package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ipa-serving/ipa/models"
)

// RouterObserver reads the arrival rate from a router's /router/rate.
type RouterObserver struct {
	URL      string // e.g. http://127.0.0.1:8080
	Pipeline string
	Client   *http.Client
}

// Rates implements Observer.
func (o RouterObserver) Rates(ctx context.Context, seconds int) ([]float64, error) {
	var body struct {
		PerSecond []float64 `json:"per_second"`
	}
	url := fmt.Sprintf("%s/router/rate?pipeline=%s&window=%d", o.URL, o.Pipeline, seconds)
	if err := getJSON(ctx, o.client(), url, &body); err != nil {
		return nil, err
	}
	return body.PerSecond, nil
}

// Fanout implements FanoutObserver from the router's totals per step
// (/router/rate: requests_total and rows_total).
func (o RouterObserver) Fanout(ctx context.Context) (reached, rows []int64, err error) {
	var body struct {
		Steps []struct {
			Reached *int64 `json:"requests_total"`
			Rows    int64  `json:"rows_total"`
		} `json:"steps"`
	}
	url := fmt.Sprintf("%s/router/rate?pipeline=%s&window=1", o.URL, o.Pipeline)
	if err := getJSON(ctx, o.client(), url, &body); err != nil {
		return nil, nil, err
	}
	for _, s := range body.Steps {
		if s.Reached == nil {
			return nil, nil, fmt.Errorf("%s: no requests_total per step (a router older than fan-out counting)", url)
		}
		reached, rows = append(reached, *s.Reached), append(rows, s.Rows)
	}
	return reached, rows, nil
}

func (o RouterObserver) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	return &http.Client{Timeout: 5 * time.Second}
}

// AdminActuator changes stages through their admin API
// (/admin/stages/{stage}), one base URL and repository stage per step.
type AdminActuator struct {
	URLs   []string // base URLs, in pipeline order
	Stages []string // repository stage names, in pipeline order
	Token  string
	Client *http.Client
}

// AdminConfig is a StageConfig as the stages' admin API (/admin/stages/{stage}) reads and writes it.
type AdminConfig struct {
	Variant  string `json:"variant"`
	MaxBatch int    `json:"max_batch"`
	MaxWait  string `json:"max_wait"`
	Replicas int    `json:"replicas"`
	Cores    int    `json:"cores"`
}

// Current implements Actuator.
func (a AdminActuator) Current(ctx context.Context) ([]models.StageConfig, error) {
	out := make([]models.StageConfig, len(a.URLs))
	for i := range a.URLs {
		c, err := GetStageConfig(ctx, a.client(), a.URLs[i], a.Stages[i], a.Token)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// Apply implements Actuator.
func (a AdminActuator) Apply(ctx context.Context, stage int, c models.StageConfig) error {
	return PostStageConfig(ctx, a.client(), a.URLs[stage], a.Stages[stage], a.Token, c)
}

func (a AdminActuator) client() *http.Client {
	if a.Client != nil {
		return a.Client
	}
	return &http.Client{Timeout: 2 * time.Minute} // loading sessions for new replicas takes seconds
}

// GetStageConfig reads the configuration of stage from the stage server at
// base (e.g. http://10.0.0.7:8080) through its admin API. An answer without
// a configuration is an error, not a zero one.
func GetStageConfig(ctx context.Context, c *http.Client, base, stage, token string) (models.StageConfig, error) {
	var body struct {
		Config *AdminConfig `json:"config"`
	}
	if err := adminCall(ctx, c, http.MethodGet, base, stage, token, nil, &body); err != nil {
		return models.StageConfig{}, err
	}
	b := body.Config
	if b == nil || b.Variant == "" {
		return models.StageConfig{}, fmt.Errorf("stage %q at %s answers without a configuration: is it an ipa stage?", stage, base)
	}
	w, err := time.ParseDuration(b.MaxWait)
	if err != nil {
		return models.StageConfig{}, fmt.Errorf("stage %q at %s reports max_wait %q: %w", stage, base, b.MaxWait, err)
	}
	return models.StageConfig{Variant: b.Variant, MaxBatch: b.MaxBatch, MaxWait: w, Replicas: b.Replicas, Cores: b.Cores}, nil
}

// PostStageConfig sets the configuration of stage on the stage server at
// base; it returns once the stage runs it.
func PostStageConfig(ctx context.Context, c *http.Client, base, stage, token string, cfg models.StageConfig) error {
	b, _ := json.Marshal(AdminConfig{cfg.Variant, cfg.MaxBatch, cfg.MaxWait.String(), cfg.Replicas, cfg.Cores})
	return adminCall(ctx, c, http.MethodPost, base, stage, token, b, nil)
}

// adminCall calls the admin API of stage at base. It follows no redirect:
// the answer is the stage's own, and the token goes nowhere else (and a
// POST does not turn into a GET).
func adminCall(ctx context.Context, c *http.Client, method, base, stage, token string, body []byte, out any) error {
	strict := *c
	strict.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return doJSON(ctx, &strict, method, base+"/admin/stages/"+stage, token, body, out)
}

func getJSON(ctx context.Context, c *http.Client, url string, out any) error {
	return doJSON(ctx, c, http.MethodGet, url, "", nil, out)
}

// doJSON sends body (may be nil) with the bearer token (if any) and decodes
// a 200 answer into out (if not nil); any other status is an error that
// quotes the answer's first 512 bytes.
func doJSON(ctx context.Context, c *http.Client, method, url, token string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		if b = bytes.TrimSpace(b); len(b) > 512 {
			b = append(b[:512:512], "…"...)
		}
		return fmt.Errorf("%s %s: status %d: %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}
