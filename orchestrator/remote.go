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

type adminConfig struct {
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
		var body struct {
			Config adminConfig `json:"config"`
		}
		if err := a.do(ctx, http.MethodGet, i, nil, &body); err != nil {
			return nil, err
		}
		w, err := time.ParseDuration(body.Config.MaxWait)
		if err != nil {
			return nil, fmt.Errorf("stage %q reports max_wait %q: %w", a.Stages[i], body.Config.MaxWait, err)
		}
		c := body.Config
		out[i] = models.StageConfig{Variant: c.Variant, MaxBatch: c.MaxBatch, MaxWait: w, Replicas: c.Replicas, Cores: c.Cores}
	}
	return out, nil
}

// Apply implements Actuator.
func (a AdminActuator) Apply(ctx context.Context, stage int, c models.StageConfig) error {
	b, _ := json.Marshal(adminConfig{c.Variant, c.MaxBatch, c.MaxWait.String(), c.Replicas, c.Cores})
	return a.do(ctx, http.MethodPost, stage, b, nil)
}

func (a AdminActuator) do(ctx context.Context, method string, i int, body []byte, out any) error {
	url := a.URLs[i] + "/admin/stages/" + a.Stages[i]
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	c := a.Client
	if c == nil {
		c = &http.Client{Timeout: 2 * time.Minute} // loading sessions for new replicas takes seconds
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d: %s", method, url, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func getJSON(ctx context.Context, c *http.Client, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}
