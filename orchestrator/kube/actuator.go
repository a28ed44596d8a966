package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/orchestrator"
)

// Actuator is the Kubernetes orchestrator.Actuator. A stage's replicas are
// the pods of its Deployment, changed through the scale subresource; every
// pod runs one replica, and its variant, batch and cores (as threads) are
// set live through the pod's admin API — no rollout, no restart.
//
// The desired plan lives in the actuator and in an annotation on each
// Deployment (AnnotationConfig). A reconcile loop drives the cluster to it:
// it re-scales a Deployment that drifted, configures every pod that
// appears (pods start with --admin.await-config, so they turn ready only on
// the current plan) and retries failures with exponential backoff, so an
// API-server outage delays scaling but never stops the data plane, and the
// controller catches up when the API returns.
type Actuator struct {
	client   kubernetes.Interface
	ns       string
	pipeline string
	steps    []string // step names, pipeline order
	stages   []string // repository stage names (admin paths)
	token    string
	http     *http.Client
	log      *slog.Logger
	deploys  appslisters.DeploymentLister
	watch    *Watcher
	now      func() time.Time
	kick     chan struct{}
	m        *actuatorMetrics

	reconciling sync.Mutex

	mu      sync.Mutex // guards desired, pushed, actions, failing
	desired []*models.StageConfig
	pushed  []map[string]models.StageConfig // per step: endpoint address → last configuration it accepted
	actions []orchestrator.Action
	failing bool
}

// ActuatorOptions configure NewActuator.
type ActuatorOptions struct {
	Namespace string
	Pipeline  string
	Steps     []string // step names in pipeline order
	Stages    []string // the steps' repository stages
	Token     string   // the stages' admin bearer token
	HTTP      *http.Client
	Logger    *slog.Logger
	Now       func() time.Time
}

// NewActuator starts the informers and the reconcile loop (until ctx ends)
// and returns once the caches are filled.
func NewActuator(ctx context.Context, client kubernetes.Interface, opt ActuatorOptions) (*Actuator, error) {
	if len(opt.Steps) != len(opt.Stages) || len(opt.Steps) == 0 {
		return nil, fmt.Errorf("kube actuator: %d steps and %d stages", len(opt.Steps), len(opt.Stages))
	}
	a := &Actuator{client: client, ns: opt.Namespace, pipeline: opt.Pipeline, steps: opt.Steps, stages: opt.Stages,
		token: opt.Token, http: opt.HTTP, log: opt.Logger, now: opt.Now, kick: make(chan struct{}, 1),
		desired: make([]*models.StageConfig, len(opt.Steps)), pushed: make([]map[string]models.StageConfig, len(opt.Steps))}
	for i := range a.pushed {
		a.pushed[i] = map[string]models.StageConfig{}
	}
	if a.http == nil {
		a.http = &http.Client{Timeout: 2 * time.Minute} // a new cores figure loads sessions: seconds
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.m = newActuatorMetrics()
	a.m.set.NewGauge("ipa_controller_kube_reconcile_failing", func() float64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.failing {
			return 1
		}
		return 0
	})
	factory := informers.NewSharedInformerFactoryWithOptions(client, resync, informers.WithNamespace(opt.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = LabelPipeline + "=" + opt.Pipeline + "," + LabelComponent + "=stage"
		}))
	inf := factory.Apps().V1().Deployments()
	a.deploys = inf.Lister()
	inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, _ any) { a.poke() },
		DeleteFunc: func(any) { a.poke() },
	})
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		a.m.close()
		return nil, fmt.Errorf("the Deployments of pipeline %q in namespace %q: the cache did not sync: %w", opt.Pipeline, opt.Namespace, context.Cause(ctx))
	}
	w, err := WatchEndpoints(ctx, client, opt.Namespace, opt.Pipeline, opt.Steps, func(string, []Endpoint) { a.poke() }, a.log)
	if err != nil {
		a.m.close()
		return nil, err
	}
	a.watch = w
	go a.loop(ctx)
	return a, nil
}

// Close unregisters the metrics.
func (a *Actuator) Close() { a.m.close() }

