package kube

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// Endpoint is one replica of a stage as its EndpointSlices show it.
type Endpoint struct {
	Addr        string // host:port of the "http" port
	Pod         string // the pod's name (may be empty)
	Ready       bool   // ready and not terminating: the router may send to it
	Terminating bool
}

// Watcher follows the EndpointSlices of a pipeline's stage Services with an
// informer (one list, then a watch: no polling) and tells OnChange the
// endpoints of a step whenever they change. It keeps serving its last view
// while the API server is unreachable.
type Watcher struct {
	steps    map[string]string // Service name → step
	svcOf    map[string]string // step → Service name
	lister   discoverylisters.EndpointSliceLister
	ns       string
	onChange func(step string, eps []Endpoint)
	log      *slog.Logger

	mu   sync.Mutex // guards last
	last map[string][]Endpoint
}

// WatchEndpoints starts a Watcher of the steps of pipeline in namespace and
// returns once its cache is filled (or ctx ends). onChange is called from
// one goroutine at a time, first once per step with the initial view.
func WatchEndpoints(ctx context.Context, client kubernetes.Interface, namespace, pipeline string, steps []string,
	onChange func(step string, eps []Endpoint), log *slog.Logger) (*Watcher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{steps: map[string]string{}, svcOf: map[string]string{}, ns: namespace, onChange: onChange, log: log, last: map[string][]Endpoint{}}
	var services []string
	for _, s := range steps {
		w.steps[StageName(pipeline, s)] = s
		w.svcOf[s] = StageName(pipeline, s)
		services = append(services, StageName(pipeline, s))
	}
	req, err := labels.NewRequirement(discoveryv1.LabelServiceName, selection.In, services)
	if err != nil {
		return nil, fmt.Errorf("selecting the EndpointSlices of %v: %w", services, err)
	}
	sel := labels.NewSelector().Add(*req).String()
	factory := informers.NewSharedInformerFactoryWithOptions(client, resync, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel }))
	inf := factory.Discovery().V1().EndpointSlices()
	w.lister = inf.Lister()
	// Notifications coalesce: the informer marks a step dirty and wakes the
	// loop below without ever blocking (wake holds at most one signal); the
	// loop recomputes every dirty step. Nothing is lost, nothing piles up.
	var (
		dirtyMu sync.Mutex
		dirty   = map[string]bool{}
		wake    = make(chan struct{}, 1)
	)
	notify := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if es, ok := obj.(*discoveryv1.EndpointSlice); ok {
			if step, ok := w.steps[es.Labels[discoveryv1.LabelServiceName]]; ok {
				dirtyMu.Lock()
				dirty[step] = true
				dirtyMu.Unlock()
				select {
				case wake <- struct{}{}:
				default: // a wake-up is pending already
				}
			}
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, n any) { notify(n) },
		DeleteFunc: notify,
	}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return nil, fmt.Errorf("EndpointSlices of %v in namespace %q: the cache did not sync: %w", services, namespace, context.Cause(ctx))
	}
	for _, s := range steps {
		w.recompute(s, true)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
				dirtyMu.Lock()
				steps := slices.Sorted(maps.Keys(dirty))
				clear(dirty)
				dirtyMu.Unlock()
				for _, s := range steps {
					w.recompute(s, false)
				}
			}
		}
	}()
	return w, nil
}

// Endpoints returns the step's current endpoints (ready or not).
func (w *Watcher) Endpoints(step string) []Endpoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.last[step])
}

func (w *Watcher) recompute(step string, force bool) {
	svc := w.svcOf[step]
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc})
	list, err := w.lister.EndpointSlices(w.ns).List(sel)
	if err != nil {
		w.log.Warn("listing cached EndpointSlices", "service", svc, "err", err)
		return
	}
	eps := Endpoints(list)
	w.mu.Lock()
	same := slices.Equal(w.last[step], eps)
	w.last[step] = eps
	w.mu.Unlock()
	if same && !force {
		return
	}
	w.log.Info("endpoints", "step", step, "ready", ReadyAddrs(eps), "all", len(eps))
	w.onChange(step, eps)
}

// Endpoints flattens EndpointSlices into one sorted list of endpoints of the
// port named PortName (or the slice's only port), one per address. An
// endpoint is Ready when its ready condition is not false and it is not
// terminating (the EndpointSlice API's rules for nil conditions).
func Endpoints(list []*discoveryv1.EndpointSlice) []Endpoint {
	seen := map[string]bool{}
	var out []Endpoint
	for _, es := range list {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		port := int32(-1)
		for _, p := range es.Ports {
			if p.Port != nil && ((p.Name != nil && *p.Name == PortName) || len(es.Ports) == 1) {
				port = *p.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, e := range es.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			addr := net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(port)))
			if seen[addr] {
				continue
			}
			seen[addr] = true
			term := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			ready := (e.Conditions.Ready == nil || *e.Conditions.Ready) && !term
			pod := ""
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				pod = e.TargetRef.Name
			}
			out = append(out, Endpoint{Addr: addr, Pod: pod, Ready: ready, Terminating: term})
		}
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// ReadyAddrs returns the addresses of the ready endpoints.
func ReadyAddrs(eps []Endpoint) []string {
	out := []string{}
	for _, e := range eps {
		if e.Ready {
			out = append(out, e.Addr)
		}
	}
	return out
}

// resync is how often the informers re-deliver their cache (a safety net;
// changes arrive through the watch).
const resync = 30 * time.Second