func (a *Actuator) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Current implements orchestrator.Actuator: replicas from the Deployment's
// spec, the rest from the plan this actuator holds, else from the
// Deployment's annotation (left by an earlier controller), else from a
// ready pod. It reads the informer's cache, so it answers during an
// API-server outage.
func (a *Actuator) Current(ctx context.Context) ([]models.StageConfig, error) {
	out := make([]models.StageConfig, len(a.steps))
	for i, step := range a.steps {
		d, err := a.deploys.Deployments(a.ns).Get(StageName(a.pipeline, step))
		if err != nil {
			return nil, fmt.Errorf("step %q: Deployment %s/%s: %w", step, a.ns, StageName(a.pipeline, step), err)
		}
		a.mu.Lock()
		want := a.desired[i]
		a.mu.Unlock()
		var c models.StageConfig
		switch {
		case want != nil:
			c = *want
		case d.Annotations[AnnotationConfig] != "":
			if err := json.Unmarshal([]byte(d.Annotations[AnnotationConfig]), &c); err != nil {
				return nil, fmt.Errorf("deployment %s/%s: annotation %s: %w", a.ns, d.Name, AnnotationConfig, err)
			}
			adopted := c // adopt it: new pods get it
			a.mu.Lock()
			a.desired[i] = &adopted
			a.mu.Unlock()
		default:
			c, err = a.podConfig(ctx, i)
			if err != nil {
				return nil, err
			}
		}
		c.Replicas = 1
		if d.Spec.Replicas != nil {
			c.Replicas = int(*d.Spec.Replicas)
		}
		out[i] = c
	}
	return out, nil
}

// podConfig reads the configuration of a pod of step i, ready ones first
// (new pods wait for the controller's first plan before they turn ready).
func (a *Actuator) podConfig(ctx context.Context, i int) (models.StageConfig, error) {
	eps := a.watch.Endpoints(a.steps[i])
	slices.SortStableFunc(eps, func(x, y Endpoint) int {
		if x.Ready == y.Ready {
			return 0
		}
		if x.Ready {
			return -1
		}
		return 1
	})
	var errs []error
	for _, e := range eps {
		if e.Terminating {
			continue
		}
		c, err := a.getPod(ctx, i, e.Addr)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return models.StageConfig{}, fmt.Errorf("step %q: no plan recorded on its Deployment and no pod answered: %w", a.steps[i], errors.Join(errs...))
}

// Apply implements orchestrator.Actuator: it records cfg as the step's plan
// and runs one reconcile of the step; what fails is retried in the
// background with backoff, and the error is returned so the decision log
// shows it.
func (a *Actuator) Apply(ctx context.Context, i int, cfg models.StageConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	a.mu.Lock()
	a.desired[i] = &cfg
	a.mu.Unlock()
	err := a.reconcile(ctx, i, false)
	if err != nil {
		a.poke()
	}
	return err
}

// TakeActions implements orchestrator.ActionReporter: what the actuator did
// since the last call, oldest first.
func (a *Actuator) TakeActions() []orchestrator.Action {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.actions
	a.actions = nil
	return out
}

// loop reconciles on every change the informers see and, every few seconds,
// also checks each pod's live configuration (a restarted container forgets
// it). While something fails it backs off exponentially (0.2 s → 10 s).
func (a *Actuator) loop(ctx context.Context) {
	const minBackoff, maxBackoff, period = 200 * time.Millisecond, 10 * time.Second, 5 * time.Second
	backoff := minBackoff
	timer := time.NewTimer(period)
	defer timer.Stop()
	for {
		verify := false
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
			verify = true
		}
		var errs []error
		for i := range a.steps {
			if err := a.reconcile(ctx, i, verify); err != nil {
				errs = append(errs, err)
			}
		}
		next := period
		a.mu.Lock()
		a.failing = len(errs) > 0
		a.mu.Unlock()
		if err := errors.Join(errs...); err != nil && ctx.Err() == nil {
			a.log.Warn("reconcile failed; retrying", "in", backoff.String(), "err", err)
			next, backoff = backoff, min(2*backoff, maxBackoff)
		} else {
			backoff = minBackoff
		}
		timer.Reset(next)
	}
}

// reconcile drives step i to its desired configuration: every pod's live
// configuration (asking each pod first when verify is set), then the
// Deployment's annotation and scale.
func (a *Actuator) reconcile(ctx context.Context, i int, verify bool) error {
	a.reconciling.Lock() // Apply and the loop: one at a time
	defer a.reconciling.Unlock()
	a.mu.Lock()
	want := a.desired[i]
	a.mu.Unlock()
	if want == nil {
		return nil // no plan yet: leave the spec's initial configuration
	}
	name := StageName(a.pipeline, a.steps[i])
	var errs []error
	// Pods first: a variant switch does not need the API server.
	podCfg := *want
	podCfg.Replicas = 1
	eps := a.watch.Endpoints(a.steps[i])
	a.forget(i, eps)
	for _, e := range eps {
		if e.Terminating {
			continue
		}
		a.mu.Lock()
		done, ok := a.pushed[i][e.Addr]
		a.mu.Unlock()
		if ok && done == podCfg && verify {
			if live, err := a.getPod(ctx, i, e.Addr); err == nil && !sameConfig(live, podCfg) {
				ok = false
				a.log.Info("pod lost its configuration; configuring it again", "pod", e.Pod, "addr", e.Addr, "live", live.Variant)
			}
		}
		if ok && done == podCfg {
			continue
		}
		start := a.now()
		if err := a.postPod(ctx, i, e.Addr, podCfg); err != nil {
			a.m.action("configure", "error")
			errs = append(errs, fmt.Errorf("configuring pod %s (%s): %w", e.Pod, e.Addr, err))
			continue
		}
		a.mu.Lock()
		a.pushed[i][e.Addr] = podCfg
		a.mu.Unlock()
		a.record("configure", name, fmt.Sprintf("pod %s %s → %s batch %d wait %s, %d cores", e.Pod, e.Addr, podCfg.Variant, podCfg.MaxBatch, podCfg.MaxWait, podCfg.Cores), start)
	}
	d, err := a.deploys.Deployments(a.ns).Get(name)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("deployment %s/%s: %w", a.ns, name, err))...)
	}
	note, _ := json.Marshal(want)
	if d.Annotations[AnnotationConfig] != string(note) {
		start := a.now()
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationConfig: string(note)}}})
		if _, err := a.client.AppsV1().Deployments(a.ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			a.m.action("annotate", "error")
			errs = append(errs, fmt.Errorf("annotating Deployment %s/%s: %w", a.ns, name, err))
		} else {
			a.record("annotate", name, string(note), start)
		}
	}
	if d.Spec.Replicas == nil || int(*d.Spec.Replicas) != want.Replicas {
		if err := a.scale(ctx, name, want.Replicas); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// forget drops what was pushed to endpoints of step i that are gone, so a
// new pod that reuses an address is configured again.
func (a *Actuator) forget(i int, eps []Endpoint) {
	a.mu.Lock()
	defer a.mu.Unlock()
	live := map[string]bool{}
	for _, e := range eps {
		live[e.Addr] = true
	}
	for addr := range a.pushed[i] {
		if !live[addr] {
			delete(a.pushed[i], addr)
		}
	}
}

// sameConfig compares a pod's live configuration with the one pushed
// (durations as the admin API rounds them).
func sameConfig(a, b models.StageConfig) bool {
	return a.Variant == b.Variant && a.MaxBatch == b.MaxBatch && a.Cores == b.Cores && a.Replicas == b.Replicas &&
		(a.MaxWait-b.MaxWait).Abs() < time.Millisecond
}

// scale sets the Deployment's replicas through the scale subresource,
// retrying conflicts (real API servers answer 409 when the Deployment
// changed since it was read).
func (a *Actuator) scale(ctx context.Context, name string, replicas int) error {
	start := a.now()
	conflicts := 0
	from := int32(-1)
	changed := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sc, err := a.client.AppsV1().Deployments(a.ns).GetScale(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		from = sc.Spec.Replicas
		if sc.Spec.Replicas == int32(replicas) {
			return nil
		}
		sc.Spec.Replicas = int32(replicas)
		_, err = a.client.AppsV1().Deployments(a.ns).UpdateScale(ctx, name, sc, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			conflicts++
			a.m.action("scale", "conflict")
		}
		changed = err == nil
		return err
	})
	if err != nil {
		a.m.action("scale", "error")
		return fmt.Errorf("scaling Deployment %s/%s to %d: %w", a.ns, name, replicas, err)
	}
	if changed { // else the informer's cache was behind the API server
		a.record("scale", name, fmt.Sprintf("replicas %d → %d (%d conflicts retried)", from, replicas, conflicts), start)
	}
	return nil
}

func (a *Actuator) record(kind, object, what string, start time.Time) {
	a.m.action(kind, "ok")
	act := orchestrator.Action{Kind: kind, Object: object, What: what, Seconds: a.now().Sub(start).Seconds()}
	a.log.Info("kube action", "kind", kind, "object", object, "what", what, "seconds", act.Seconds)
	a.mu.Lock()
	a.actions = append(a.actions, act)
	a.mu.Unlock()
}

func (a *Actuator) postPod(ctx context.Context, i int, addr string, c models.StageConfig) error {
	return orchestrator.PostStageConfig(ctx, a.http, "http://"+addr, a.stages[i], a.token, c)
}

func (a *Actuator) getPod(ctx context.Context, i int, addr string) (models.StageConfig, error) {
	return orchestrator.GetStageConfig(ctx, a.http, "http://"+addr, a.stages[i], a.token)
}

// actuatorMetrics count the actuator's actions,
// ipa_controller_kube_actions_total{action, result}, and show whether the
// reconcile loop is retrying (ipa_controller_kube_reconcile_failing).
type actuatorMetrics struct{ set *metrics.Set }

func newActuatorMetrics() *actuatorMetrics {
	m := &actuatorMetrics{set: metrics.NewSet()}
	metrics.RegisterSet(m.set)
	return m
}

func (m *actuatorMetrics) action(kind, result string) {
	m.set.GetOrCreateCounter(fmt.Sprintf(`ipa_controller_kube_actions_total{action=%q,result=%q}`, kind, result)).Inc()
}

func (m *actuatorMetrics) close() { metrics.UnregisterSet(m.set, true) }
